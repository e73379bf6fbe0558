"""The report: a JSON document built from a run's record, and the summary table printed from it.

The JSON document is the one source: ``--report`` writes it, the summary table and
the chart are drawn from it. Durations are in seconds throughout. Its schema is
versioned (``schema_version``, :data:`SCHEMA_VERSION`) and described field by field
in ``docs/loadtest-report.md``.

The leak verdict, from the verdict source (``server.source``: ``/stats``, another
JSON path, a Prometheus gauge or the server's process):

* ``clean``: the count was back at its value before the run within
  ``clean_timeout`` seconds of the close;
* ``leaking``: it was not; the excess is reported as ghost subscribers;
* ``unknown``: the source never answered after the close.

A run *proves nothing* (``run.is_conclusive`` false) when no stream ever opened,
every publish was refused, or nothing was delivered; a clean verdict means nothing
then. Thresholds (``thresholds``) bound figures for CI.

Exit statuses, the first that applies: 3 leaking, 4 inconclusive, 1 verdict unknown,
5 a threshold breached, 0 otherwise.
"""

from __future__ import annotations

import enum
import json
import statistics
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from ._ids import parse_seq
from ._ledger import Ledger
from ._options import Threshold, Thresholds
from ._order import ServerOrder
from ._publisher import PublishRecord
from ._record import ProcessShare, RunRecord, Sample
from ._schema import (
    ConnectionRow,
    ConnectionsPart,
    ErrorsPart,
    EventsPart,
    HistogramSummary,
    ProcessRow,
    PublishRow,
    Report,
    RssPart,
    ServerPart,
    ThresholdRow,
    TimelineRow,
)

__all__ = [
    "EXIT_BREACHED",
    "EXIT_CLEAN",
    "EXIT_INCONCLUSIVE",
    "EXIT_LEAKING",
    "EXIT_UNKNOWN",
    "SCHEMA_VERSION",
    "build_report",
    "exit_status",
    "format_duration",
    "format_summary",
    "read_report",
    "rejudge",
    "write_report",
]

EXIT_CLEAN: Final = 0
EXIT_UNKNOWN: Final = 1
EXIT_LEAKING: Final = 3
EXIT_INCONCLUSIVE: Final = 4
EXIT_BREACHED: Final = 5

# Bumped when a field changes meaning or goes away; new fields keep the version.
# 2: a failed publish that a subscriber received counts in `lost` and `undelivered`.
# 3: `lost` is "a later event arrived" in the server's order of the events (by their
#    ids), not in the load tester's seq order; `gaps` likewise.
SCHEMA_VERSION: Final = 3

# Lost seqs listed per subscriber at most (the count is always whole).
LOST_SEQS_LISTED: Final = 32

# The one-line meaning of each error kind, for the summary table.
_ERROR_MEANINGS: Final = {
    "connect": "connect() failed",
    "timeout": "no response head in time",
    "status": "a status other than 200",
    "content_type": "not text/event-stream",
    "protocol": "malformed HTTP or SSE",
    "reset": "reset by the server",
    "closed": "closed by the server mid-response",
    "reset_before_head": "reset before the response head",
    "closed_before_head": "closed before the response head",
    "ended": "the server ended the response",
}


def _jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_jsonable(item) for item in value]
    if hasattr(value, "__dataclass_fields__"):
        return {item.name: _jsonable(getattr(value, item.name)) for item in fields(value)}
    return value


def _server_order(record: RunRecord) -> ServerOrder | None:
    """The server's order of the events that were made, from their ids (see :mod:`._order`)."""
    if not record.options.is_publishing:
        return None  # the server's own events: their ids are their seqs
    ids = dict(record.seen_ids)
    ids.update(
        (seq, publish.event_id)
        for seq, publish in record.publishes.items()
        if publish.event_id is not None
    )
    return ServerOrder.from_ids(ids)


def _connection_row(
    ledger: Ledger, last: int, unmade: set[int], order: ServerOrder | None
) -> ConnectionRow:
    judgement = ledger.judge(last, unmade, order)
    lost = len(judgement.lost)
    undelivered = judgement.undelivered
    # The stream starts explain a loss (which resume skipped what); a clean
    # subscriber's would only make the report bigger.
    is_odd = bool(lost or undelivered or ledger.duplicated)
    return {
        "delivered": ledger.delivered,
        "lost": lost,
        "undelivered": undelivered,
        "duplicated": ledger.duplicated,
        "gaps": judgement.gaps,
        "connects": ledger.connects,
        "floor": ledger.floor,
        "lost_seqs": judgement.lost[:LOST_SEQS_LISTED],  # lowest first already
        "streams": (
            [{"published": s.published, "last_event_id": s.last_event_id} for s in ledger.streams]
            if is_odd
            else []
        ),
    }


