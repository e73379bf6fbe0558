"""What a load test measured: the raw record that the report is built from."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from ._ledger import Ledger
from ._options import LoadTestOptions
from ._stats import Histogram

__all__ = ["RunRecord", "Sample", "SampleCallback"]


@dataclass(slots=True)
class Sample:
    """One second of the run (one timeline row)."""

    t: float  # seconds since the start, at the end of the window
    phase: str
    connections: int  # open at the end of the window
    server_subscribers: int | None  # the last /stats answer
    delivered: int  # events received in the window, replays included
    events_per_s: float
    latency_p50: float | None  # None: no live event in the window
    latency_p99: float | None
    latency_max: float | None
    errors: int  # in the window
    drops: int  # in the window


@dataclass(slots=True)
class RunRecord:
    """Everything measured; :mod:`._report` turns it into the report."""

    options: LoadTestOptions
    started_at: float  # wall clock (time.time()) at the start
    ledgers: list[Ledger]
    latency: Histogram
    connect_time: Histogram
    publish_latency: Histogram
    errors: Counter[str]
    error_examples: dict[str, str]
    drops: Counter[str]
    samples: list[Sample]
    published: int = 0  # seqs handed out
    published_ok: int = 0
    failed_seqs: set[int] = field(default_factory=set)
    connects: int = 0
    reconnects: int = 0
    resets: int = 0  # "reset" events: a resume id the server no longer had
    foreign: int = 0  # events whose data is not the load tester's JSON
    peak_connections: int = 0
    ramp_seconds: float = 0.0
    steady_seconds: float = 0.0
    drain_seconds: float = 0.0
    is_drained: bool = False
    baseline_subscribers: int = 0
    subscribers_at_close: int | None = None
    subscribers_after: int | None = None  # the last /stats answer after the close
    clean_seconds: float | None = None  # None: not clean within clean_timeout
    stats_failures: int = 0
    max_rss_kib: int = 0


SampleCallback = Callable[[Sample, RunRecord], None]
"""Called with each one-second sample as it is taken, and the record so far."""
