"""`trio-sse loadtest`: the pure parts one by one, then whole runs against real servers.

Whole runs are kept to a few hundred connections and a few seconds; the 10,000-
connection run is a demonstration (`nox -s loadtest`), not a test.
"""

from __future__ import annotations

import importlib.util
import io
import json
import resource
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.test_cli import serve_process
from tests.wire import running_server
from trio_sse import LoadTestError, MemoryBroker, ProtocolError, Subscription
from trio_sse.cli._loadtest import parse_drop
from trio_sse.loadtest import (
    DropMethod,
    LoadTestOptions,
    RunRecord,
    Sample,
    build_report,
    check_chart_path,
    exit_status,
    format_summary,
    run_loadtest,
)
from trio_sse.loadtest._chart import render_html
from trio_sse.loadtest._connection import ErrorKind
from trio_sse.loadtest._http import Exchange, parse_url
from trio_sse.loadtest._ledger import Ledger
from trio_sse.loadtest._progress import Progress, format_progress
from trio_sse.loadtest._record import Phase
from trio_sse.loadtest._report import format_duration
from trio_sse.loadtest._stats import Histogram

LOADTEST = [sys.executable, "-m", "trio_sse.cli", "loadtest"]

# Whole runs: ramp, a short steady phase, drain, close and the clean check.
RUN_TIMEOUT = 60.0


# -- HTTP framing -------------------------------------------------------------------


def _exchange(method: str = "GET") -> Exchange:
    exchange = Exchange()
    exchange.request(method, parse_url("http://127.0.0.1:1/events/a"))
    return exchange


def _feed(exchange: Exchange, data: bytes, *, is_byte_by_byte: bool) -> bytes:
    pieces = [data[i : i + 1] for i in range(len(data))] if is_byte_by_byte else [data]
    return b"".join(exchange.feed(piece) for piece in pieces)


@pytest.mark.parametrize("is_byte_by_byte", [False, True])
def test_exchange_reads_the_head_then_the_body(is_byte_by_byte: bool) -> None:
    exchange = _exchange()
    head = (
        b"HTTP/1.1 200 \r\ncontent-type: text/event-stream; charset=utf-8\r\n"
        b"Transfer-Encoding: chunked\r\nVia: a\r\nVia: b\r\n\r\n"
    )
    assert _feed(exchange, head, is_byte_by_byte=is_byte_by_byte) == b""
    assert exchange.head is not None
    assert (exchange.head.status, exchange.head.reason) == (200, "")
    assert exchange.head.content_type == "text/event-stream"
    assert exchange.head.headers["via"] == "a, b"
    assert _feed(exchange, CHUNKED, is_byte_by_byte=is_byte_by_byte) == (
        b"retry: 3000\n\n: stream open\n\ndata: x\n"
    )
    assert exchange.is_done
    assert exchange.is_reusable