def _publish_row(publish: PublishRecord, record: RunRecord) -> PublishRow:
    return {
        "seq": publish.seq,
        "outcome": publish.outcome.value,
        "id": publish.event_id,
        "t": round(publish.sent_at - record.clock_start, 6),
        "took": publish.took,
        "error": publish.error.value if publish.error is not None else None,
        "received_by": record.received_by[publish.seq],
    }


def _id_inversions(publishes: list[PublishRow]) -> int:
    """Seqs the server numbered below an earlier seq: concurrent POSTs it took out of order."""
    inversions = 0
    highest: int | None = None
    for row in publishes:
        number = parse_seq(row["id"]) if row["id"] is not None else None
        if number is None:
            continue
        if highest is not None and number < highest:
            inversions += 1
        highest = number if highest is None else max(highest, number)
    return inversions


def build_report(record: RunRecord) -> Report:
    """The JSON-ready report of one run (see ``docs/loadtest-report.md``)."""
    o = record.options
    failed = record.failed_seqs
    # Failed publishes that nobody received: excused. One that somebody received was
    # made by the server, and is judged like any other event.
    unmade = failed - record.made_failed_seqs
    last = record.published if record.last_seq is None else record.last_seq
    order = _server_order(record)
    per_connection = [_connection_row(ledger, last, unmade, order) for ledger in record.ledgers]
    publishes = [_publish_row(record.publishes[seq], record) for seq in sorted(record.publishes)]
    delivered = [row["delivered"] for row in per_connection]
    lost = sum(row["lost"] for row in per_connection)
    undelivered = sum(row["undelivered"] for row in per_connection)
    duplicated = sum(row["duplicated"] for row in per_connection)
    steady = record.steady_seconds
    connections: ConnectionsPart = {
        "target": o.connections,
        "peak": record.peak_connections,
        "connects": record.connects,
        "reconnects": record.reconnects,
        "connect_time": record.connect_time.summary(),
        "reconnect_time": record.reconnect_time.summary(),
    }
    events: EventsPart = {
        "is_published": o.is_publishing,
        "published": record.published,
        "published_ok": record.published_ok,
        "publish_failed": len(failed),
        "publish_failed_delivered": len(failed & record.made_failed_seqs),
        "publish_time": record.publish_latency.summary(),
        "id_inversions": _id_inversions(publishes),
        "last_seq": last,
        "delivered": sum(delivered),
        "lost": lost,
        "undelivered": undelivered,
        "duplicated": duplicated,
        "replayed": sum(ledger.replayed for ledger in record.ledgers),
        "resets": record.resets,
        "foreign": record.foreign,
        "per_connection": {
            "delivered_min": min(delivered),
            "delivered_median": statistics.median(delivered),
            "delivered_max": max(delivered),
            "with_loss": sum(1 for row in per_connection if row["lost"]),
            "with_undelivered": sum(1 for row in per_connection if row["undelivered"]),
            "with_duplicates": sum(1 for row in per_connection if row["duplicated"]),
        },
    }
    errors: ErrorsPart = {
        "total": sum(record.errors.values()),
        "by_kind": {kind.value: count for kind, count in record.errors.items()},
        "examples": {kind.value: text for kind, text in record.error_examples.items()},
        "stats_failures": record.stats_failures,
    }
    latency = record.latency.summary()
    problems = _problems(connections, events, errors)
    return {
        "schema_version": SCHEMA_VERSION,
        "url": o.url,
        "started_at": datetime.fromtimestamp(record.started_at, UTC).isoformat(),
        "options": {item.name: _jsonable(getattr(o, item.name)) for item in fields(o)},
        "phases": {
            "ramp": record.ramp_seconds,
            "steady": steady,
            "drain": record.drain_seconds,
            "is_drained": record.is_drained,
            "starts": {phase.value: t for phase, t in record.phase_starts.items()},
        },
        "connections": connections,
        "events": events,
        "latency": latency,
        "churn": {
            "rate": o.churn,
            "drops": {method.value: count for method, count in record.drops.items()},
            "gaps": sum(row["gaps"] for row in per_connection),
        },
        "errors": errors,
        "server": {
            "source": {"kind": record.source_kind.value, "description": record.source},
            "baseline_subscribers": record.baseline_subscribers,
            "subscribers_at_close": record.subscribers_at_close,
            "subscribers_after": record.subscribers_after,
            "clean_seconds": record.clean_seconds,
            "clean_timeout": o.clean_timeout,
            "verdict": _verdict(record),
            "ghosts": (
                max(0, record.subscribers_after - record.baseline_subscribers)
                if record.subscribers_after is not None
                else None
            ),
            "source_error": record.stats_error,
            "rss_kib": {
                "before": record.server_rss_kib_before,
                "peak": record.server_rss_kib_peak,
                "after": record.server_rss_kib_after,
            },
        },
        "loadtest_max_rss_kib": record.max_rss_kib,
        "timeline": [_timeline_row(sample) for sample in record.samples],
        "per_connection": per_connection,
        "publishes": publishes,
        "run": {"is_conclusive": not problems, "problems": problems},
        "thresholds": _thresholds(
            o.thresholds,
            clean_seconds=record.clean_seconds,
            connections=connections,
            events=events,
            errors=errors,
            latency=latency,
        ),
        "run_id": record.run_id,
        "part_id": record.part_id,
        "loadtest_cpu_seconds": record.cpu_seconds,
        "processes": [_process_row(share) for share in record.processes],
        "histograms": {
            "latency": record.latency.to_data(),
            "connect_time": record.connect_time.to_data(),
            "reconnect_time": record.reconnect_time.to_data(),
            "publish_time": record.publish_latency.to_data(),
        },
        "parts": [],
    }


