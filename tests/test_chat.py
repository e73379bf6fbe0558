"""The chat example (examples/chat/server.py) over a real socket."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime, timedelta
from types import ModuleType

import pytest

from tests.examples import load_example, run_on_a_taken_port
from tests.wire import SSEConnection, running_server
from trio_sse import MemoryBroker


def load_chat() -> ModuleType:
    return load_example("chat/server.py", "chat_server")


async def test_chat_greets_each_subscriber_once_and_broadcasts_messages(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trio_sse.stream")
    broker = MemoryBroker()
    app = load_chat().create_chat_app(broker)
    async with running_server(app=app, broker=broker) as server:
        ana = await SSEConnection.open(server, "/chat")
        await server.wait_for_subscribers(1)
        ben = await SSEConnection.open(server, "/chat")
        await server.wait_for_subscribers(2)
        before = datetime.now(UTC)
        response = await server.http.post("/chat", json={"user": "ana", "text": "hi <b>all</b>"})
        after = datetime.now(UTC)
        assert response.status_code == 202
        for conn, online in ((ana, 1), (ben, 2)):
            hello, message = await conn.read_events(2)
            assert hello.type == "hello"
            assert json.loads(hello.data) == {
                "text": "Welcome to the chat!",
                "online": online,
                "users": [],
            }
            assert message.type == "message"
            body = json.loads(message.data)
            assert body == {"user": "ana", "text": "hi <b>all</b>", "sent": body["sent"]}
            assert_sent_between(body["sent"], before, after)
            assert message.last_event_id == response.json()["id"]
        # A third arrival gets its own hello; the others get no second one.
        cleo = await SSEConnection.open(server, "/chat")
        await server.wait_for_subscribers(3)
        await server.http.post("/chat", json={"user": "cleo", "text": "hey"})
        assert [e.type for e in await cleo.read_events(2)] == ["hello", "message"]
        assert [e.type for e in await ana.read_events(3)] == ["hello", "message", "message"]
        for conn in (ana, ben, cleo):
            await conn.close_fin()
        await server.wait_for_subscribers(0)
    closed = [r.getMessage() for r in caplog.records if r.name == "trio_sse.stream"]
    assert len(closed) == 3
    assert all("topic=chat reason=client_closed" in line for line in closed)


async def test_a_new_reader_gets_the_last_50_events_then_live_ones() -> None:
    broker = MemoryBroker()
    async with running_server(app=load_chat().create_chat_app(broker), broker=broker) as server:
        for i in range(60):
            await server.http.post("/chat", json={"user": "ana", "text": f"m{i}"})
        conn = await SSEConnection.open(server, "/chat")
        events = await conn.read_events(51)
        assert events[0].type == "hello"
        assert [json.loads(e.data)["text"] for e in events[1:]] == [f"m{i}" for i in range(10, 60)]
        # A reconnect resumes from its last id instead: only what it missed.
        await server.http.post("/chat", json={"user": "ana", "text": "while away"})
        again = await SSEConnection.open(
            server, "/chat", headers=[("Last-Event-ID", events[-1].last_event_id)]
        )
        hello, missed = await again.read_events(2)
        assert hello.type == "hello"
        assert json.loads(missed.data)["text"] == "while away"
        for c in (conn, again):
            await c.close_fin()


async def test_named_readers_are_listed_and_join_and_leave_once_each() -> None:
    chat = load_chat()
    broker = MemoryBroker(presence_events=True)
    async with running_server(app=chat.create_chat_app(broker), broker=broker) as server:
        watcher = await SSEConnection.open(server, "/chat")
        ana_tabs = [await SSEConnection.open(server, "/chat?user=ana") for _ in range(2)]
        bo = await SSEConnection.open(server, "/chat?user=bo")
        (hello,) = await bo.read_events(1)
        assert json.loads(hello.data)["users"] == ["ana", "bo"]
        assert json.loads(hello.data)["online"] == 4
        # watcher: hello, ana joined (once for two tabs), bo joined.
        events = await watcher.read_events(3)
        assert [(e.type, json.loads(e.data)) for e in events[1:]] == [
            ("join", {"sub": "ana"}),
            ("join", {"sub": "bo"}),
        ]
        online = (await server.http.get("/chat/online")).json()
        assert online == {"online": 4, "users": ["ana", "bo"]}
        await bo.close_fin()
        (left,) = (await watcher.read_events(4))[3:]
        assert (left.type, json.loads(left.data)) == ("leave", {"sub": "bo"})
        for tab in ana_tabs:
            await tab.close_fin()
        (left,) = (await watcher.read_events(5))[4:]
        assert (left.type, json.loads(left.data)) == ("leave", {"sub": "ana"})
        assert (await server.http.get("/chat/online")).json() == {"online": 1, "users": []}
        response = await server.http.get("/chat", params={"user": "x" * 65})
        assert response.status_code == 400
        assert '"user" must be 1 to 64 characters' in response.json()["error"]
        await watcher.close_fin()


def assert_sent_between(sent: str, before: datetime, after: datetime) -> None:
    """``sent`` is UTC ISO 8601 with milliseconds and ``Z``, taken while the POST ran."""
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", sent), sent
    # The string holds milliseconds: the bounds are widened by one.
    millisecond = timedelta(milliseconds=1)
    assert before - millisecond <= datetime.fromisoformat(sent) <= after + millisecond


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"nope", "must be a JSON object"),
        (b'{"user": "ana"}', '"text" must be a non-empty string'),
        (b'{"user": " ", "text": "x"}', '"user" must be a non-empty string'),
        (b'{"user": "ana", "text": 5}', '"text" must be a non-empty string'),
        (json.dumps({"user": "a" * 65, "text": "x"}).encode(), '"user" is longer than 64'),
    ],
)
async def test_chat_rejects_bad_messages(body: bytes, problem: str) -> None:
    broker = MemoryBroker()
    async with running_server(app=load_chat().create_chat_app(broker), broker=broker) as server:
        response = await server.http.post(
            "/chat", content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400
        assert problem in response.json()["error"]
        assert broker.statistics().published == 0


async def test_chat_refuses_a_message_that_is_not_declared_json() -> None:
    # What another site's page can send without a preflight: text/plain.
    broker = MemoryBroker()
    async with running_server(app=load_chat().create_chat_app(broker), broker=broker) as server:
        response = await server.http.post(
            "/chat",
            content=b'{"user": "ana", "text": "forged"}',
            headers={"Content-Type": "text/plain"},
        )
        assert response.status_code == 415
        assert "application/json" in response.json()["error"]
        assert broker.statistics().published == 0


async def test_chat_serves_its_page_with_a_strict_content_security_policy() -> None:
    broker = MemoryBroker()
    async with running_server(app=load_chat().create_chat_app(broker), broker=broker) as server:
        page = await server.http.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        # No inline script may run, whatever ends up in the page.
        csp = page.headers["content-security-policy"]
        assert "default-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert '<script src="/static/chat.js"' in page.text
        for name, kind in (("chat.js", "javascript"), ("chat.css", "text/css")):
            asset = await server.http.get(f"/static/{name}")
            assert asset.status_code == 200
            assert kind in asset.headers["content-type"]
        assert (await server.http.get("/static/..%2Fserver.py")).status_code == 404


def test_chat_says_in_one_line_that_its_port_is_taken() -> None:
    result = run_on_a_taken_port("chat/server.py")
    assert result.returncode == 1
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("server.py: cannot listen on 127.0.0.1:")
    assert "address already in use" in line.lower()
