"""The live progress line: redrawn in place once a second while the run goes on."""

from __future__ import annotations

from typing import TextIO

from ._record import RunRecord, Sample
from ._report import format_duration

__all__ = ["Progress"]


class Progress:
    """A :data:`~trio_sse.loadtest.SampleCallback` that redraws one line on a terminal.

    Call :meth:`finish` at the end, to move past the line.
    """

    def __init__(self, out: TextIO, *, connections: int) -> None:
        self._out = out
        self._connections = connections
        self._has_written = False

    def __call__(self, sample: Sample, record: RunRecord) -> None:
        self._out.write("\r\x1b[K" + format_progress(sample, record, self._connections))
        self._out.flush()
        self._has_written = True

    def finish(self) -> None:
        """End the progress line."""
        if self._has_written:
            self._out.write("\n")
            self._out.flush()


def format_progress(sample: Sample, record: RunRecord, connections: int) -> str:
    """One progress line: time, phase, connections, events/s, latency, errors, drops."""
    server = "?" if sample.server_subscribers is None else f"{sample.server_subscribers:,}"
    return (
        f"{sample.t:5.0f} s {sample.phase.value:<6} "
        f"conns {sample.connections:,}/{connections:,} (server {server})  "
        f"{sample.events_per_s:,.0f} ev/s  "
        f"p50 {format_duration(sample.latency_p50)} p99 {format_duration(sample.latency_p99)}  "
        f"errors {sum(record.errors.values()):,}  drops {sum(record.drops.values()):,}"
    )
