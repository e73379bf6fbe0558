"""`trio-sse listen` and `trio-sse publish`.

The end-to-end cases run both commands as real processes against a real
`trio-sse serve`. The rest call `main()` in a worker thread (it runs its own
`trio.run`) against an in-process server, which is much faster; each such `listen`
gets a `--timeout`, so a regression cannot leave the thread running.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import quart
import trio
from quart_trio import QuartTrio

import trio_sse
from tests.test_cli import serve_process
from tests.wire import TIMEOUT, SSEConnection, running_server, wait_for_remote_subscribers
from trio_sse.cli import main
from trio_sse.cli._listen import format_event
from trio_sse.protocol import MessageEvent

CLI = [sys.executable, "-m", "trio_sse.cli"]
# The bound on a `trio-sse` process's whole life here, start-up included: a cold
# interpreter importing the stack takes over a second of CPU, and several seconds on a
# loaded 2-core machine running the suite on 4 workers (as test_cli's startup_timeout).
PROCESS_TIMEOUT = 30.0


@asynccontextmanager
async def cli_process(*args: str) -> AsyncIterator[trio.Process]:
    """A `trio-sse` process with stdout and stderr piped; killed if still running at the end."""
    process = await trio.lowlevel.open_process(
        [*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
        with trio.fail_after(PROCESS_TIMEOUT):
            await process.wait()


async def _read_all(stream: trio.abc.ReceiveStream | None) -> str:
    assert stream is not None
    data = bytearray()
    while chunk := await stream.receive_some():
        data += chunk
    return data.decode()


async def finish(process: trio.Process) -> tuple[int, str, str]:
    """Wait for the process to exit; return its status, stdout and stderr.

    The outputs here are a few lines, far below a pipe's buffer, so reading them
    after the exit cannot deadlock.
    """
    with trio.fail_after(PROCESS_TIMEOUT):
        code = await process.wait()
        return code, await _read_all(process.stdout), await _read_all(process.stderr)


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def run_main(*argv: str) -> int:
    return await trio.to_thread.run_sync(main, list(argv))


@pytest.mark.slow
async def test_listen_json_prints_each_event_on_one_line_and_stops_at_max_events() -> None:
    async with serve_process() as (_, (host, port)):
        base = f"http://{host}:{port}"
        command = ["listen", f"{base}/events/news", "--json", "--max-events", "3"]
        async with (
            cli_process(*command) as listener,
            httpx.AsyncClient(base_url=base, timeout=TIMEOUT) as http,
        ):
            await wait_for_remote_subscribers(http, 1, timeout=PROCESS_TIMEOUT)
            bodies = [
                {"data": "hello"},
                {"data": "line 1\nline 2\n\nline 4", "event": "update"},
                {"data": {"n": [1, 2]}, "id": "9000000000000007"},
            ]
            ids = []
            for body in bodies:
                response = await http.post("/events/news", json=body)
                assert response.status_code == 202, response.text
                ids.append(response.json()["id"])
            code, out, err = await finish(listener)
    assert code == 0, err
    assert [json.loads(line) for line in out.splitlines()] == [
        {"event": "message", "data": "hello", "id": ids[0]},
        {"event": "update", "data": "line 1\nline 2\n\nline 4", "id": ids[1]},
        {"event": "message", "data": '{"n":[1,2]}', "id": "9000000000000007"},
    ]
    assert ids[2] == "9000000000000007"


@pytest.mark.slow
async def test_listen_exits_1_on_a_404_with_one_line_and_no_traceback() -> None:
    async with serve_process() as (_, (host, port)):
        url = f"http://{host}:{port}/nowhere"
        async with cli_process("listen", url) as listener:
            code, out, err = await finish(listener)
    assert code == 1
    assert out == ""
    # Hypercorn sends no reason phrase: "Not Found" is the standard one; then the
    # app's JSON reason.
    assert err.startswith(f"trio-sse listen: GET {url} answered 404 Not Found: The requested")
    assert err.count("\n") == 1


@pytest.mark.slow
async def test_publish_process_prints_the_id_and_the_event_reaches_a_listener() -> None:
    async with running_server() as server:
        conn = await SSEConnection.open(server, "/events/news")
        await server.wait_for_subscribers(1)
        command = ["publish", f"{server.url}/events/news", "--data", "a\nb", "--event", "note"]
        async with cli_process(*command) as publisher:
            code, out, err = await finish(publisher)
        assert code == 0, err
        (event,) = await conn.read_events(1)
        await conn.close_fin()
    assert out == f"{event.last_event_id}\n"
    assert (event.type, event.data) == ("note", "a\nb")


async def test_listen_stops_with_status_0_at_timeout(capsys: pytest.CaptureFixture[str]) -> None:
    async with running_server() as server:
        start = trio.current_time()
        code = await run_main("listen", f"{server.url}/events/quiet", "--timeout", "0.3")
        elapsed = trio.current_time() - start
    assert code == 0
    assert 0.3 <= elapsed < 3
    assert capsys.readouterr() == ("", "")


def _echo_app(broker: trio_sse.MemoryBroker) -> QuartTrio:
    """Streams two events telling what the request's X-Token and Last-Event-ID were."""
    app = QuartTrio(__name__)

    @app.get("/echo")
    async def echo() -> quart.ResponseReturnValue:
        headers = quart.request.headers
        return trio_sse.event_stream(
            broker,
            "echo",
            initial=[
                trio_sse.ServerSentEvent(headers.get("X-Token", ""), event="token"),
                trio_sse.ServerSentEvent(headers.get("Last-Event-ID", ""), event="resume"),
            ],
        )

    return app


