"""The chat terminal client (examples/chat/client.py) against the chat server."""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable
from functools import partial
from types import ModuleType
from urllib.parse import urlsplit

import pytest
import trio

from tests.examples import EXAMPLES, load_example
from tests.test_chat import load_chat
from tests.test_cli_client import free_port
from tests.wire import TIMEOUT, SSEConnection, running_server
from trio_sse import MemoryBroker, ServerSentEvent, serve
from trio_sse.protocol import MessageEvent


def load_chat_client() -> ModuleType:
    return load_example("chat/client.py", "chat_client")


async def test_chat_client_shows_the_welcome_then_each_message() -> None:
    client = load_chat_client()
    broker = MemoryBroker()
    async with running_server(app=load_chat().create_chat_app(broker), broker=broker) as server:
        url = f"{server.url}/chat"
        send, receive = trio.open_memory_channel[str](16)
        reports: list[str] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                partial(client.listen, url, show=send.send_nowait, report=reports.append)
            )
            with trio.fail_after(TIMEOUT):
                assert await receive.receive() == "* Welcome to the chat! (1 online)"
                event_id = await client.say(url, name="ana", text="hi\n\x1b[2Jall")
                # The escape sequence is shown, not obeyed by the terminal; the time is
                # the one the server accepted the message at.
                line = await receive.receive()
                assert re.fullmatch(r"\[\d\d:\d\d\] ana: hi\n\\x1b\[2Jall", line), line
            nursery.cancel_scope.cancel()
    assert isinstance(event_id, str)
    assert reports == []


@pytest.mark.slow
async def test_chat_client_reports_a_drop_and_resumes_without_a_gap() -> None:
    client = load_chat_client()
    broker = MemoryBroker()
    app = load_chat().create_chat_app(broker)
    shown, show = _lines()
    reports, report = _lines()
    first_stop, second_stop = trio.Event(), trio.Event()
    # The broker outlives both servers (no on_shutdown), as a Redis backplane would.
    run_server = partial(serve, app, host="127.0.0.1", graceful_timeout=0.2)
    async with trio.open_nursery() as nursery:
        (base,) = await nursery.start(partial(run_server, port=0, shutdown_trigger=first_stop.wait))
        url = f"{base}/chat"
        nursery.start_soon(partial(client.listen, url, show=show, report=report))
        # The chat server asks for a 3 s reconnection time; the reconnect waits that long.
        with trio.fail_after(TIMEOUT + 5):
            assert await shown.receive() == "* Welcome to the chat! (1 online)"
            await client.say(url, name="ana", text="before")
            assert (await shown.receive()).endswith("] ana: before")
            first_stop.set()
            assert (await reports.receive()).startswith("* connection lost (")
            # Said while the client is away: replayed after its Last-Event-ID.
            away = json.dumps({"user": "ben", "text": "while away"})
            await broker.publish("chat", ServerSentEvent(away, event="message"))
            port = urlsplit(base).port
            await nursery.start(partial(run_server, port=port, shutdown_trigger=second_stop.wait))
            assert await reports.receive() == "* reconnected"
            assert await shown.receive() == "* Welcome to the chat! (1 online)"
            assert await shown.receive() == "ben: while away"
        second_stop.set()
        nursery.cancel_scope.cancel()


def _lines() -> tuple[trio.MemoryReceiveChannel[str], Callable[[str], None]]:
    send, receive = trio.open_memory_channel[str](16)
    return receive, send.send_nowait


async def test_chat_client_say_posts_a_message_that_reaches_the_room() -> None:
    broker = MemoryBroker()
    async with running_server(app=load_chat().create_chat_app(broker), broker=broker) as server:
        conn = await SSEConnection.open(server, "/chat")
        await server.wait_for_subscribers(1)
        command = [
            sys.executable,
            str(EXAMPLES / "chat" / "client.py"),
            "--url",
            f"{server.url}/chat",
        ]
        command += ["--name", "ben", "--say", "hello there"]
        result = await trio.run_process(command, capture_stdout=True, capture_stderr=True)
        hello, message = await conn.read_events(2)
        await conn.close_fin()
    assert result.returncode == 0, result.stderr
    assert hello.type == "hello"
    assert message.type == "message"
    assert json.loads(message.data).items() >= {"user": "ben", "text": "hello there"}.items()


@pytest.mark.parametrize(
    ("event", "line"),
    [
        (MessageEvent("message", '{"user": "a", "text": "b"}', "1"), "a: b"),
        (MessageEvent("message", '{"user": "a", "text": "b", "sent": 5}', "1"), "a: b"),
        (MessageEvent("message", '{"user": "a", "text": "b", "sent": "now"}', "1"), "a: b"),
        (MessageEvent("hello", '{"text": "Hi", "online": 3}', ""), "* Hi (3 online)"),
        (MessageEvent("reset", "{}", "9"), "* some messages were missed while disconnected"),
        (MessageEvent("message", "not json", "1"), "* unreadable message event: not json"),
        (MessageEvent("other", "x", ""), None),
    ],
)
def test_chat_client_renders_each_kind_of_event(event: MessageEvent, line: str | None) -> None:
    assert load_chat_client().render(event) == line


async def test_chat_client_reports_a_refused_stream_with_status_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    client = load_chat_client()
    async with running_server() as server:
        url = f"{server.url}/nowhere"
        code = await trio.to_thread.run_sync(client.main, ["--url", url, "--listen"])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith(f"chat: GET {url} answered 404")
    assert err.count("\n") == 1


def test_chat_client_say_to_a_closed_port_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}/chat"
    assert load_chat_client().main(["--url", url, "--user", "ana", "--say", "hi"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"chat: cannot reach {url}: ")
    assert err.count("\n") == 1


def test_chat_client_shows_the_time_a_message_was_sent_in_local_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TZ", "Asia/Kolkata")  # UTC+05:30, no daylight saving time
    time.tzset()
    try:
        data = '{"user": "a", "text": "b", "sent": "2026-01-02T23:45:05.678Z"}'
        line = load_chat_client().render(MessageEvent("message", data, "1"))
    finally:
        monkeypatch.undo()
        time.tzset()
    assert line == "[05:15] a: b"


def test_chat_client_listening_to_a_closed_port_exits_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"http://127.0.0.1:{free_port()}/chat"
    assert load_chat_client().main(["--url", url, "--listen"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"chat: cannot reach {url}: ")
    assert err.count("\n") == 1
