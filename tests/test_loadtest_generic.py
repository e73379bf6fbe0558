"""`trio-sse loadtest` beyond our own server's contract: runs that prove nothing, any
publish contract, verdict sources other than `/stats`, CI thresholds, the report schema.

Whole runs over real sockets, kept to a few dozen connections and about a second.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path

import httpx
import pytest
import quart
import trio
from quart_trio import QuartTrio

from tests.test_cli import serve_process
from tests.test_loadtest import LeakyBroker
from tests.wire import running_server
from trio_sse import Broker, MemoryBroker, ServerSentEvent
from trio_sse.app import create_app
from trio_sse.loadtest import (
    EXIT_BREACHED,
    EXIT_CLEAN,
    EXIT_INCONCLUSIVE,
    EXIT_LEAKING,
    LoadTestOptions,
    PayloadForm,
    PublishFormat,
    RunRecord,
    Thresholds,
    build_report,
    exit_status,
)
from trio_sse.loadtest._ids import parse_seq, parse_timestamp
from trio_sse.loadtest._ledger import Ledger
from trio_sse.loadtest._publisher import encode_body
from trio_sse.loadtest._sources import (
    count_server_sockets,
    parse_gauge,
    parse_json_path,
    read_gauge,
    read_json_path,
)
from trio_sse.loadtest._stats import Histogram

LOADTEST = [sys.executable, "-m", "trio_sse.cli", "loadtest"]
RUN_TIMEOUT = 60.0
# A short run: enough to publish a few events and churn a few connections.
SHORT = [
    *("--connections", "20", "--duration", "1", "--publish-rate", "5"),
    *("--drain-timeout", "1", "--clean-timeout", "5", "--quiet"),
]


async def _loadtest(*args: str) -> tuple[int, str, str]:
    with trio.fail_after(RUN_TIMEOUT):
        result = await trio.run_process(
            [*LOADTEST, *args], capture_stdout=True, capture_stderr=True, check=False
        )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


# -- a run that proves nothing fails ------------------------------------------------


@pytest.mark.slow
async def test_every_publish_refused_exits_4_with_the_reason() -> None:
    async with serve_process("--publish-token", "s3cret-token-0123456789") as (_, (host, port)):
        code, out, err = await _loadtest(f"http://{host}:{port}/events/refused", *SHORT)
    assert code == 4, out + err
    assert "every publish was refused" in out
    assert "401" in out
    assert "INCONCLUSIVE" in out


@pytest.mark.slow
async def test_no_stream_ever_opened_exits_4_with_the_reason(tmp_path: Path) -> None:
    async with running_server() as server:
        code, out, err = await _loadtest(
            f"{server.url}/no/such/stream",
            *SHORT,
            *("--stats-url", f"{server.url}/stats", "--report", str(tmp_path / "r.json")),
        )
    assert code == 4, out + err
    assert "no stream ever opened" in out
    assert "404" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["run"]["is_conclusive"] is False
    assert any("no stream ever opened" in problem for problem in report["run"]["problems"])


@pytest.mark.slow
async def test_nothing_delivered_exits_4_with_the_reason() -> None:
    async with running_server() as server:
        # Events go to another topic: every publish succeeds, no subscriber gets one.
        code, out, err = await _loadtest(
            f"{server.url}/events/heard",
            *SHORT,
            *("--publish-url", f"{server.url}/events/elsewhere"),
        )
    assert code == 4, out + err
    assert "nothing was delivered" in out


@pytest.mark.slow
async def test_nothing_published_exits_4_with_the_reason() -> None:
    """A steady phase shorter than one publish interval publishes nothing: no verdict."""
    async with running_server() as server:
        code, out, err = await _loadtest(
            f"{server.url}/events/quiet",
            *("--connections", "5", "--duration", "0.2", "--publish-rate", "1"),
            "--quiet",
        )
    assert code == 4, out + err
    assert "nothing was published" in out


@pytest.mark.slow
async def test_an_unreadable_verdict_source_exits_1_with_the_reason() -> None:
    async with running_server() as server:
        code, out, err = await _loadtest(
            f"{server.url}/events/x", *SHORT, "--stats-url", f"{server.url}/metrics"
        )
    assert code == 1, out + err
    assert "is not JSON" in err
    assert "Traceback" not in err


# -- any publish contract -----------------------------------------------------------


def _other_contracts_app(broker: MemoryBroker) -> QuartTrio:
    """Our app, plus the contracts of other servers: a string-only JSON ``data``
    (sse-starlette and Go tutorials), a form, a raw text body; and a JSON count at
    another path, as a server without our ``/stats`` would have.
    """
    app = create_app(broker=broker)

    @app.before_request
    async def strings_only() -> quart.ResponseReturnValue | None:
        request = quart.request
        if request.method == "POST" and request.path.startswith("/events/"):
            body = await request.get_json(silent=True)
            if not isinstance(body, dict) or not isinstance(body.get("data"), str):
                return {"error": '"data" must be a string'}, 400
        return None

    @app.post("/form/<topic>")
    async def form(topic: str) -> quart.ResponseReturnValue:
        fields = await quart.request.form
        await broker.publish(topic, ServerSentEvent(fields["data"]))
        return "", 204

    @app.post("/text/<topic>")
    async def text(topic: str) -> quart.ResponseReturnValue:
        if quart.request.mimetype != "text/plain":
            return {"error": "text/plain only"}, 415
        body = await quart.request.get_data(as_text=True)
        await broker.publish(topic, ServerSentEvent(str(body)))
        return "", 201

    @app.get("/health")
    async def health() -> quart.ResponseReturnValue:
        return {"server": {"streams": broker.statistics().subscribers, "ok": True}}

    return app


@asynccontextmanager
async def _contracts_server(
    broker: MemoryBroker | None = None,
) -> AsyncIterator[str]:
    broker = broker if broker is not None else MemoryBroker()
    async with running_server(broker=broker, app=_other_contracts_app(broker)) as server:
        yield server.url


async def _report_of(*args: str, tmp_path: Path) -> tuple[int, str, dict[str, object]]:
    path = tmp_path / "r.json"
    code, out, err = await _loadtest(*args, "--report", str(path))
    assert "Traceback" not in err, err
    return code, out + err, json.loads(path.read_text()) if path.exists() else {}


@pytest.mark.slow
async def test_payload_as_string_meets_a_server_that_takes_data_as_a_string(
    tmp_path: Path,
) -> None:
    async with _contracts_server() as url:
        refused, out, _ = await _report_of(f"{url}/events/s", *SHORT, tmp_path=tmp_path)
        assert refused == 4, out  # the run: 400 on every publish
        assert "400" in out
        assert "must be a string" in out
        code, out, report = await _report_of(
            f"{url}/events/s", *SHORT, "--churn", "10", "--payload-as", "string", tmp_path=tmp_path
        )
    assert code == 0, out
    events = report["events"]
    assert isinstance(events, dict)
    assert events["published"] == events["published_ok"] > 0
    assert events["per_connection"]["delivered_max"] == events["published"]
    assert (events["lost"], events["undelivered"]) == (0, 0)


@pytest.mark.slow
async def test_form_and_raw_text_bodies_reach_servers_that_take_them(tmp_path: Path) -> None:
    async with _contracts_server() as url:
        for form, path, body in (("form", "form", "data={payload}"), ("text", "text", "{payload}")):
            code, out, report = await _report_of(
                f"{url}/events/{form}",
                *SHORT,
                *("--publish-url", f"{url}/{path}/{form}", "--publish-format", form),
                *("--publish-body", body),
                tmp_path=tmp_path,
            )
            assert code == 0, out
            events = report["events"]
            assert isinstance(events, dict)
            assert events["published_ok"] == events["published"] > 0
            assert events["per_connection"]["delivered_min"] == events["published"]
            assert events["foreign"] == 0


def test_a_json_template_that_is_not_json_is_refused_before_the_run() -> None:
    result = subprocess.run(
        [*LOADTEST, "http://127.0.0.1:1/e", "--publish-body", '{"data": {payload}'],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "publish_body is not JSON" in result.stderr


async def _emit(url: str, *, count: int, skip_after: Broker | None = None) -> None:
    """Be a server that makes its own events: ids 1, 2, 3...

    With ``skip_after``, one id is left out once that broker has 20 subscribers and
    one more event went to them: each of the 20 then sees a gap of one.
    """
    skip: int | None = None
    async with httpx.AsyncClient() as http:
        for n in range(1, count + 1):
            if skip is None and skip_after and skip_after.statistics().subscribers >= 20:
                skip = n + 1
            if n == skip:
                continue
            data = json.dumps({"n": n, "ts": time.time()})
            answer = await http.post(url, json={"data": data, "id": str(n)})
            assert answer.status_code == 202, answer.text
            await trio.sleep(0.02)


@pytest.mark.slow
async def test_no_publish_judges_the_servers_own_events_by_id(tmp_path: Path) -> None:
    async with running_server() as server, trio.open_nursery() as nursery:
        nursery.start_soon(partial(_emit, f"{server.url}/events/own", count=1000))
        code, out, report = await _report_of(
            f"{server.url}/events/own",
            *SHORT,
            *("--no-publish", "--timestamp-path", "ts", "--churn", "10", "--drop", "fin,rst"),
            tmp_path=tmp_path,
        )
        nursery.cancel_scope.cancel()
    assert code == 0, out
    events, latency = report["events"], report["latency"]
    assert isinstance(events, dict)
    assert isinstance(latency, dict)
    assert events["published"] == 0
    assert events["delivered"] > 20
    assert (events["lost"], events["undelivered"], events["duplicated"]) == (0, 0, 0)
    assert events["replayed"] > 0  # resumes by Last-Event-ID, judged by id
    assert latency["count"] > 0


@pytest.mark.slow
async def test_no_publish_counts_a_skipped_id_as_lost_and_max_lost_exits_5(
    tmp_path: Path,
) -> None:
    async with running_server() as server, trio.open_nursery() as nursery:
        gap = partial(_emit, f"{server.url}/events/gap", count=1000, skip_after=server.broker)
        nursery.start_soon(gap)
        code, out, report = await _report_of(
            f"{server.url}/events/gap",
            *SHORT,
            *("--no-publish", "--max-lost", "0"),
            tmp_path=tmp_path,
        )
        nursery.cancel_scope.cancel()
    assert code == 5, out
    events = report["events"]
    assert isinstance(events, dict)
    assert events["lost"] == 20  # one per subscriber
    assert events["per_connection"]["with_loss"] == 20
    assert "--max-lost 0: 20 BREACHED" in out
    assert report["thresholds"] == [
        {"name": "max-lost", "limit": 0, "value": 20, "is_breached": True}
    ]


# -- verdicts without our /stats ----------------------------------------------------


@pytest.mark.slow
async def test_verdict_from_a_json_path_on_another_url(tmp_path: Path) -> None:
    broker = LeakyBroker(every=5)
    async with _contracts_server(broker) as url:
        code, out, report = await _report_of(
            f"{url}/events/j",
            *SHORT,
            *("--churn", "10", "--payload-as", "string", "--clean-timeout", "4"),
            *("--stats-url", f"{url}/health", "--stats-path", "server.streams"),
            tmp_path=tmp_path,
        )
    assert code == 3, out
    server = report["server"]
    assert isinstance(server, dict)
    assert server["ghosts"] == broker.ghosts >= 4
    assert server["source"] == {
        "kind": "json",
        "description": f'GET {url}/health, JSON "server.streams"',
    }
    assert f"LEAKING ({broker.ghosts} ghost subscribers) [by GET {url}/health" in out


@pytest.mark.slow
async def test_verdict_from_a_prometheus_gauge(tmp_path: Path) -> None:
    async with running_server() as server:
        code, out, report = await _report_of(
            f"{server.url}/events/p",
            *SHORT,
            *("--churn", "10", "--metrics-gauge", 'trio_sse_subscribers{topic="p"}'),
            tmp_path=tmp_path,
        )
    assert code == 0, out
    assert 'CLEAN [by gauge trio_sse_subscribers{topic="p"} at ' in out
    source = report["server"]
    assert isinstance(source, dict)
    assert source["source"]["kind"] == "prometheus"
    assert source["subscribers_at_close"] == 20


@pytest.mark.slow
async def test_a_leaking_server_is_caught_by_its_prometheus_gauge(tmp_path: Path) -> None:
    broker = LeakyBroker(every=5)
    async with running_server(broker=broker) as server:
        code, out, report = await _report_of(
            f"{server.url}/events/pl",
            *SHORT,
            *("--churn", "10", "--clean-timeout", "4", "--metrics-gauge", "trio_sse_subscribers"),
            tmp_path=tmp_path,
        )
    assert code == 3, out
    server_part = report["server"]
    assert isinstance(server_part, dict)
    assert server_part["ghosts"] == broker.ghosts >= 4


@pytest.mark.slow
async def test_a_missing_gauge_is_a_clear_error() -> None:
    async with running_server() as server:
        code, out, err = await _loadtest(
            f"{server.url}/events/x", *SHORT, "--metrics-gauge", "no_such_gauge"
        )
    assert code == 1, out + err
    assert "has no gauge no_such_gauge" in err


# A server we did not write: raw sockets, ids from a shared counter, no /stats. With
# ``leak_every`` one connection in that many is the classic socket leak: the server
# sends the prelude, then forgets the connection without closing it, so when the
# client leaves (FIN) the socket stays in CLOSE_WAIT: a ghost only /proc can see.
_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
    b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


@asynccontextmanager
async def _raw_sse_server(
    *, leak_every: int = 0
) -> AsyncIterator[tuple[int, list[trio.SocketStream]]]:
    ticks = {"id": 0}
    held: list[trio.SocketStream] = []
    accepted = 0

    async def stream_events(stream: trio.SocketStream) -> None:
        async with trio.open_nursery() as nursery:

            async def write() -> None:
                seen = ticks["id"]
                while True:
                    await trio.sleep(0.02)
                    while seen < ticks["id"]:
                        seen += 1
                        await stream.send_all(_chunk(b"id: %d\ndata: x\n\n" % seen))

            nursery.start_soon(write)
            while await stream.receive_some(4096):
                pass
            nursery.cancel_scope.cancel()

    async def handler(stream: trio.SocketStream) -> None:
        nonlocal accepted
        accepted += 1
        is_leaked = bool(leak_every) and accepted % leak_every == 0
        request = b""
        try:
            while b"\r\n\r\n" not in request:
                data = await stream.receive_some(4096)
                if not data:
                    break
                request += data
            else:
                await stream.send_all(_HEAD + _chunk(b": hello\n\n"))
                if is_leaked:
                    # Forgotten: never read, written or closed (serve_tcp closes a
                    # handler's stream when it returns, so it never returns).
                    held.append(stream)
                    await trio.sleep_forever()
                await stream_events(stream)
        except* (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client reset it: nothing left to do
        await stream.aclose()

    async def tick() -> None:
        while True:
            await trio.sleep(0.05)
            ticks["id"] += 1

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        nursery.start_soon(tick)
        try:
            yield listeners[0].socket.getsockname()[1], held
        finally:
            nursery.cancel_scope.cancel()


@pytest.mark.slow
async def test_server_pid_judges_a_server_without_stats_by_its_sockets(tmp_path: Path) -> None:
    async with _raw_sse_server() as (port, _):
        code, out, report = await _report_of(
            f"http://127.0.0.1:{port}/chat",
            *SHORT,
            *("--no-publish", "--server-pid", str(os.getpid())),
            tmp_path=tmp_path,
        )
    assert code == 0, out
    server = report["server"]
    assert isinstance(server, dict)
    assert server["source"]["kind"] == "process"
    assert server["subscribers_at_close"] == 20, server
    assert server["rss_kib"]["before"] > 0
    assert f"CLEAN [by open sockets on port {port} of process {os.getpid()}]" in out


@pytest.mark.slow
async def test_server_pid_catches_sockets_a_server_never_closes(tmp_path: Path) -> None:
    async with _raw_sse_server(leak_every=4) as (port, held):
        code, out, report = await _report_of(
            f"http://127.0.0.1:{port}/chat",
            *SHORT,
            # The wait for the other sockets to close: this process serves them, and on a
            # loaded machine (4 test workers on 2 cores) 1 s was too short now and then
            # (9 sockets counted instead of the 5 held).
            *("--no-publish", "--server-pid", str(os.getpid()), "--clean-timeout", "5"),
            tmp_path=tmp_path,
        )
        ghosts = len(held)
    assert code == 3, out
    assert ghosts == 5
    server = report["server"]
    assert isinstance(server, dict)
    assert server["ghosts"] == ghosts, server
    assert f"LEAKING ({ghosts} ghost subscribers) [by open sockets on port {port}" in out


# -- thresholds and the report ------------------------------------------------------


@pytest.mark.slow
async def test_thresholds_met_exit_0_and_breached_exit_5_named(tmp_path: Path) -> None:
    generous = [
        *("--max-lost", "0", "--max-undelivered", "0", "--max-errors", "0"),
        *("--max-cleanup-time", "30", "--max-reconnect-time", "30", "--max-p99", "30"),
    ]
    async with running_server() as server:
        url = f"{server.url}/events/t"
        code, out, report = await _report_of(
            url, *SHORT, "--churn", "10", *generous, tmp_path=tmp_path
        )
        assert code == 0, out
        assert report["schema_version"] == 3
        thresholds = report["thresholds"]
        assert isinstance(thresholds, list)
        assert [row["name"] for row in thresholds] == [
            "max-p99",
            "max-lost",
            "max-undelivered",
            "max-errors",
            "max-reconnect-time",
            "max-cleanup-time",
        ]
        assert not any(row["is_breached"] for row in thresholds)
        assert f"report written to {tmp_path / 'r.json'}" in out
        # A p99 bound of a microsecond: no delivery over a socket is that fast.
        code, out, report = await _report_of(
            url, *SHORT, "--max-p99", "0.000001", "--max-lost", "0", tmp_path=tmp_path
        )
    assert code == 5, out
    assert "--max-p99 1 µs:" in out
    assert "BREACHED; --max-lost 0: 0 ok" in out


@pytest.mark.slow
async def test_publish_header_carries_a_token_the_server_requires() -> None:
    token = "s3cret-token-0123456789"
    async with serve_process("--publish-token", token) as (_, (host, port)):
        code, out, err = await _loadtest(
            f"http://{host}:{port}/events/token",
            *SHORT,
            *("--publish-header", f"Authorization: Bearer {token}"),
        )
    assert code == 0, out + err
    assert ", 0 failed;" in out


# -- the pure parts -----------------------------------------------------------------


def test_server_sockets_are_counted_once_however_often_the_table_repeats_them(
    tmp_path: Path,
) -> None:
    # /proc/PID/net/tcp is written a page per read; while other connections come and go
    # the kernel repeats lines (824 lines for 20 sockets was seen), so lines are no count.
    fd = tmp_path / "7" / "fd"
    fd.mkdir(parents=True)
    for number, target in enumerate(["socket:[101]", "socket:[102]", "socket:[103]", "/dev/null"]):
        (fd / str(number)).symlink_to(target)
    (tmp_path / "7" / "net").mkdir()
    header = "  sl  local_address rem_address st tx_queue rx_queue tr tm->when uid timeout inode\n"

    def row(local_port: int, state: str, inode: int) -> str:
        return f"   0: 0100007F:{local_port:04X} 0100007F:9C40 {state} 0:0 00:0 0 0 0 {inode}\n"

    port = 8080
    rows = [
        row(port, "0A", 101),  # the listener: not a subscriber
        row(port, "01", 102),
        row(port, "01", 103),
        row(port, "01", 102),  # repeated by the kernel
        row(port, "01", 103),
        row(port + 1, "01", 104),  # another port
        row(port, "06", 0),  # TIME_WAIT: no process holds it
        row(port, "01", 999),  # another process's socket
    ]
    (tmp_path / "7" / "net" / "tcp").write_text(header + "".join(rows))
    assert count_server_sockets(7, port, proc=tmp_path) == 2


def test_parse_seq_reads_an_integer_id_or_one_at_the_end() -> None:
    assert [parse_seq(text) for text in ("42", "news-42", "a/b:7", "0")] == [42, 42, 7, 0]
    assert [parse_seq(text) for text in ("", "news", "4a", "x" + "9" * 19)] == [None] * 4


def test_parse_timestamp_reads_epoch_units_and_iso_8601() -> None:
    moment = 1_764_521_622.5  # 2025-11-30T16:53:42.5Z
    for value in (moment, moment * 1e3, moment * 1e6, int(moment * 1e9)):
        parsed = parse_timestamp(json.dumps({"m": {"ts": value}}), "m.ts")
        assert parsed is not None
        assert abs(parsed - moment) < 1e-3
    assert parse_timestamp('{"ts": "2025-11-30T16:53:42.5Z"}', "ts") == moment
    assert parse_timestamp('{"ts": "2025-11-30T17:53:42.5+01:00"}', "ts") == moment
    assert parse_timestamp('{"ts": "2025-11-30T16:53:42.5"}', "ts") == moment  # UTC
    for data in ('{"ts": true}', '{"ts": "soon"}', '{"other": 1}', "not json", "[1]"):
        assert parse_timestamp(data, "ts") is None


def test_json_paths_and_prometheus_gauges() -> None:
    document = {"stats": {"open": 3, "topics": [{"n": 1}, {"n": 2}]}}
    assert read_json_path(document, "stats.open") == 3
    assert read_json_path(document, "stats.topics.1.n") == 2
    assert read_json_path(document, "stats.topics.5.n") is None
    assert read_json_path(document, "stats.open.deeper") is None
    with pytest.raises(ValueError, match="bad JSON path"):
        parse_json_path("stats..open")
    page = (
        "# HELP sse_clients Open streams.\n# TYPE sse_clients gauge\n"
        'sse_clients{topic="a",node="x"} 3\nsse_clients{topic="b"} 4.0\n'
        "sse_clients_total 99\n# TYPE idle gauge\n"
    )
    assert parse_gauge('sse_clients{topic="a"}') == ("sse_clients", {"topic": "a"})
    assert read_gauge(page, "sse_clients", {}) == 7
    assert read_gauge(page, "sse_clients", {"topic": "a"}) == 3
    assert read_gauge(page, "sse_clients", {"topic": "c"}) == 0  # declared, no sample
    assert read_gauge(page, "idle", {}) == 0
    assert read_gauge(page, "missing", {}) is None
    with pytest.raises(ValueError, match="bad gauge"):
        parse_gauge("sse clients")
    with pytest.raises(ValueError, match="bad labels"):
        parse_gauge("sse_clients{topic=a}")


def test_publish_bodies_in_each_format() -> None:
    data: dict[str, object] = {"t": 1, "seq": 2, "pad": "x y"}
    text = '{"t":1,"seq":2,"pad":"x y"}'
    json_form, text_form = PublishFormat.JSON, PublishFormat.TEXT
    assert encode_body(json_form.default_template, json_form, PayloadForm.OBJECT, data) == (
        b'{"data": ' + text.encode() + b"}"
    )
    as_string = encode_body('{"m": {payload}}', json_form, PayloadForm.STRING, data)
    assert json.loads(as_string) == {"m": text}
    form = encode_body("data={payload}&x=1", PublishFormat.FORM, PayloadForm.OBJECT, data)
    assert form == b"data=%7B%22t%22%3A1%2C%22seq%22%3A2%2C%22pad%22%3A%22x+y%22%7D&x=1"
    assert encode_body("{payload}", text_form, PayloadForm.OBJECT, data) == text.encode()
    with pytest.raises(ValueError, match="must contain"):
        LoadTestOptions("http://a/b", publish_body='{"data": 1}')


def test_exit_status_precedence_and_threshold_rows() -> None:
    record = _short_record()
    report = build_report(record)
    assert exit_status(report) == EXIT_CLEAN
    record.options = replace(record.options, thresholds=Thresholds(max_lost=0, max_p99=1e-9))
    report = build_report(record)
    assert [(row["name"], row["is_breached"]) for row in report["thresholds"]] == [
        ("max-p99", True),
        ("max-lost", False),
    ]
    assert exit_status(report) == EXIT_BREACHED
    record.published_ok = 0  # every publish refused: proves nothing, before a breach
    assert exit_status(build_report(record)) == EXIT_INCONCLUSIVE
    record.clean_seconds, record.subscribers_after = None, 3  # leaking, before all
    assert exit_status(build_report(record)) == EXIT_LEAKING
    with pytest.raises(ValueError, match="max_lost"):
        Thresholds(max_lost=-1)


def _short_record() -> RunRecord:
    ledger = Ledger()
    ledger.start_stream(0, is_resume=False)
    ledger.receive(1)
    return RunRecord(
        options=LoadTestOptions("http://127.0.0.1:1/events/a", connections=1),
        started_at=0.0,
        ledgers=[ledger],
        latency=Histogram.of([0.001]),
        connect_time=Histogram.of([0.01]),
        publish_latency=Histogram.of([0.003]),
        errors=Counter(),
        error_examples={},
        drops=Counter(),
        samples=[],
        published=1,
        published_ok=1,
        connects=1,
        subscribers_after=0,
        clean_seconds=0.01,
    )