def _process_row(share: ProcessShare) -> ProcessRow:
    return {
        "part": 0,
        "index": share.index,
        "connections": share.connections,
        "connects": share.connects,
        "delivered": share.delivered,
        "errors": share.errors,
        "max_rss_kib": share.max_rss_kib,
        "cpu_seconds": share.cpu_seconds,
    }


def rejudge(report: Report) -> Report:
    """``report`` with its run problems and thresholds judged again from its figures
    (after a merge: the merged figures, against the first report's bounds)."""
    problems = _problems(report["connections"], report["events"], report["errors"])
    limits = Thresholds(**report["options"].get("thresholds", {}))
    return {
        **report,
        "run": {"is_conclusive": not problems, "problems": problems},
        "thresholds": _thresholds(
            limits,
            clean_seconds=report["server"]["clean_seconds"],
            connections=report["connections"],
            events=report["events"],
            errors=report["errors"],
            latency=report["latency"],
        ),
    }


def _timeline_row(sample: Sample) -> TimelineRow:
    return {
        "t": sample.t,
        "phase": sample.phase.value,
        "connections": sample.connections,
        "server_subscribers": sample.server_subscribers,
        "delivered": sample.delivered,
        "events_per_s": sample.events_per_s,
        "latency_p50": sample.latency_p50,
        "latency_p99": sample.latency_p99,
        "latency_max": sample.latency_max,
        "errors": sample.errors,
        "drops": sample.drops,
    }


def _first_example(errors: ErrorsPart, prefix: str = "") -> str:
    """The commonest error kind (starting with ``prefix``) and its first message."""
    kinds = [(count, kind) for kind, count in errors["by_kind"].items() if kind.startswith(prefix)]
    if not kinds:
        return ""
    _, kind = max(kinds)
    return f" ({kind}: {errors['examples'].get(kind, '')})"


def _problems(conns: ConnectionsPart, events: EventsPart, errors: ErrorsPart) -> list[str]:
    """Why the run proves nothing about the server, if it does not."""
    problems: list[str] = []
    if not conns["connects"]:
        problems.append("no stream ever opened" + _first_example(errors))
    if events["is_published"]:
        if not events["published"]:
            # (A --duration shorter than one publish interval.)
            problems.append("nothing was published: the steady phase ended before the first event")
        elif not events["published_ok"]:
            problems.append("every publish was refused" + _first_example(errors, "publish_"))
        elif events["published_ok"] and not events["delivered"] and conns["connects"]:
            problems.append(
                f"nothing was delivered: {events['published_ok']:,} events published, "
                "none reached a subscriber"
            )
    elif conns["connects"] and not events["delivered"]:
        problems.append(
            "nothing was delivered: no event with a numeric id arrived "
            f"({events['foreign']:,} without one)"
        )
    return problems


