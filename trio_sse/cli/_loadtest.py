"""``trio-sse loadtest``: its options, then run, show it live, print the summary, write the files.

Live progress goes to stderr, one line redrawn each second, only when stderr is a
terminal and ``--quiet`` is not given. The summary table goes to stdout at the end,
then where ``--report`` and ``--chart`` were written.

Exit status, the first that applies:

* 3: the server kept ghost subscribers past ``--clean-timeout`` (``leaking``);
* 4: the run proves nothing: no stream ever opened, every publish was refused, or
  nothing was delivered (the reason in the summary and on stderr);
* 1: the run could not start, or the verdict source stopped answering (the verdict
  is unknown), with the reason on stderr;
* 5: a ``--max-*`` threshold was breached (named in the summary);
* 0: otherwise (``clean``);
* 2: bad usage; 130: Ctrl-C.

``trio-sse loadtest merge A.json B.json ... [--report OUT.json] [--chart OUT.html]``
merges the reports of one run made on several machines (each given the same
``--run-id``) into one report, with one summary and one exit status, by the same
rules; reports of another schema version or another run are refused (exit 2).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Final, TextIO

import trio

from ..errors import LoadTestError
from ..loadtest import (
    DropMethod,
    LoadTestOptions,
    PayloadForm,
    PublishFormat,
    Report,
    Thresholds,
    build_report,
    check_chart_path,
    exit_status,
    format_summary,
    run_loadtest,
    write_chart,
    write_report,
)
from ..loadtest._merge import MergeError, merge_reports
from ..loadtest._options import parse_source_addresses
from ..loadtest._progress import Progress
from ..loadtest._publisher import PAYLOAD_PLACEHOLDER
from ..loadtest._report import SCHEMA_VERSION, read_report

__all__ = [
    "DESCRIPTION",
    "configure",
    "loadtest",
    "merge_command",
    "parse_drop",
    "run",
]

DESCRIPTION: Final = (
    "Hold N SSE connections to URL, publish timestamped events to it, drop and "
    "resume connections, then check that the server's subscriber count (GET "
    "/stats by default) returns to its value from before the run. Prints a "
    "summary table. Exits 0 for a clean server, 3 for a leaking one, 4 for a run "
    "that proves nothing, 5 for a breached --max-* threshold, 1 on an error."
)


def parse_drop(text: str) -> tuple[DropMethod, ...]:
    """Parse ``--drop``: comma-separated ``fin``, ``rst``, ``stall``; ``mix`` is all three.

    Raises:
        ValueError: An unknown or empty method.
    """
    methods: list[DropMethod] = []
    for part in text.split(","):
        name = part.strip().lower()
        if name == "mix":
            methods += list(DropMethod)
            continue
        try:
            methods.append(DropMethod(name))
        except ValueError:
            raise ValueError(f"unknown drop method {name!r}: use fin, rst, stall or mix") from None
    return tuple(dict.fromkeys(methods))


def _number(
    kind: type[int] | type[float], minimum: float, *, is_strict: bool = False
) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (value > minimum if is_strict else value >= minimum):  # also rejects NaN
            raise argparse.ArgumentTypeError(
                f"must be {'>' if is_strict else '>='} {minimum:g}, got {text}"
            )
        return value

    return parse


def _drop_methods(text: str) -> tuple[DropMethod, ...]:
    try:
        return parse_drop(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _source_addresses(text: str) -> list[str]:
    try:
        return parse_source_addresses(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _header(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        raise argparse.ArgumentTypeError(f"expected 'Name: value', got {text!r}")
    return name.strip(), value.strip()


def configure(cmd: argparse.ArgumentParser) -> None:
    """Add the options of ``trio-sse loadtest`` to ``cmd``."""
    count = _number(int, 1)
    seconds = _number(float, 0)
    positive = _number(float, 0, is_strict=True)
    cmd.add_argument(
        "url",
        nargs="+",
        metavar="URL | merge REPORT.json",
        help="the stream, e.g. http://127.0.0.1:8000/events/load; or `merge A.json B.json "
        "...`: merge the reports of one run made on several machines (same --run-id) into "
        "one report and verdict (with --report, --chart)",
    )
    option = cmd.add_argument
    option("--connections", type=count, default=100, metavar="N", help="default: %(default)s")
    option(
        "--processes",
        type=_number(int, 1),
        default=1,
        metavar="N",
        help="split the connections over N worker processes (one core each); one "
        "publisher and one verdict, in this process (1)",
    )
    option(
        "--source-address",
        type=_source_addresses,
        action="append",
        default=[],
        metavar="IP|IP-IP",
        help="bind connections to these local addresses, in turn (e.g. 127.0.0.2-9 on "
        "loopback: each address has its own ~28k ephemeral ports); repeatable",
    )
    option(
        "--run-id",
        metavar="ID",
        help="this run's identity in the report (default: random); give several machines' "
        "runs the same one to merge their reports",
    )
    option("--duration", type=seconds, default=10.0, metavar="S", help="after the ramp (10)")
    option("--ramp", type=positive, default=500.0, metavar="R", help="connects/s (500)")
    option("--churn", type=seconds, default=0.0, metavar="R", help="drops per second (0)")
    option(
        "--drop",
        type=_drop_methods,
        default="fin",
        metavar="fin,rst,stall,mix",
        help="how churned connections are dropped, in turn; mix = all three (fin)",
    )
    option(
        "--stall-for",
        type=seconds,
        default=5.0,
        metavar="S",
        help="how long a stalled socket is held open, unread, before it is closed (5)",
    )
    option(
        "--drain-timeout",
        type=seconds,
        default=5.0,
        metavar="S",
        help="how long to wait after the last publish for every event to arrive (5)",
    )
    option(
        "--clean-timeout",
        type=positive,
        default=30.0,
        metavar="S",
        help="how long the server gets, after the close, to drop back to its subscriber "
        "count from before the run; past it the server is leaking (30)",
    )
    option(
        "--connect-timeout",
        type=positive,
        default=30.0,
        metavar="S",
        help="from connect() to the response head (30)",
    )
    option(
        "--max-connecting",
        type=count,
        default=200,
        metavar="N",
        help="connects in flight at most, so a ramp paces itself to the server (200)",
    )
    _add_publish_options(cmd)
    _add_source_options(cmd)
    _add_threshold_options(cmd)
    option("--report", type=Path, metavar="OUT.json", help="write the JSON report")
    option("--chart", type=Path, metavar="OUT.html|png", help="draw connections and latency")
    option("--quiet", action="store_true", help="no live progress (also off if not a TTY)")


def _add_publish_options(cmd: argparse.ArgumentParser) -> None:
    group = cmd.add_argument_group("publishing (any publish contract)")
    option = group.add_argument
    option("--publish-rate", type=_number(float, 0), default=1.0, metavar="E", help="events/s (1)")
    option("--publish-url", metavar="URL", help="where events are POSTed (default: URL)")
    option(
        "--publish-timeout",
        type=_number(float, 0, is_strict=True),
        default=10.0,
        metavar="S",
        help="a publish unanswered this long counts as failed; the server may still make it (10)",
    )
    option(
        "--payload", type=_number(int, 0), default=64, metavar="BYTES", help="event data size (64)"
    )
    option(
        "--publish-format",
        type=PublishFormat,
        choices=list(PublishFormat),
        default=PublishFormat.JSON,
        metavar="json|form|text",
        help="the POST body's content type: application/json, "
        "application/x-www-form-urlencoded or text/plain (json)",
    )
    option(
        "--publish-body",
        metavar="TEMPLATE",
        help=f"the POST body, with {PAYLOAD_PLACEHOLDER} where the payload goes; default: "
        f"'{{\"data\": {PAYLOAD_PLACEHOLDER}}}' (json), 'data={PAYLOAD_PLACEHOLDER}' "
        f"(form), '{PAYLOAD_PLACEHOLDER}' (text)",
    )
    option(
        "--payload-as",
        type=PayloadForm,
        choices=list(PayloadForm),
        default=PayloadForm.OBJECT,
        metavar="object|string",
        help="in a JSON body, the payload as a JSON object or as a string holding its "
        "JSON text (object)",
    )
    option(
        "--publish-header",
        type=_header,
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="an extra header on every publish, e.g. 'Authorization: Bearer T'; repeatable",
    )
    option(
        "--no-publish",
        action="store_false",
        dest="is_publishing",
        help="publish nothing: the server emits its own events; loss and order are judged "
        "from their ids (an integer, or one at the end: news-42)",
    )
    option(
        "--timestamp-path",
        metavar="PATH",
        help="with --no-publish: the JSON path in the event data to the time it was sent "
        "(Unix s/ms/µs/ns, or ISO 8601), for latency",
    )


def _add_source_options(cmd: argparse.ArgumentParser) -> None:
    group = cmd.add_argument_group(
        "the leak verdict's source (default: GET /stats on URL's server, JSON subscribers)"
    )
    option = group.add_argument
    option("--stats-url", metavar="URL", help="a JSON count (default: /stats on URL's server)")
    option(
        "--stats-path",
        default="subscribers",
        metavar="PATH",
        help="the JSON path to the count in --stats-url's answer, e.g. stats.open (subscribers)",
    )
    option(
        "--metrics-gauge",
        metavar='NAME[{LABEL="V"}]',
        help="read the count from this Prometheus gauge (its samples summed) instead",
    )
    option("--metrics-url", metavar="URL", help="default: /metrics on URL's server")
    option(
        "--server-pid",
        type=_number(int, 1),
        metavar="PID",
        help="read the count from this local process instead: its open sockets on URL's "
        "port, from /proc (its RSS is reported too)",
    )


_THRESHOLDS = (
    ("--max-p99", "max_p99", "S", "delivery latency p99"),
    ("--max-lost", "max_lost", "N", "events lost (a later one arrived)"),
    ("--max-undelivered", "max_undelivered", "N", "events still missing at the close"),
    ("--max-duplicated", "max_duplicated", "N", "events received twice"),
    ("--max-errors", "max_errors", "N", "errors of any kind, publish failures included"),
    ("--max-publish-failures", "max_publish_failures", "N", "publishes refused or unanswered"),
    ("--max-connect-time", "max_connect_time", "S", "connect-to-response-head p99"),
    ("--max-reconnect-time", "max_reconnect_time", "S", "drop-to-resumed-stream p99"),
    ("--max-cleanup-time", "max_cleanup_time", "S", "close-to-count-back-at-baseline"),
)


def _add_threshold_options(cmd: argparse.ArgumentParser) -> None:
    group = cmd.add_argument_group("thresholds for CI (a breach exits 5; none by default)")
    for flag, dest, metavar, what in _THRESHOLDS:
        kind = int if metavar == "N" else float
        group.add_argument(
            flag, dest=dest, type=_number(kind, 0), metavar=metavar, help=f"at most: {what}"
        )


def run(args: argparse.Namespace) -> int:
    """Run ``trio-sse loadtest`` with the options :func:`configure` added; return its status."""
    if args.url[0] == "merge":
        return merge_command(
            [Path(name) for name in args.url[1:]],
            out=sys.stdout,
            err=sys.stderr,
            report_path=args.report,
            chart_path=args.chart,
        )
    if len(args.url) > 1:
        sys.stderr.write(
            f"trio-sse loadtest: one URL, got {len(args.url)}: {' '.join(args.url)} "
            "(to merge reports: trio-sse loadtest merge A.json B.json ...)\n"
        )
        return 2
    try:
        thresholds = Thresholds(**{dest: getattr(args, dest) for _, dest, _, _ in _THRESHOLDS})
        options = LoadTestOptions(
            url=args.url[0],
            connections=int(args.connections),
            processes=int(args.processes),
            source_addresses=tuple(a for group in args.source_address for a in group),
            run_id=args.run_id,
            duration=args.duration,
            ramp=args.ramp,
            publish_rate=args.publish_rate,
            publish_url=args.publish_url,
            payload=int(args.payload),
            churn=args.churn,
            drop=args.drop,
            stall_for=args.stall_for,
            drain_timeout=args.drain_timeout,
            clean_timeout=args.clean_timeout,
            connect_timeout=args.connect_timeout,
            publish_timeout=args.publish_timeout,
            max_connecting=int(args.max_connecting),
            stats_url=args.stats_url,
            is_publishing=args.is_publishing,
            publish_format=args.publish_format,
            publish_body=args.publish_body,
            payload_as=args.payload_as,
            publish_headers=tuple(args.publish_header),
            timestamp_path=args.timestamp_path,
            stats_path=args.stats_path,
            metrics_url=args.metrics_url,
            metrics_gauge=args.metrics_gauge,
            server_pid=None if args.server_pid is None else int(args.server_pid),
            thresholds=thresholds,
        )
    except ValueError as exc:
        sys.stderr.write(f"trio-sse loadtest: {exc}\n")
        return 1
    try:
        return loadtest(
            options,
            out=sys.stdout,
            err=sys.stderr,
            report_path=args.report,
            chart_path=args.chart,
            is_quiet=args.quiet,
        )
    except KeyboardInterrupt:
        return 130


def loadtest(
    options: LoadTestOptions,
    *,
    out: TextIO,
    err: TextIO,
    report_path: Path | None = None,
    chart_path: Path | None = None,
    is_quiet: bool = False,
) -> int:
    """Run ``options``; print progress to ``err`` (a terminal only) and the summary to ``out``.

    Returns:
        The exit status (see the module docs).
    """
    # Refuse now what would fail after the run, not after minutes of load.
    for path in (report_path, chart_path):
        if path is not None and not path.parent.is_dir():
            err.write(f"trio-sse loadtest: no directory {str(path.parent)!r} for {str(path)!r}\n")
            return 1
    if chart_path is not None:
        try:
            check_chart_path(chart_path)
        except ValueError as exc:
            err.write(f"trio-sse loadtest: {exc}\n")
            return 1
    progress = (
        None if is_quiet or not err.isatty() else Progress(err, connections=options.connections)
    )
    try:
        record = trio.run(lambda: run_loadtest(options, on_sample=progress))
    except LoadTestError as exc:
        err.write(f"trio-sse loadtest: {exc}\n")
        return 1
    finally:
        if progress is not None:
            progress.finish()
    report = build_report(record)
    out.write(format_summary(report))
    status = _write_outputs(
        report, out=out, err=err, report_path=report_path, chart_path=chart_path
    )
    if status:
        return status
    _tell_why(report, err)
    return exit_status(report)


def merge_command(
    paths: list[Path],
    *,
    out: TextIO,
    err: TextIO,
    report_path: Path | None = None,
    chart_path: Path | None = None,
) -> int:
    """``trio-sse loadtest merge``: one report of several machines' reports of one run.

    Returns:
        The merged report's exit status (as a run's), or 2 for reports that cannot be
        merged (unreadable, another schema version, another run, one given twice).
    """
    if chart_path is not None:
        try:
            check_chart_path(chart_path)
        except ValueError as exc:
            err.write(f"trio-sse loadtest merge: {exc}\n")
            return 2
    try:
        reports = [read_report(path) for path in paths]
        merged = merge_reports(reports, SCHEMA_VERSION)
    except OSError as exc:
        err.write(f"trio-sse loadtest merge: cannot read {exc.filename}: {exc.strerror}\n")
        return 2
    except (MergeError, ValueError) as exc:
        err.write(f"trio-sse loadtest merge: {exc}\n")
        return 2
    out.write(format_summary(merged))
    status = _write_outputs(
        merged, out=out, err=err, report_path=report_path, chart_path=chart_path
    )
    if status:
        return status
    _tell_why(merged, err)
    return exit_status(merged)


def _write_outputs(
    report: Report, *, out: TextIO, err: TextIO, report_path: Path | None, chart_path: Path | None
) -> int:
    try:
        if report_path is not None:
            write_report(report, report_path)
            out.write(f"report written to {report_path}\n")
        if chart_path is not None:
            write_chart(report, chart_path)
            out.write(f"chart written to {chart_path}\n")
    except OSError as exc:
        err.write(f"trio-sse loadtest: cannot write {exc.filename}: {exc.strerror}\n")
        return 1
    finally:
        out.flush()
    return 0


def _tell_why(report: Report, err: TextIO) -> None:
    """One line on stderr per reason the run proves nothing or the verdict is unknown."""
    for problem in report["run"]["problems"]:
        err.write(f"trio-sse loadtest: the run proves nothing: {problem}\n")
    if report["server"]["verdict"] == "unknown":
        why = report["server"]["source_error"] or "the count could not be read"
        err.write(f"trio-sse loadtest: the verdict is unknown: {why}\n")