async def test_listen_sends_headers_and_last_event_id(capsys: pytest.CaptureFixture[str]) -> None:
    broker = trio_sse.MemoryBroker()
    async with running_server(app=_echo_app(broker), broker=broker) as server:
        code = await run_main(
            "listen",
            f"{server.url}/echo",
            *("--json", "--max-events", "2", "--timeout", str(TIMEOUT)),
            *("-H", "X-Token: s3cret", "--last-event-id", "41"),
        )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert [json.loads(line) for line in out.splitlines()] == [
        {"event": "token", "data": "s3cret", "id": "41"},
        {"event": "resume", "data": "41", "id": "41"},
    ]


async def test_listen_readable_output_is_a_header_line_the_data_and_a_blank_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with running_server() as server, trio.open_nursery() as nursery:
        url = f"{server.url}/events/t"
        nursery.start_soon(run_main, "listen", url, "--max-events", "2", "--timeout", str(TIMEOUT))
        await server.wait_for_subscribers(1)
        await server.publish("t", data="one\ntwo", event="note", id="7")
        second = await server.publish("t", data="three")
    assert capsys.readouterr() == (
        f"event: note  id: 7\none\ntwo\n\nevent: message  id: {second}\nthree\n\n",
        "",
    )


def test_format_event_leaves_out_an_empty_id() -> None:
    event = MessageEvent(type="message", data="x", last_event_id="")
    assert format_event(event, is_json=False) == "event: message\nx\n\n"
    assert format_event(event, is_json=True) == '{"event": "message", "data": "x", "id": ""}\n'


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["ftp://example.com/x"], "url must be http:// or https://"),
        (["http://example.com/x", "-H", "NoColon"], "expected 'Name: value'"),
        (["http://example.com/x", "-H", "Bad Name: v"], "expected 'Name: value'"),
        (["http://example.com/x", "-H", "X-A: caf\u00e9"], "must be ASCII without CR, LF"),
        (["http://example.com/x", "-H", "Last-Event-ID: 3"], "use --last-event-id"),
        (["http://example.com/x", "--last-event-id", "a\nb"], "may not contain control characters"),
    ],
)
def test_listen_refuses_bad_input_with_status_1(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["listen", *argv]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("trio-sse listen: ")
    assert message in err
    assert err.count("\n") == 1


def test_listen_gives_up_with_status_1_when_retries_run_out(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"http://127.0.0.1:{free_port()}/events/t"
    # --max-retries 0: the first failed attempt is the last, with no back-off wait.
    assert main(["listen", url, "--max-retries", "0", "--timeout", str(TIMEOUT)]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"trio-sse listen: gave up on {url} after 0 reconnect attempts")
    assert "could not connect" in lines[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["listen", "http://h/", "--max-events", "0"], "must be >= 1"),
        (["listen", "http://h/", "--idle-timeout", "0"], "must be > 0"),
        (["listen", "http://h/", "--timeout", "-1"], "must be >= 0"),
        (["publish", "http://h/"], "the following arguments are required: --data"),
    ],
)
def test_bad_usage_exits_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