def _thresholds(
    limits: Thresholds,
    *,
    clean_seconds: float | None,
    connections: ConnectionsPart,
    events: EventsPart,
    errors: ErrorsPart,
    latency: HistogramSummary,
) -> list[ThresholdRow]:
    """Each bound given, the figure it bounds, and whether the figure is over it."""

    def p99(summary: HistogramSummary) -> float | None:
        # No sample: nothing to bound (no drop means no reconnect).
        return summary["p99"] if summary["count"] else None

    values: dict[Threshold, float | None] = {
        Threshold.P99: p99(latency),
        Threshold.LOST: events["lost"],
        Threshold.UNDELIVERED: events["undelivered"],
        Threshold.DUPLICATED: events["duplicated"],
        Threshold.ERRORS: errors["total"],
        Threshold.PUBLISH_FAILURES: events["publish_failed"],
        Threshold.CONNECT_TIME: p99(connections["connect_time"]),
        Threshold.RECONNECT_TIME: p99(connections["reconnect_time"]),
        Threshold.CLEANUP_TIME: clean_seconds,
    }
    rows: list[ThresholdRow] = []
    for threshold, limit in limits.items():
        value = values[threshold]
        if threshold is Threshold.CLEANUP_TIME:
            is_breached = value is None or value > limit  # never clean: over any bound
        else:
            is_breached = value is not None and value > limit
        rows.append(
            {"name": threshold.value, "limit": limit, "value": value, "is_breached": is_breached}
        )
    return rows


def _verdict(record: RunRecord) -> str:
    if record.clean_seconds is not None:
        return "clean"
    if record.subscribers_after is None:
        return "unknown"
    return "leaking"


def exit_status(report: Report) -> int:
    """The exit status: 3 leaking, 4 inconclusive, 1 unknown, 5 breached, else 0."""
    verdict = report["server"]["verdict"]
    if verdict == "leaking":
        return EXIT_LEAKING
    if not report["run"]["is_conclusive"]:
        return EXIT_INCONCLUSIVE
    if verdict == "unknown":
        return EXIT_UNKNOWN
    if any(row["is_breached"] for row in report["thresholds"]):
        return EXIT_BREACHED
    return EXIT_CLEAN


def read_report(path: Path) -> Report:
    """A report written by :func:`write_report`.

    Raises:
        ValueError: Not JSON, or not a report object (the reason names the file).
        OSError: The file cannot be read.
    """
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    if not isinstance(value, dict) or "schema_version" not in value:
        raise ValueError(f"{path}: not a trio-sse loadtest report (no schema_version)")
    report: Report = value  # type: ignore[assignment]
    return report


def write_report(report: Report, path: Path) -> None:
    """Write the report as JSON (indented: it is read by people as often as by programs)."""
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def format_duration(seconds: float | None) -> str:
    """``812 µs``, ``12.3 ms``, ``1.25 s``; ``-`` for None."""
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def _percentiles(summary: HistogramSummary) -> str:
    if not summary["count"]:
        return "no samples"
    return "   ".join(
        f"{name} {format_duration(summary[name])}" for name in ("p50", "p90", "p99", "max")
    )


def _server_line(server: ServerPart) -> str:
    before = f"subscribers {server['baseline_subscribers']:,} before"
    at_close = server["subscribers_at_close"]
    if at_close is not None:
        before += f", {at_close:,} at the close"
    source = f" [by {server['source']['description']}]"
    if server["verdict"] == "clean":
        return f"{before}; back in {format_duration(server['clean_seconds'])}: CLEAN{source}"
    if server["verdict"] == "unknown":
        why = server["source_error"] or "no answer"
        return f"{before}; the count could not be read after the close: UNKNOWN ({why})"
    return (
        f"{before}; still {server['subscribers_after']:,} after "
        f"{server['clean_timeout']:g} s: LEAKING ({server['ghosts']:,} ghost subscribers)"
        f"{source}"
    )


def _rss_line(rss: RssPart) -> str:
    values = {"before": rss["before"], "peak": rss["peak"], "after": rss["after"]}
    return ", ".join(
        f"{name} {value / 1024:,.1f} MiB" for name, value in values.items() if value is not None
    )


def _threshold_value(name: str, value: float | None) -> str:
    if value is None:
        return "-"
    if name.endswith(("-time", "-p99")):
        return format_duration(value)
    return f"{value:,g}"


