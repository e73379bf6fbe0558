"""The report: a JSON document built from a run's record, and the summary table printed from it.

The JSON document is the one source: ``--report`` writes it, the summary table and
the chart are drawn from it. Durations are in seconds throughout.

The leak verdict:

* ``clean``: ``/stats`` showed ``subscribers`` back at its value before the run
  within ``clean_timeout`` seconds of the close;
* ``leaking``: it did not; the excess is reported as ghost subscribers;
* ``unknown``: ``/stats`` never answered after the close.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from ._record import RunRecord

__all__ = [
    "EXIT_CLEAN",
    "EXIT_LEAKING",
    "EXIT_UNKNOWN",
    "build_report",
    "exit_status",
    "format_duration",
    "format_summary",
    "write_report",
]

EXIT_CLEAN: Final = 0
EXIT_UNKNOWN: Final = 1
EXIT_LEAKING: Final = 3

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


def build_report(record: RunRecord) -> dict[str, Any]:
    """The JSON-ready report of one run."""
    o = record.options
    failed = record.failed_seqs
    last = record.published
    per_connection = [
        {
            "delivered": ledger.delivered,
            "lost": ledger.lost(failed),
            "undelivered": ledger.undelivered(last, failed),
            "duplicated": ledger.duplicated,
            "gaps": ledger.gaps(failed),
            "connects": ledger.connects,
        }
        for ledger in record.ledgers
    ]
    delivered = [row["delivered"] for row in per_connection]
    lost = sum(row["lost"] for row in per_connection)
    undelivered = sum(row["undelivered"] for row in per_connection)
    duplicated = sum(row["duplicated"] for row in per_connection)
    steady = record.steady_seconds
    return {
        "url": o.url,
        "started_at": datetime.fromtimestamp(record.started_at, UTC).isoformat(),
        "options": {
            key: (value if key != "drop" else [method.value for method in value])
            for key, value in asdict(o).items()
        },
        "phases": {
            "ramp": record.ramp_seconds,
            "steady": steady,
            "drain": record.drain_seconds,
            "is_drained": record.is_drained,
        },
        "connections": {
            "target": o.connections,
            "peak": record.peak_connections,
            "connects": record.connects,
            "reconnects": record.reconnects,
            "connect_time": record.connect_time.summary(),
        },
        "events": {
            "published": record.published,
            "published_ok": record.published_ok,
            "publish_failed": len(failed),
            "publish_time": record.publish_latency.summary(),
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
        },
        "latency": record.latency.summary(),
        "churn": {
            "rate": o.churn,
            "drops": dict(record.drops),
            "gaps": sum(row["gaps"] for row in per_connection),
        },
        "errors": {
            "total": sum(record.errors.values()),
            "by_kind": dict(record.errors),
            "examples": dict(record.error_examples),
            "stats_failures": record.stats_failures,
        },
        "server": {
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
        },
        "loadtest_max_rss_kib": record.max_rss_kib,
        "timeline": [asdict(sample) for sample in record.samples],
        "per_connection": per_connection,
    }


def _verdict(record: RunRecord) -> str:
    if record.clean_seconds is not None:
        return "clean"
    if record.subscribers_after is None:
        return "unknown"
    return "leaking"


def exit_status(report: dict[str, Any]) -> int:
    """0 for a clean server, 3 for a leaking one, 1 when the verdict is unknown."""
    verdict = report["server"]["verdict"]
    return {"clean": EXIT_CLEAN, "leaking": EXIT_LEAKING}.get(verdict, EXIT_UNKNOWN)


def write_report(report: dict[str, Any], path: Path) -> None:
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


def _percentiles(summary: dict[str, float]) -> str:
    if not summary["count"]:
        return "no samples"
    return "   ".join(
        f"{name} {format_duration(summary[name])}" for name in ("p50", "p90", "p99", "max")
    )


def _server_line(server: dict[str, Any]) -> str:
    before = f"subscribers {server['baseline_subscribers']:,} before"
    at_close = server["subscribers_at_close"]
    if at_close is not None:
        before += f", {at_close:,} at the close"
    if server["verdict"] == "clean":
        return f"{before}; back in {format_duration(server['clean_seconds'])}: CLEAN"
    if server["verdict"] == "unknown":
        return f"{before}; /stats did not answer after the close: UNKNOWN"
    return (
        f"{before}; still {server['subscribers_after']:,} after "
        f"{server['clean_timeout']:g} s: LEAKING ({server['ghosts']:,} ghost subscribers)"
    )


def format_summary(report: dict[str, Any]) -> str:
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
        (
            "published",
            f"{events['published']:,} events ({rate:.1f}/s), {events['publish_failed']:,} failed"
            f"; POST p50 {format_duration(events['publish_time']['p50'])}, "
            f"max {format_duration(events['publish_time']['max'])}",
        ),
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
    width = max(len(name) for name, _ in rows)
    lines = [f"trio-sse loadtest {report['url']}"]
    lines += [f"  {name:<{width}}  {text}" for name, text in rows]
    return "\n".join(lines) + "\n"
