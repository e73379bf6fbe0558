"""Merging: worker records into one run's record, and reports from several machines into one.

**Workers** (``--processes N``, :func:`merge_records`): the parent's record (the
publisher, the verdict source, the timeline) takes in each worker's ledgers, in
run-wide order (worker ``i`` held subscribers ``i, i + N...``), and adds up their
counts and histograms. Nothing is judged before the merge: the report is built from
the merged ledgers, as one process's would be.

**Machines** (``trio-sse loadtest merge``, :func:`merge_reports`): each machine
judged its own subscribers against its own publisher, so its per-subscriber rows
are final; the merge adds them up, merges the full histograms (exact percentiles),
and takes the worst verdict. Only reports of the same schema version and the same
run (``--run-id``, given alike on every machine) merge, each at most once.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Final

from ._record import ProcessShare, RunRecord
from ._schema import (
    ConnectionRow,
    PartRow,
    ProcessRow,
    Report,
    ServerPart,
    TimelineRow,
)
from ._stats import Histogram

__all__ = ["MergeError", "merge_records", "merge_reports"]


def merge_records(parent: RunRecord, workers: Sequence[RunRecord]) -> RunRecord:
    """The parent's record with every worker's ledgers and counts (see the module docs)."""
    count = len(workers)
    ledgers = [None] * parent.options.connections
    for index, worker in enumerate(workers):
        for j, ledger in enumerate(worker.ledgers):
            ledgers[index + j * count] = ledger  # type: ignore[call-overload]
    if any(ledger is None for ledger in ledgers):
        raise ValueError("the workers' ledgers do not cover every connection once")
    parent.ledgers = ledgers  # type: ignore[assignment]
    parent.processes = [
        ProcessShare(
            -1, 0, 0, 0, sum(parent.errors.values()), parent.max_rss_kib, parent.cpu_seconds
        )
    ]
    for index, worker in enumerate(workers):
        parent.latency.merge(worker.latency)
        parent.connect_time.merge(worker.connect_time)
        parent.reconnect_time.merge(worker.reconnect_time)
        parent.errors.update(worker.errors)
        for kind, text in worker.error_examples.items():
            parent.error_examples.setdefault(kind, text)
        parent.drops.update(worker.drops)
        parent.received_by.update(worker.received_by)
        for seq, event_id in worker.seen_ids.items():
            parent.seen_ids.setdefault(seq, event_id)
        parent.connects += worker.connects
        parent.reconnects += worker.reconnects
        parent.resets += worker.resets
        parent.foreign += worker.foreign
        parent.peak_connections += worker.peak_connections
        parent.processes.append(
            ProcessShare(
                index,
                len(worker.ledgers),
                worker.connects,
                sum(ledger.delivered for ledger in worker.ledgers),
                sum(worker.errors.values()),
                worker.max_rss_kib,
                worker.cpu_seconds,
            )
        )
    parent.made_failed_seqs = {s for s in parent.failed_seqs if s in parent.received_by}
    parent.max_rss_kib = sum(share.max_rss_kib for share in parent.processes)
    parent.cpu_seconds = sum(share.cpu_seconds for share in parent.processes)
    return parent


class MergeError(ValueError):
    """Reports that cannot be merged, and why."""


# Verdicts from best to worst: the merge takes the worst.
_VERDICT_RANK: Final = {"clean": 0, "unknown": 1, "leaking": 2}
# Fields a report must have to be merged (those added in schema versions 2 and 3).
_NEEDED: Final = ("run_id", "part_id", "histograms", "processes")


def _check(reports: Sequence[Report], schema_version: int) -> None:
    if len(reports) < 2:
        raise MergeError("give at least two reports to merge")
    for number, report in enumerate(reports, 1):
        version = report.get("schema_version")
        if version != schema_version:
            raise MergeError(
                f"report {number} has schema version {version}; this trio-sse reads "
                f"{schema_version}: merge reports written by the same version"
            )
        missing = [name for name in _NEEDED if name not in report]
        if missing:
            raise MergeError(
                f"report {number} lacks {', '.join(missing)}: written by an older trio-sse"
            )
    run_ids = {report["run_id"] for report in reports}
    if len(run_ids) > 1:
        raise MergeError(
            "the reports are of different runs (run ids "
            + ", ".join(sorted(run_ids))
            + "): give every machine the same --run-id"
        )
    seen: set[str] = set()
    for report in reports:
        for part in report["parts"] or [_part_of(report)]:
            if part["part_id"] in seen:
                raise MergeError(f"part {part['part_id']} is in more than one report")
            seen.add(part["part_id"])


def _part_of(report: Report) -> PartRow:
    from ._report import exit_status  # noqa: PLC0415 - _report imports this module

    return {
        "part_id": report["part_id"],
        "started_at": report["started_at"],
        "url": report["url"],
        "connections": report["connections"]["target"],
        "verdict": report["server"]["verdict"],
        "exit_status": exit_status(report),
    }


def _histogram(reports: Sequence[Report], name: str) -> Histogram:
    merged = Histogram()
    for report in reports:
        merged.merge(Histogram.from_data(report["histograms"][name]))  # type: ignore[literal-required]
    return merged


def _timeline(reports: Sequence[Report]) -> list[TimelineRow]:
    """Rows added up second by second, each run's aligned on its own start."""
    rows: list[TimelineRow] = []
    for i in range(max(len(report["timeline"]) for report in reports)):
        at = [report["timeline"][i] for report in reports if i < len(report["timeline"])]
        servers = [row["server_subscribers"] for row in at if row["server_subscribers"] is not None]

        def most(key: str, at: list[TimelineRow] = at) -> float | None:
            values = [row[key] for row in at if row[key] is not None]  # type: ignore[literal-required]
            return max(values) if values else None

        rows.append(
            {
                "t": max(row["t"] for row in at),
                "phase": at[0]["phase"],
                "connections": sum(row["connections"] for row in at),
                # Every machine reads the same server: its count, not a sum.
                "server_subscribers": max(servers) if servers else None,
                "delivered": sum(row["delivered"] for row in at),
                "events_per_s": sum(row["events_per_s"] for row in at),
                # Per-second percentiles cannot be merged exactly: the worst of them.
                "latency_p50": most("latency_p50"),
                "latency_p99": most("latency_p99"),
                "latency_max": most("latency_max"),
                "errors": sum(row["errors"] for row in at),
                "drops": sum(row["drops"] for row in at),
            }
        )
    return rows