async def test_publish_json_data_sends_a_json_value(capsys: pytest.CaptureFixture[str]) -> None:
    async with running_server() as server:
        conn = await SSEConnection.open(server, "/events/j")
        await server.wait_for_subscribers(1)
        url = f"{server.url}/events/j"
        code = await run_main(
            "publish", url, "--data", '{"k": [1, 2]}', "--json-data", "--id", "41"
        )
        (event,) = await conn.read_events(1)
        await conn.close_fin()
    assert code == 0
    assert capsys.readouterr() == ("41\n", "")
    assert (event.data, event.last_event_id) == ('{"k":[1,2]}', "41")


async def test_publish_shows_the_servers_error_with_status_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with running_server() as server:
        url = f"{server.url}/events/t"
        code = await run_main("publish", url, "--data", "x", "--event", "a\r\nb")
        assert server.broker.statistics().published == 0
    with pytest.raises(trio_sse.InvalidEventError) as refused:
        trio_sse.ServerSentEvent("x", event="a\r\nb")
    assert code == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"trio-sse publish: POST {url} answered 400 Bad Request: {refused.value}\n"


def test_publish_to_a_closed_port_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}/events/t"
    assert main(["publish", url, "--data", "x"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"trio-sse publish: cannot connect to {url}: ")
    assert err.count("\n") == 1


def test_publish_refuses_data_that_is_not_json_under_json_data(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["publish", "http://h/events/t", "--data", "NaN", "--json-data"]) == 1
    assert "--data is not valid JSON: NaN is not allowed" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["publish", "{url}", "--data", "x"],
        ["listen", "{url}", "--max-retries", "0"],
        ["loadtest", "{url}", "--quiet"],
        ["loadtest", "http://127.0.0.1:1/e/t", "--publish-url", "{url}", "--quiet"],
        ["loadtest", "http://127.0.0.1:1/e/t", "--stats-url", "{url}", "--quiet"],
    ],
)
def test_every_url_argument_refuses_a_port_out_of_range(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # 99999 is 34463 modulo 65536: a client that wraps the port talks to another server.
    url = "http://127.0.0.1:99999/events/t"
    assert main([part.format(url=url) for part in argv]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"trio-sse {argv[0]}: ")
    assert "99999" in err
    assert "port" in err.lower()
    assert "connect" not in err
    assert err.count("\n") == 1


@asynccontextmanager
async def refusing_server(status: int, error: str) -> AsyncIterator[str]:
    """A server answering every GET with ``status`` and ``{"error": error}``; yields its URL."""
    app = QuartTrio(__name__)

    @app.get("/events/<topic>")
    async def refuse(topic: str) -> quart.ResponseReturnValue:
        return {"error": error}, status

    async with running_server(app=app) as server:
        yield f"{server.url}/events/t"


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        ("subscribe needs a bearer token", "subscribe needs a bearer token"),
        # What a terminal would act on is not printed; the line stays one line.
        ("two\nlines\x1b[2J", "two lines [2J"),
        ("x" * 1000, "x" * 197 + "..."),
    ],
)
async def test_listen_prints_the_servers_json_reason_for_a_4xx(
    error: str, shown: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with refusing_server(401, error) as url:
        code = await run_main("listen", url, "--timeout", str(TIMEOUT))
    assert code == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"trio-sse listen: GET {url} answered 401 Unauthorized: {shown}\n"


async def test_listen_says_how_to_give_up_when_it_cannot_connect(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"http://127.0.0.1:{free_port()}/events/t"
    # Two attempts (the first retry waits ~0 s), then --timeout ends the command.
    code = await run_main("listen", url, "--timeout", "1.5")
    assert code == 0
    lines = capsys.readouterr().err.splitlines()
    assert lines
    for line in lines:
        assert line.startswith(f"trio-sse listen: could not connect to {url}: connection refused")
        assert "Error(" not in line
    assert "--max-retries" in lines[0]


def test_listen_gives_up_with_a_sentence_not_an_exception_repr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"http://127.0.0.1:{free_port()}/events/t"
    assert main(["listen", url, "--max-retries", "0", "--timeout", str(TIMEOUT)]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (
        f"trio-sse listen: gave up on {url} after 0 reconnect attempts in a row without an "
        f"open stream: could not connect to {url}: connection refused"
    )
