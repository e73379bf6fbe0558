"""The report's shape, typed: :class:`Report` is what ``--report`` writes as JSON.

These are ``TypedDict``s, so the report stays a plain JSON-ready ``dict`` at run time
(``json.dumps`` takes it as it is, and a report read back with ``json.load`` has the
same shape) while mypy checks every field the summary, the chart and callers read.
Each field's meaning is in ``docs/loadtest-report.md``; this is schema version 3
(:data:`trio_sse.loadtest._report.SCHEMA_VERSION`).
"""

from __future__ import annotations

from typing import Any, TypedDict

__all__ = [
    "ChurnPart",
    "ConnectionRow",
    "ConnectionsPart",
    "ErrorsPart",
    "EventsPart",
    "HistogramData",
    "HistogramSummary",
    "HistogramsPart",
    "PartRow",
    "PerConnectionPart",
    "PhasesPart",
    "ProcessRow",
    "PublishRow",
    "Report",
    "RssPart",
    "RunPart",
    "ServerPart",
    "SourcePart",
    "StreamRow",
    "ThresholdRow",
    "TimelineRow",
]


class HistogramData(TypedDict):
    """A histogram's every bucket (1 % wide, by index), so that merged reports stay exact."""

    count: int
    total: float
    min: float | None
    max: float
    buckets: dict[str, int]


class HistogramsPart(TypedDict):
    """The run's histograms in full (the summaries elsewhere are drawn from these)."""

    latency: HistogramData
    connect_time: HistogramData
    reconnect_time: HistogramData
    publish_time: HistogramData


class ProcessRow(TypedDict):
    """One load-tester process's share (``--processes``), or one machine's (a merge).

    ``index`` is the process's number (the parent, which publishes and reads the
    verdict source, is ``-1``; its workers 0, 1...); in a merge of machines' reports,
    each report's processes are listed with ``part`` set to the report's place.
    """

    part: int
    index: int
    connections: int
    connects: int
    delivered: int
    errors: int
    max_rss_kib: int
    cpu_seconds: float


class PartRow(TypedDict):
    """One report merged into this one (``trio-sse loadtest merge``)."""

    part_id: str
    started_at: str
    url: str
    connections: int
    verdict: str
    exit_status: int


class HistogramSummary(TypedDict):
    """Percentiles of a histogram, in seconds (``count`` is a count)."""

    count: int
    p50: float
    p90: float
    p99: float
    max: float
    mean: float


class PhasesPart(TypedDict):
    """How long each phase took."""

    ramp: float
    steady: float
    drain: float
    is_drained: bool
    # When each phase after the ramp began, seconds from the start (added in v2).
    starts: dict[str, float]


class ConnectionsPart(TypedDict):
    """Streams opened, and how fast."""

    target: int
    peak: int
    connects: int
    reconnects: int
    connect_time: HistogramSummary
    reconnect_time: HistogramSummary


class PerConnectionPart(TypedDict):
    """How deliveries spread over the subscribers."""

    delivered_min: int
    delivered_median: float
    delivered_max: int
    with_loss: int
    with_undelivered: int
    with_duplicates: int


class EventsPart(TypedDict):
    """What was published and what arrived."""

    is_published: bool
    published: int
    published_ok: int
    publish_failed: int
    publish_failed_delivered: int
    publish_time: HistogramSummary
    id_inversions: int
    last_seq: int
    delivered: int
    lost: int
    undelivered: int
    duplicated: int
    replayed: int
    resets: int
    foreign: int
    per_connection: PerConnectionPart


class ChurnPart(TypedDict):
    """The drops asked for and made."""

    rate: float
    drops: dict[str, int]
    gaps: int


class ErrorsPart(TypedDict):
    """Errors by kind, with the first message of each."""

    total: int
    by_kind: dict[str, int]
    examples: dict[str, str]
    stats_failures: int


class SourcePart(TypedDict):
    """Where the verdict's count came from."""

    kind: str
    description: str


class RssPart(TypedDict):
    """The server's resident memory (``--server-pid``), KiB."""

    before: int | None
    peak: int | None
    after: int | None


class ServerPart(TypedDict):
    """The leak verdict."""

    source: SourcePart
    baseline_subscribers: int
    subscribers_at_close: int | None
    subscribers_after: int | None
    clean_seconds: float | None
    clean_timeout: float
    verdict: str
    ghosts: int | None
    source_error: str | None
    rss_kib: RssPart


class TimelineRow(TypedDict):
    """One second of the run."""

    t: float
    phase: str
    connections: int
    server_subscribers: int | None
    delivered: int
    events_per_s: float
    latency_p50: float | None
    latency_p99: float | None
    latency_max: float | None
    errors: int
    drops: int


class StreamRow(TypedDict):
    """One stream's start: the last seq handed out then, and the id it resumed from."""

    published: int
    last_event_id: str


class ConnectionRow(TypedDict):
    """One subscriber's ledger."""

    delivered: int
    lost: int
    undelivered: int
    duplicated: int
    gaps: int
    connects: int
    floor: int | None
    lost_seqs: list[int]
    streams: list[StreamRow]


class PublishRow(TypedDict):
    """One seq's publish: how it ended, the server's id for it, who received it."""

    seq: int
    outcome: str
    id: str | None
    t: float
    took: float
    error: str | None
    received_by: int


class RunPart(TypedDict):
    """Whether the run proves anything, and if not, why."""

    is_conclusive: bool
    problems: list[str]


class ThresholdRow(TypedDict):
    """One ``--max-*`` bound and the figure it bounds."""

    name: str
    limit: float
    value: float | None
    is_breached: bool


class Report(TypedDict):
    """The whole report (schema version 3)."""

    schema_version: int
    url: str
    started_at: str
    options: dict[str, Any]
    phases: PhasesPart
    connections: ConnectionsPart
    events: EventsPart
    latency: HistogramSummary
    churn: ChurnPart
    errors: ErrorsPart
    server: ServerPart
    loadtest_max_rss_kib: int
    timeline: list[TimelineRow]
    per_connection: list[ConnectionRow]
    publishes: list[PublishRow]
    run: RunPart
    thresholds: list[ThresholdRow]
    # Fields added in schema versions 2 and 3 (a reader must allow them missing in
    # reports written before): the run's identity, for merging reports.
    run_id: str
    part_id: str
    loadtest_cpu_seconds: float
    processes: list[ProcessRow]
    histograms: HistogramsPart
    parts: list[PartRow]