def test_exchange_waits_for_the_blank_line() -> None:
    exchange = _exchange()
    exchange.feed(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n")
    assert exchange.head is None
    exchange.feed(b"\r\n")
    assert exchange.head is not None
    assert (exchange.head.status, exchange.head.reason) == (404, "Not Found")
    assert exchange.is_done


@pytest.mark.parametrize(
    "data",
    [
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"x: y\r\n" * 5000,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\n",
    ],
)
def test_exchange_refuses_garbage(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        _exchange().feed(data)


CHUNKED = b"7\r\nretry: \r\n1a;ext=1\r\n3000\n\n: stream open\n\ndata:\r\n3\r\n x\n\r\n0\r\n\r\n"


def test_exchange_follows_rfc_9112_framing() -> None:
    length = _exchange("POST")
    assert length.feed(b"HTTP/1.1 202 Accepted\r\nContent-Length: 4\r\n\r\n{}{}extra") == b"{}{}"
    assert length.is_done
    until_close = _exchange()
    assert until_close.feed(b"HTTP/1.0 200 OK\r\n\r\ndata: a\n") == b"data: a\n"
    assert not until_close.is_done
    assert until_close.feed(b"") == b""
    assert until_close.is_done
    assert not until_close.is_reusable
    cut = _exchange()
    cut.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc")
    with pytest.raises(ProtocolError):
        cut.feed(b"")


def test_parse_url_and_the_request() -> None:
    target = parse_url("http://127.0.0.1:8000/events/load?x=1")
    assert (target.host, target.port, target.path) == ("127.0.0.1", 8000, "/events/load?x=1")
    assert parse_url("http://example.com").port == 80
    request = Exchange().request("POST", target, headers=[("A", "b")], body=b"{}")
    assert request == (
        b"POST /events/load?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nA: b\r\n"
        b"Content-Length: 2\r\n\r\n{}"
    )
    for bad in ("https://x/events/a", "http:///events/a", "ftp://x/", "http://x:99999/"):
        with pytest.raises(ValueError, match=r"http://|host|port"):
            parse_url(bad)


# -- statistics and accounting ------------------------------------------------------


def test_histogram_percentiles_are_within_one_percent() -> None:
    samples = [i / 10_000 for i in range(1, 10_001)]  # 0.1 ms .. 1 s, uniform
    histogram = Histogram.of(samples)
    for p in (50, 90, 99):
        exact = samples[int(len(samples) * p / 100) - 1]
        assert abs(histogram.percentile(p) - exact) / exact < 0.011
    assert histogram.percentile(100) == histogram.max == 1.0
    assert histogram.count == 10_000
    assert len(histogram.buckets) < 1000
    other = Histogram.of([2.0])
    histogram.merge(other)
    assert histogram.max == 2.0
    assert Histogram().percentile(50) == 0.0
    with pytest.raises(ValueError, match="percentile"):
        histogram.percentile(0)


def test_ledger_counts_delivered_lost_duplicated_and_gaps() -> None:
    ledger = Ledger()
    ledger.start_stream(2, is_resume=False)  # events 1 and 2 may or may not come
    for seq in (2, 3, 5, 4, 4, 8):  # 4 late (out of order), 4 again, 6 and 7 missing
        ledger.receive(seq)
    assert (ledger.delivered, ledger.duplicated) == (5, 1)
    assert ledger.missing(10) == [6, 7, 9, 10]
    assert (ledger.lost(), ledger.undelivered(10), ledger.gaps()) == (2, 2, 1)
    assert ledger.undelivered(10, failed={9}) == 1
    assert (ledger.lost(failed={6}), ledger.gaps(failed={6})) == (1, 1)
    assert not ledger.has_caught_up(8)
    # A resume replays 6 and 7 (a duplicate 8 too), then goes live.
    ledger.start_stream(10, is_resume=True)
    assert [ledger.receive(seq) for seq in (6, 7, 8, 9, 10, 11)] == [False] * 5 + [True]
    assert ledger.has_caught_up(11)
    assert (ledger.delivered, ledger.duplicated, ledger.replayed) == (10, 2, 6)
    assert ledger.connects == 2


def test_ledger_restarts_a_subscriber_that_never_had_an_id_to_resume_from() -> None:
    ledger = Ledger()
    ledger.start_stream(3, is_resume=False)
    ledger.start_stream(6, is_resume=False)  # dropped before any event: no Last-Event-ID
    ledger.receive(7)
    assert ledger.missing(7) == []
    # Once it has events, a resume without an id does lose what it missed.
    ledger.start_stream(9, is_resume=False)
    ledger.receive(10)
    assert ledger.missing(10) == [8, 9]


def test_parse_drop_expands_mix_and_refuses_unknown_methods() -> None:
    assert parse_drop("mix") == (DropMethod.FIN, DropMethod.RST, DropMethod.STALL)
    assert parse_drop("rst, stall,rst") == (DropMethod.RST, DropMethod.STALL)
    with pytest.raises(ValueError, match=r"unknown drop method 'kill'"):
        parse_drop("fin,kill")


@pytest.mark.parametrize(
    ("field", "value"),
    [("connections", 0), ("ramp", 0.0), ("payload", -1), ("drop", ()), ("url", "https://x/")],
)
def test_options_refuse_values_out_of_range(field: str, value: Any) -> None:
    options: dict[str, Any] = {"url": "http://127.0.0.1:1/events/a", field: value}
    with pytest.raises(ValueError, match=field if field != "url" else "http://"):
        LoadTestOptions(**options)


# -- report, progress and chart -----------------------------------------------------


def _record(*, clean_seconds: float | None, subscribers_after: int | None) -> RunRecord:
    options = LoadTestOptions("http://127.0.0.1:1/events/a", connections=2, churn=1.0)
    ledgers = [Ledger(), Ledger()]
    for ledger in ledgers:
        ledger.start_stream(0, is_resume=False)
    for seq in (1, 2, 3):
        ledgers[0].receive(seq)
    ledgers[1].receive(1)
    ledgers[1].receive(1)
    samples = [
        Sample(1.0, Phase.RAMP, 2, 0, 4, 4.0, 0.001, 0.002, 0.003, 0, 0),
        Sample(2.0, Phase.STEADY, 1, 2, 2, 2.0, None, None, None, 1, 1),
        Sample(3.0, Phase.CLEAN, 0, 0, 0, 0.0, 0.0015, 0.0015, 0.0015, 0, 0),
    ]
    return RunRecord(
        options=options,
        started_at=0.0,
        ledgers=ledgers,
        latency=Histogram.of([0.001, 0.002, 0.004]),
        connect_time=Histogram.of([0.01, 0.02]),
        publish_latency=Histogram.of([0.003]),
        errors=Counter({ErrorKind.RESET: 1}),
        error_examples={ErrorKind.RESET: "connection reset by the server"},
        drops=Counter({DropMethod.RST: 1}),
        samples=samples,
        published=3,
        published_ok=3,
        connects=2,
        subscribers_after=subscribers_after,
        clean_seconds=clean_seconds,
    )


def test_report_counts_and_summary_table() -> None:
    report = build_report(_record(clean_seconds=0.05, subscribers_after=0))
    events = report["events"]
    # Subscriber 0 got 1, 2, 3; subscriber 1 got 1 twice: 2 and 3 never came.
    assert (events["delivered"], events["undelivered"], events["duplicated"]) == (4, 2, 1)
    assert (events["lost"], report["churn"]["gaps"]) == (0, 0)
    assert report["server"]["verdict"] == "clean"
    assert exit_status(report) == 0
    json.dumps(report)  # JSON-ready as it is
    summary = format_summary(report)
    assert "lost 0; undelivered at the close 2; duplicated 1" in summary
    assert "reset 1 (reset by the server)" in summary
    assert "back in 50.0 ms: CLEAN" in summary


def test_report_verdicts_and_exit_statuses() -> None:
    leaking = build_report(_record(clean_seconds=None, subscribers_after=7))
    assert (leaking["server"]["verdict"], leaking["server"]["ghosts"]) == ("leaking", 7)
    assert exit_status(leaking) == 3
    assert "LEAKING (7 ghost subscribers)" in format_summary(leaking)
    unknown = build_report(_record(clean_seconds=None, subscribers_after=None))
    assert exit_status(unknown) == 1
    assert "UNKNOWN" in format_summary(unknown)


def test_format_duration_and_progress_line() -> None:
    assert [format_duration(s) for s in (None, 0.0004, 0.0123, 2.5)] == [
        "-",
        "400 µs",
        "12.3 ms",
        "2.50 s",
    ]
    record = _record(clean_seconds=0.05, subscribers_after=0)
    line = format_progress(record.samples[1], record, 2)
    assert "steady conns 1/2 (server 2)" in line
    assert "p50 - p99 -" in line
    assert "errors 1  drops 1" in line


def test_progress_redraws_one_line_and_ends_it() -> None:
    record = _record(clean_seconds=0.05, subscribers_after=0)
    out = io.StringIO()
    progress = Progress(out, connections=2)
    progress.finish()
    assert out.getvalue() == ""
    for sample in record.samples:
        progress(sample, record)
    progress.finish()
    lines = out.getvalue().split("\r\x1b[K")
    assert len(lines) == 4
    assert lines[1].startswith("    1 s ramp   conns 2/2")
    assert lines[3].endswith("drops 1\n")


def test_chart_is_self_contained_svg() -> None:
    page = render_html(build_report(_record(clean_seconds=0.05, subscribers_after=0)))
    assert page.count("<svg ") == 3
    assert "<polyline" in page
    assert "<script" not in page
    assert "http://www.w3.org/2000/svg" in page
    assert "://" not in page.replace("http://www.w3.org/2000/svg", "").replace(
        "http://127.0.0.1:1", ""
    )


def test_chart_path_is_checked_before_the_run(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.html or \.png"):
        check_chart_path(tmp_path / "chart.svgz")
    check_chart_path(tmp_path / "chart.html")
    if importlib.util.find_spec("matplotlib") is None:
        with pytest.raises(ValueError, match="needs matplotlib"):
            check_chart_path(tmp_path / "chart.png")


# -- whole runs ---------------------------------------------------------------------


class LeakyBroker(MemoryBroker):
    """A deliberately broken broker: one subscription in ``every`` is never released.

    The stream ends and its connection closes, but the subscription stays registered:
    a ghost that ``/stats`` keeps counting, as a server that missed a disconnect would.
    """

    def __init__(self, *, every: int) -> None:
        super().__init__()
        self._every = every
        self._subscribes = 0
        self._ghosts = AsyncExitStack()
        self.ghosts = 0

    @asynccontextmanager
    async def subscribe(
        self,
        topic: str,
        *,
        last_event_id: str | None = None,
        subject: str | None = None,
        backlog: int = 0,
    ) -> AsyncIterator[Subscription]:
        self._subscribes += 1
        inner = super().subscribe(
            topic, last_event_id=last_event_id, subject=subject, backlog=backlog
        )
        if self._subscribes % self._every:
            async with inner as subscription:
                yield subscription
            return
        # The leak: entered on a stack that only the broker's close unwinds.
        subscription = await self._ghosts.enter_async_context(inner)
        self.ghosts += 1
        yield subscription

    async def aclose(self) -> None:
        await super().aclose()
        await self._ghosts.aclose()


def _options(url: str, **overrides: Any) -> LoadTestOptions:
    options: dict[str, Any] = {
        "connections": 200,
        "duration": 1.5,
        "ramp": 1000.0,
        "publish_rate": 5.0,
        "churn": 20.0,
        "stall_for": 0.5,
        "clean_timeout": 10.0,
    }
    options.update(overrides)
    return LoadTestOptions(url, **options)


@pytest.mark.slow
@pytest.mark.parametrize("method", list(DropMethod))
async def test_each_drop_method_resumes_without_loss_and_the_server_is_clean(
    method: DropMethod,
) -> None:
    async with running_server() as server:
        with trio.fail_after(RUN_TIMEOUT):
            record = await run_loadtest(_options(f"{server.url}/events/churn", drop=(method,)))
        report = build_report(record)
        assert server.broker.statistics().subscribers == 0
    assert report["errors"]["by_kind"] == {}
    assert report["connections"]["peak"] == 200
    assert report["churn"]["drops"][method.value] >= 10
    assert report["connections"]["reconnects"] >= report["churn"]["drops"][method.value]
    events = report["events"]
    assert events["published"] >= 5
    assert events["publish_failed"] == 0
    assert (events["lost"], events["undelivered"], events["duplicated"]) == (0, 0, 0)
    assert report["churn"]["gaps"] == 0
    assert events["replayed"] > 0  # resumes were replayed from history
    # Every subscriber got every event published after it first subscribed.
    assert report["phases"]["is_drained"]
    assert events["per_connection"]["delivered_max"] == events["published"]
    assert report["latency"]["count"] > 0
    assert report["server"]["verdict"] == "clean"
    assert exit_status(report) == 0


@pytest.mark.slow
async def test_stalled_sockets_are_ghosts_until_closed_and_the_server_still_cleans() -> None:
    async with running_server() as server:
        options = _options(
            f"{server.url}/events/stall", drop=(DropMethod.STALL,), stall_for=60.0, churn=40.0
        )
        with trio.fail_after(RUN_TIMEOUT):
            record = await run_loadtest(options)
    report = build_report(record)
    stalls = report["churn"]["drops"]["stall"]
    # Drained: every subscriber was connected. The stalled sockets were still open
    # (held for 60 s) when the run closed them: the server rightly counted them too.
    assert report["phases"]["is_drained"]
    assert report["server"]["subscribers_at_close"] == 200 + stalls
    assert report["server"]["verdict"] == "clean"
    assert report["events"]["lost"] == 0


@pytest.mark.slow
async def test_cli_against_trio_sse_serve_exits_0_and_writes_report_and_chart(
    tmp_path: Path,
) -> None:
    async with serve_process() as (_, (host, port)):
        command = [
            *LOADTEST,
            f"http://{host}:{port}/events/cli",
            *("--connections", "100", "--duration", "1", "--publish-rate", "5"),
            *("--churn", "20", "--drop", "mix", "--stall-for", "0.3"),
            *("--report", str(tmp_path / "r.json"), "--chart", str(tmp_path / "c.html")),
        ]
        with trio.fail_after(RUN_TIMEOUT):
            result = await trio.run_process(
                command, capture_stdout=True, capture_stderr=True, check=False
            )
    stdout, stderr = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, stdout + stderr
    assert "\r" not in stderr  # no live progress when stderr is not a terminal
    for row in ("connect time", "latency", "churn", "errors          none", "CLEAN"):
        assert row in stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["server"]["verdict"] == "clean"
    assert (report["events"]["lost"], report["events"]["undelivered"]) == (0, 0)
    assert len(report["per_connection"]) == 100
    assert "<svg " in (tmp_path / "c.html").read_text()


@pytest.mark.slow
async def test_cli_reports_a_leaky_server_as_leaking_and_exits_non_zero(tmp_path: Path) -> None:
    broker = LeakyBroker(every=10)
    async with running_server(broker=broker) as server:
        command = [
            *LOADTEST,
            f"{server.url}/events/leak",
            *("--connections", "100", "--duration", "1", "--churn", "20", "--drop", "fin,rst"),
            *("--clean-timeout", "4", "--report", str(tmp_path / "r.json")),
        ]
        with trio.fail_after(RUN_TIMEOUT):
            result = await trio.run_process(
                command, capture_stdout=True, capture_stderr=True, check=False
            )
        assert server.broker.statistics().subscribers == broker.ghosts
    stdout = result.stdout.decode()
    assert result.returncode == 3, stdout + result.stderr.decode()
    assert broker.ghosts >= 10
    assert f"LEAKING ({broker.ghosts} ghost subscribers)" in stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["server"]["verdict"] == "leaking"
    assert report["server"]["ghosts"] == broker.ghosts


@pytest.mark.slow
async def test_cli_refuses_a_server_without_a_subscriber_count() -> None:
    async with running_server() as server:
        command = [*LOADTEST, f"{server.url}/events/x", "--stats-url", f"{server.url}/healthz"]
        with trio.fail_after(RUN_TIMEOUT):
            result = await trio.run_process(
                command, capture_stdout=True, capture_stderr=True, check=False
            )
    assert result.returncode == 1
    assert 'is not JSON with a "subscribers" count' in result.stderr.decode()
    assert "Traceback" not in result.stderr.decode()


async def test_too_few_file_descriptors_is_a_clear_error() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard limit on open files here")
    options = LoadTestOptions("http://127.0.0.1:1/events/a", connections=hard + 1)
    with pytest.raises(LoadTestError, match=r"file descriptors.*Raise the hard limit"):
        await run_loadtest(options)


@pytest.mark.slow
def test_bad_cli_arguments_exit_2_with_a_message() -> None:
    result = subprocess.run(
        [*LOADTEST, "http://127.0.0.1:1/events/a", "--drop", "kill"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "unknown drop method 'kill'" in result.stderr


@pytest.mark.slow
async def test_serve_raises_its_own_open_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 1024:
        pytest.skip("the hard limit leaves nothing to raise")
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        # The child inherits the lowered soft limit.
        async with serve_process() as (process, _):
            limits = await trio.Path(f"/proc/{process.pid}/limits").read_text()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    (line,) = [line for line in limits.splitlines() if line.startswith("Max open files")]
    assert line.split()[3:5] == [str(hard), str(hard)]