def _published_line(events: EventsPart, rate: float) -> str:
    failed = f"{events['publish_failed']:,} failed"
    if events["publish_failed_delivered"]:
        failed += (
            f" ({events['publish_failed_delivered']:,} of them delivered all the same: made "
            "by the server, so judged like the rest)"
        )
    line = (
        f"{events['published']:,} events ({rate:.1f}/s), {failed}; "
        f"POST p50 {format_duration(events['publish_time']['p50'])}, "
        f"max {format_duration(events['publish_time']['max'])}"
    )
    if events["id_inversions"]:
        line += f"; {events['id_inversions']:,} numbered by the server out of seq order"
    return line


def _tester_line(report: Report) -> str:
    """The load tester's own cost: processes, CPU seconds, peak memory."""
    processes = [row for row in report.get("processes", []) if row["index"] >= 0]
    count = len(processes) or 1
    line = (
        f"{count} process{'es' if count > 1 else ''}; CPU "
        f"{report.get('loadtest_cpu_seconds', 0.0):.1f} s; max RSS "
        f"{report['loadtest_max_rss_kib'] / 1024:,.1f} MiB"
    )
    if report.get("parts"):
        line += f" (merged from {len(report['parts'])} reports)"
    return line


def format_summary(report: Report) -> str:
    """The final summary table, as printed by ``trio-sse loadtest``."""
    phases, conns, events = report["phases"], report["connections"], report["events"]
    churn, errors = report["churn"], report["errors"]
    steady = phases["steady"]
    # Publishing runs through the steady phase only.
    rate = events["published"] / steady if steady else 0.0
    drain = f"drain {format_duration(phases['drain'])}"
    drain += " (all caught up)" if phases["is_drained"] else " (timed out: some never caught up)"
    per = events["per_connection"]
    rows = [
        ("phases", f"ramp {phases['ramp']:.1f} s, steady {steady:.1f} s, {drain}"),
        (
            "connections",
            f"{conns['target']:,} target, {conns['peak']:,} peak; {conns['connects']:,} "
            f"connects ({conns['reconnects']:,} reconnects)",
        ),
        ("connect time", _percentiles(conns["connect_time"])),
        ("reconnect time", _percentiles(conns["reconnect_time"])),
        ("published", _published_line(events, rate)),
        (
            "delivered",
            f"{events['delivered']:,}; lost {events['lost']:,}; undelivered at the close "
            f"{events['undelivered']:,}; duplicated {events['duplicated']:,}; replayed "
            f"{events['replayed']:,}; resets {events['resets']:,}",
        ),
        (
            "per connection",
            f"delivered min {per['delivered_min']:,} / median {per['delivered_median']:,g} / "
            f"max {per['delivered_max']:,}; {per['with_loss']:,} with loss, "
            f"{per['with_undelivered']:,} with undelivered, "
            f"{per['with_duplicates']:,} with duplicates",
        ),
        ("latency", _percentiles(report["latency"])),
    ]
    drops = churn["drops"]
    if drops:
        by_method = ", ".join(f"{name} {count:,}" for name, count in sorted(drops.items()))
        rows.append(
            ("churn", f"{sum(drops.values()):,} drops ({by_method}); {churn['gaps']:,} gaps")
        )
    if errors["total"]:
        kinds = ", ".join(
            f"{kind} {count:,} ({_ERROR_MEANINGS.get(kind, errors['examples'].get(kind, ''))})"
            for kind, count in sorted(errors["by_kind"].items(), key=lambda item: -item[1])
        )
        rows.append(("errors", kinds))
    else:
        rows.append(("errors", "none"))
    rows.append(("server", _server_line(report["server"])))
    if any(value is not None for value in report["server"]["rss_kib"].values()):
        rows.append(("server RSS", _rss_line(report["server"]["rss_kib"])))
    if report["thresholds"]:
        rows.append(
            (
                "thresholds",
                "; ".join(
                    f"--{row['name']} {_threshold_value(row['name'], row['limit'])}: "
                    f"{_threshold_value(row['name'], row['value'])} "
                    + ("BREACHED" if row["is_breached"] else "ok")
                    for row in report["thresholds"]
                ),
            )
        )
    rows.append(("load tester", _tester_line(report)))
    run = report["run"]
    if not run["is_conclusive"]:
        rows.append(("run", "INCONCLUSIVE: " + "; ".join(run["problems"])))
    width = max(len(name) for name, _ in rows)
    lines = [f"trio-sse loadtest {report['url']}"]
    lines += [f"  {name:<{width}}  {text}" for name, text in rows]
    return "\n".join(lines) + "\n"
