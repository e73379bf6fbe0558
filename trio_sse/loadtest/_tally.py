"""The tally: each event, error and drop counted, for the run's record and for this second.

Every event a subscriber receives passes through :meth:`Tally.on_event`: it is
checked to be one of the load tester's (or, with ``--no-publish``, to carry a
numeric id), entered in the subscriber's ledger, and timed. The same counts go into
the :class:`Window` that the one-second sample takes and resets.

A publish that failed in the load tester's eyes (no answer in time, a broken
connection) may still have been made by the server. Once any subscriber receives its
event, it was made: from then on it is judged like every other event (see
:class:`Unmade`). Only failed publishes that nobody received are excused.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Container
from dataclasses import dataclass, field

from ..protocol import MessageEvent
from ._board import SeqBoard
from ._connection import ErrorKind
from ._ids import parse_seq, parse_timestamp
from ._ledger import Ledger
from ._options import LoadTestOptions
from ._record import RunRecord
from ._stats import Histogram

__all__ = ["Tally", "Unmade", "Window"]


class Unmade(Container[int]):
    """Seqs excused from the loss count: failed publishes that no subscriber received.

    A view, so a failed publish's event that arrives late (the server made it after
    the load tester gave up) counts from then on, in the drain's check as in the report.
    """

    __slots__ = ("_failed", "_made")

    def __init__(self, failed: Container[int], made: Container[int]) -> None:
        self._failed = failed
        self._made = made

    def __contains__(self, seq: object) -> bool:
        return seq in self._failed and seq not in self._made


@dataclass(slots=True)
class Window:
    """What happened since the last one-second sample."""

    latency: Histogram = field(default_factory=Histogram)
    delivered: int = 0
    errors: int = 0
    drops: int = 0

    def take(self) -> Window:
        """This window's counts; this one starts again from zero."""
        taken = Window(self.latency, self.delivered, self.errors, self.drops)
        self.latency = Histogram()
        self.delivered = self.errors = self.drops = 0
        return taken

    def add(self, other: Window) -> None:
        """Count ``other``'s too (a worker's second, in the parent)."""
        self.latency.merge(other.latency)
        self.delivered += other.delivered
        self.errors += other.errors
        self.drops += other.drops


class Tally:
    """Counts into ``record`` and :attr:`window`; judges events against ``board``.

    Attributes:
        window: This second's counts.
        received_by: Subscribers that received each seq (not counting duplicates): a
            failed publish's seq found here was made by the server all the same.
        failed: Seqs never published, as far as anyone here saw (an :class:`Unmade`
            view once the failed publishes are known): never missing.
    """

    __slots__ = ("_board", "_options", "failed", "received_by", "record", "window")

    def __init__(self, options: LoadTestOptions, record: RunRecord, board: SeqBoard) -> None:
        self._options = options
        self._board = board
        self.record = record
        self.window = Window()
        self.received_by: Counter[int] = Counter()
        self.failed: Container[int] = frozenset()

    def excuse_failed(self, failed: Container[int]) -> None:
        """The failed publishes are ``failed``: excused unless someone received them."""
        self.failed = Unmade(failed, self.received_by)

    def last_seq(self) -> int:
        """The last event every subscriber connected now must get (0: none yet)."""
        if self._options.is_publishing:
            return self._board.published()
        return self._board.highest_seen()

    def error(self, kind: ErrorKind, message: str) -> None:
        self.record.errors[kind] += 1
        self.record.error_examples.setdefault(kind, message)
        self.window.errors += 1

    def drop(self) -> None:
        self.window.drops += 1

    def on_event(self, ledger: Ledger, event: MessageEvent) -> None:
        record = self.record
        if event.type == "reset":
            record.resets += 1
            return
        if not self._options.is_publishing:
            self._on_server_event(ledger, event)
            return
        try:
            payload = json.loads(event.data)
            seq, sent_ns = payload["seq"], payload["t"]
        except (ValueError, TypeError, KeyError):
            record.foreign += 1
            return
        if (
            type(seq) is not int
            or type(sent_ns) is not int
            or not 1 <= seq <= self._board.published()
        ):
            record.foreign += 1
            return
        self.window.delivered += 1
        delivered = ledger.delivered
        is_live = ledger.receive(seq)
        if ledger.delivered != delivered:
            self.received_by[seq] += 1
            if seq not in record.seen_ids:
                record.seen_ids[seq] = event.last_event_id
        if is_live:
            # time.monotonic_ns is the machine's one monotonic clock: the same in
            # the publishing parent and in every worker process.
            self._latency((time.monotonic_ns() - sent_ns) / 1e9)

    def _on_server_event(self, ledger: Ledger, event: MessageEvent) -> None:
        """An event the server made (``--no-publish``): its id is its sequence number."""
        seq = parse_seq(event.last_event_id)
        if seq is None:
            self.record.foreign += 1
            return
        if not ledger.is_started:
            # Everything after the first event a subscriber gets must arrive.
            ledger.start_stream(seq - 1, is_resume=False)
        self._board.see(seq)
        self.window.delivered += 1
        if ledger.receive(seq) and self._options.timestamp_path is not None:
            sent = parse_timestamp(event.data, self._options.timestamp_path)
            if sent is not None:
                self._latency(time.time() - sent)

    def _latency(self, latency: float) -> None:
        self.record.latency.record(latency)
        self.window.latency.record(latency)