def merge_reports(reports: Sequence[Report], schema_version: int) -> Report:
    """One report of several machines' reports of one run (see the module docs).

    Raises:
        MergeError: Fewer than two reports, another schema version, different runs,
            or a report given twice.
    """
    from ._report import rejudge  # noqa: PLC0415 - _report imports this module

    _check(reports, schema_version)
    first = reports[0]
    per_connection: list[ConnectionRow] = [
        row for report in reports for row in report["per_connection"]
    ]
    delivered = [row["delivered"] for row in per_connection]
    latency = _histogram(reports, "latency")
    connect_time = _histogram(reports, "connect_time")
    reconnect_time = _histogram(reports, "reconnect_time")
    publish_time = _histogram(reports, "publish_time")
    events = [report["events"] for report in reports]
    conns = [report["connections"] for report in reports]
    errors = [report["errors"] for report in reports]
    by_kind: dict[str, int] = {}
    examples: dict[str, str] = {}
    drops: dict[str, int] = {}
    for report in reports:
        for kind, number in report["errors"]["by_kind"].items():
            by_kind[kind] = by_kind.get(kind, 0) + number
        for kind, text in report["errors"]["examples"].items():
            examples.setdefault(kind, text)
        for method, number in report["churn"]["drops"].items():
            drops[method] = drops.get(method, 0) + number
    processes: list[ProcessRow] = []
    parts: list[PartRow] = []
    for number, report in enumerate(reports):
        processes += [{**row, "part": number} for row in report["processes"]]
        parts += report["parts"] or [_part_of(report)]
    merged: Report = {
        **first,
        "started_at": min(report["started_at"] for report in reports),
        "part_id": "+".join(part["part_id"] for part in parts),
        "phases": {
            "ramp": max(r["phases"]["ramp"] for r in reports),
            "steady": max(r["phases"]["steady"] for r in reports),
            "drain": max(r["phases"]["drain"] for r in reports),
            "is_drained": all(r["phases"]["is_drained"] for r in reports),
            "starts": {},
        },
        "connections": {
            "target": sum(c["target"] for c in conns),
            "peak": sum(c["peak"] for c in conns),
            "connects": sum(c["connects"] for c in conns),
            "reconnects": sum(c["reconnects"] for c in conns),
            "connect_time": connect_time.summary(),
            "reconnect_time": reconnect_time.summary(),
        },
        "events": {
            "is_published": any(e["is_published"] for e in events),
            "published": sum(e["published"] for e in events),
            "published_ok": sum(e["published_ok"] for e in events),
            "publish_failed": sum(e["publish_failed"] for e in events),
            "publish_failed_delivered": sum(e["publish_failed_delivered"] for e in events),
            "publish_time": publish_time.summary(),
            "id_inversions": sum(e["id_inversions"] for e in events),
            "last_seq": max(e["last_seq"] for e in events),
            "delivered": sum(delivered),
            "lost": sum(e["lost"] for e in events),
            "undelivered": sum(e["undelivered"] for e in events),
            "duplicated": sum(e["duplicated"] for e in events),
            "replayed": sum(e["replayed"] for e in events),
            "resets": sum(e["resets"] for e in events),
            "foreign": sum(e["foreign"] for e in events),
            "per_connection": {
                "delivered_min": min(delivered),
                "delivered_median": statistics.median(delivered),
                "delivered_max": max(delivered),
                "with_loss": sum(1 for row in per_connection if row["lost"]),
                "with_undelivered": sum(1 for row in per_connection if row["undelivered"]),
                "with_duplicates": sum(1 for row in per_connection if row["duplicated"]),
            },
        },
        "latency": latency.summary(),
        "churn": {
            "rate": sum(r["churn"]["rate"] for r in reports),
            "drops": drops,
            "gaps": sum(r["churn"]["gaps"] for r in reports),
        },
        "errors": {
            "total": sum(e["total"] for e in errors),
            "by_kind": by_kind,
            "examples": examples,
            "stats_failures": sum(e["stats_failures"] for e in errors),
        },
        "server": _worst_server([report["server"] for report in reports]),
        "loadtest_max_rss_kib": sum(r["loadtest_max_rss_kib"] for r in reports),
        "loadtest_cpu_seconds": sum(r.get("loadtest_cpu_seconds", 0.0) for r in reports),
        "timeline": _timeline(reports),
        "per_connection": per_connection,
        "publishes": [row for report in reports for row in report["publishes"]],
        "processes": processes,
        "histograms": {
            "latency": latency.to_data(),
            "connect_time": connect_time.to_data(),
            "reconnect_time": reconnect_time.to_data(),
            "publish_time": publish_time.to_data(),
        },
        "parts": parts,
    }
    return rejudge(merged)


def _worst_server(servers: Sequence[ServerPart]) -> ServerPart:
    """Every machine read the same server: the worst verdict stands (ties: slowest clean)."""
    return max(
        servers,
        key=lambda s: (_VERDICT_RANK.get(s["verdict"], 1), s["clean_seconds"] or 0.0),
    )
