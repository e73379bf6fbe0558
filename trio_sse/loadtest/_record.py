"""What a load test measured: the raw record that the report is built from."""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from ._connection import DropMethod, ErrorKind
from ._ledger import Ledger
from ._options import LoadTestOptions
from ._publisher import PublishRecord
from ._sources import SourceKind
from ._stats import Histogram

__all__ = ["Phase", "ProcessShare", "RunRecord", "Sample", "SampleCallback"]


class Phase(enum.Enum):
    """The run's phases, in order (see :mod:`trio_sse.loadtest._run`)."""

    RAMP = "ramp"
    STEADY = "steady"
    DRAIN = "drain"
    CLEAN = "clean"


@dataclass(slots=True)
class Sample:
    """One second of the run (one timeline row)."""

    t: float  # seconds since the start, at the end of the window
    phase: Phase
    connections: int  # open at the end of the window
    server_subscribers: int | None  # the verdict source's last answer
    delivered: int  # events received in the window, replays included
    events_per_s: float
    latency_p50: float | None  # None: no live event in the window
    latency_p99: float | None
    latency_max: float | None
    errors: int  # in the window
    drops: int  # in the window


@dataclass(frozen=True, slots=True)
class ProcessShare:
    """One load-tester process's own figures (``--processes``): index -1 is the parent."""

    index: int
    connections: int
    connects: int
    delivered: int
    errors: int
    max_rss_kib: int
    cpu_seconds: float


@dataclass(slots=True)
class RunRecord:
    """Everything measured; :mod:`._report` turns it into the report."""

    options: LoadTestOptions
    started_at: float  # wall clock (time.time()) at the start
    ledgers: list[Ledger]
    latency: Histogram
    connect_time: Histogram
    publish_latency: Histogram
    errors: Counter[ErrorKind]
    error_examples: dict[ErrorKind, str]
    drops: Counter[DropMethod]
    samples: list[Sample]
    published: int = 0  # seqs handed out
    published_ok: int = 0
    failed_seqs: set[int] = field(default_factory=set)  # publishes that failed here
    # Of those, the ones a subscriber received all the same: the server made them.
    made_failed_seqs: set[int] = field(default_factory=set)
    # Each publish's outcome and the server's id for it, by seq.
    publishes: dict[int, PublishRecord] = field(default_factory=dict)
    # Subscribers that received each seq (duplicates not counted).
    received_by: Counter[int] = field(default_factory=Counter)
    # The id each seq arrived with first: the server's id for a publish that got no
    # answer, and what orders the events when the answers are missing.
    seen_ids: dict[int, str] = field(default_factory=dict)
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
    # The verdict's source: its kind and what it reads (a URL and path, a gauge, a PID).
    source_kind: SourceKind = SourceKind.JSON
    source: str = ""
    # From start to close: drop (or failure) to the next open stream's response head.
    reconnect_time: Histogram = field(default_factory=Histogram)
    # --no-publish: the highest id seen when the drain began (what every subscriber
    # must reach); None when the load tester published (``published`` is the last).
    last_seq: int | None = None
    # --server-pid: the server's resident memory before, at most during, and after.
    server_rss_kib_before: int | None = None
    server_rss_kib_peak: int | None = None
    server_rss_kib_after: int | None = None
    # The last error that stopped the verdict source answering (the reason for UNKNOWN).
    stats_error: str | None = None
    # Trio's clock at the start: publish times are reported from here.
    clock_start: float = 0.0
    # When each phase after the ramp began, seconds from the start.
    phase_starts: dict[Phase, float] = field(default_factory=dict)
    # This run's identity (``--run-id``, or random) and this report's, for merging.
    run_id: str = ""
    part_id: str = ""
    # This process's CPU time (user + system), seconds; with workers, all of them.
    cpu_seconds: float = 0.0
    # --processes: each process's share (see ProcessShare); empty for one process.
    processes: list[ProcessShare] = field(default_factory=list)


SampleCallback = Callable[[Sample, RunRecord], None]
"""Called with each one-second sample as it is taken, and the record so far."""
