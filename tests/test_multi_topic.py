"""Several topics on one stream: GET /events?topic=a&topic=b, over real sockets.

Each test runs on both brokers: memory, and Redis (the session's redis-server).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import jwt
import pytest
import trio
from playwright.sync_api import sync_playwright

from tests.browser import CHROMIUM_ARGS, chromium_executable, reference_server, server_process
from tests.redis_server import RedisServer
from tests.test_cli_client import run_main
from tests.wire import TIMEOUT, Server, SSEConnection, running_server
from trio_sse import Broker, InvalidEventError, MemoryBroker
from trio_sse.broker import (
    REPLAY_PIECE,
    CloseReason,
    TopicMerge,
    format_position,
    parse_position,
)
from trio_sse.client import open_event_source, split_event_type, topics_url
from trio_sse.protocol import Decoder, ServerSentEvent
from trio_sse.redis import open_redis_broker
from trio_sse.web import AuthConfig

SECRET = "a-test-secret-of-at-least-32-bytes!"


@pytest.fixture(params=["memory", "redis"])
def broker_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@asynccontextmanager
async def broker_of(
    kind: str, redis: RedisServer | None, *, history: int = 1000
) -> AsyncIterator[Broker]:
    if kind == "memory":
        broker = MemoryBroker(history=history)
        try:
            yield broker
        finally:
            await broker.aclose()
        return
    assert redis is not None
    async with open_redis_broker(
        redis.url, key_prefix=f"mt-{uuid.uuid4().hex[:8]}:", history=history
    ) as redis_broker:
        yield redis_broker


@asynccontextmanager
async def server_of(
    kind: str, request: pytest.FixtureRequest, *, history: int = 1000, **options: Any
) -> AsyncIterator[Server]:
    redis = request.getfixturevalue("redis_server") if kind == "redis" else None
    async with (
        broker_of(kind, redis, history=history) as broker,
        running_server(broker=broker, **options) as server,
    ):
        yield server


def topic_of(event_type: str) -> str:
    return event_type.partition(":")[0]


async def test_one_stream_gets_every_topic_tagged(
    broker_kind: str, request: pytest.FixtureRequest
) -> None:
    async with server_of(broker_kind, request) as server:
        sse = await SSEConnection.open(server, "/events?topic=a&topic=b&topic=c")
        try:
            assert sse.status == 200
            await server.wait_for_subscribers(3)
            id_a = await server.publish("a", data="one")
            id_b = await server.publish("b", data="two", event="note")
            id_c = await server.publish("c", data={"n": 3})
            events = await sse.read_events(3)
        finally:
            await sse.close_fin()
        assert [(e.type, e.data) for e in events] == [
            ("a", "one"),
            ("b:note", "two"),
            ("c", '{"n":3}'),
        ]
        # Each id is the position of every topic after that event.
        positions = [parse_position(e.last_event_id, 3) for e in events]
        assert [p[0] for p in positions] == [id_a] * 3
        assert [p[1] for p in positions][1:] == [id_b] * 2
        assert positions[2][2] == id_c
        # Before its first event, a topic's position is where its subscription began.
        assert positions[0][1] is not None
        assert positions[0][1] == positions[0][2] or broker_kind == "redis"


async def test_the_compound_id_resumes_every_topic_without_gap_or_duplicate(
    broker_kind: str, request: pytest.FixtureRequest
) -> None:
    async with server_of(broker_kind, request) as server:
        path = "/events?topic=a&topic=b"
        sse = await SSEConnection.open(server, path)
        try:
            await server.wait_for_subscribers(2)
            await server.publish("a", data="a1")
            await server.publish("b", data="b1")
            seen = await sse.read_events(2)
        finally:
            await sse.close_fin()
        await server.wait_for_subscribers(0)
        # Published while the client was away, interleaved.
        for name in ("a2", "b2", "a3", "b3"):
            await server.publish(name[0], data=name)
        resumed = await SSEConnection.open(
            server, path, headers=[("Last-Event-ID", seen[-1].last_event_id)]
        )
        try:
            await server.wait_for_subscribers(2)
            await server.publish("b", data="b4")
            events = await resumed.read_events(5)
        finally:
            await resumed.close_fin()
        got = [(topic_of(e.type), e.data) for e in events]
        # Each topic in its order, every missed event once, none seen before.
        assert [d for t, d in got if t == "a"] == ["a2", "a3"]
        assert [d for t, d in got if t == "b"] == ["b2", "b3", "b4"]
        assert "reset" not in resumed.body.decode()


@pytest.mark.slow
async def test_a_trimmed_topic_gets_its_own_reset_and_the_others_replay(
    broker_kind: str, request: pytest.FixtureRequest
) -> None:
    # Redis trims approximately (whole nodes of up to 100 entries): publish well past.
    async with server_of(broker_kind, request, history=5) as server:
        path = "/events?topic=a&topic=b"
        sse = await SSEConnection.open(server, path)
        try:
            await server.wait_for_subscribers(2)
            await server.publish("a", data="a0")
            await server.publish("b", data="b0")
            seen = await sse.read_events(2)
        finally:
            await sse.close_fin()
        await server.wait_for_subscribers(0)
        for i in range(250):
            await server.publish("a", data=f"a{i + 1}")
        await server.publish("b", data="b1")
        resumed = await SSEConnection.open(
            server, path, headers=[("Last-Event-ID", seen[-1].last_event_id)]
        )
        try:
            await resumed.read_until(lambda c: any(e.data == "b1" for e in c.events))
        finally:
            await resumed.close_fin()
        types = [e.type for e in resumed.events]
        assert types.count("a:reset") == 1
        assert "b:reset" not in types
        reset = next(e for e in resumed.events if e.type == "a:reset")
        # The notice names the topic's own position, not the compound id.
        a0_id = parse_position(seen[0].last_event_id, 2)[0]
        assert json.loads(reset.data)["last_event_id"] == a0_id
        assert [e.data for e in resumed.events if e.type == "b"] == ["b1"]
        # After the notice, a's retained tail: never a0 again.
        assert "a0" not in [e.data for e in resumed.events]


async def test_more_topics_than_the_cap_is_a_400_naming_it(
    broker_kind: str, request: pytest.FixtureRequest
) -> None:
    async with server_of(broker_kind, request, max_topics_per_stream=3) as server:
        query = "&".join(f"topic=t{i}" for i in range(4))
        response = await server.http.get(f"/events?{query}")
        assert response.status_code == 400
        assert "at most 3" in response.json()["error"]
        for bad, problem in [
            ("", "name the topics"),
            ("?topic=a&topic=a", "given twice"),
            ("?topic=a%20b", "topic must be"),
        ]:
            response = await server.http.get(f"/events{bad}")
            assert response.status_code == 400, bad
            assert problem in response.json()["error"]
        # A Last-Event-ID made for another list of topics.
        response = await server.http.get(
            "/events?topic=a&topic=b", headers={"Last-Event-ID": "1,2,3"}
        )
        assert response.status_code == 400
        assert "3 position(s)" in response.json()["error"]
        assert server.broker.statistics().subscribers == 0


async def test_a_token_must_allow_every_topic(
    broker_kind: str, request: pytest.FixtureRequest
) -> None:
    auth = AuthConfig(jwt_key=SECRET, subscribe_requires_token=True)
    token = jwt.encode({"trio_sse": {"subscribe": ["news.*", "chat"]}}, SECRET, "HS256")
    async with server_of(broker_kind, request, auth=auth) as server:
        headers = {"Authorization": f"Bearer {token}"}
        response = await server.http.get(
            "/events?topic=news.eu&topic=secret&topic=other", headers=headers
        )
        assert response.status_code == 403
        assert "'secret'" in response.json()["error"]
        sse = await SSEConnection.open(
            server, "/events?topic=news.eu&topic=chat", headers=list(headers.items())
        )
        try:
            assert sse.status == 200
        finally:
            await sse.close_fin()


def test_compound_positions_round_trip_ids_with_the_separator() -> None:
    positions = ["1-0", None, "a,b%2C", "%"]
    compound = format_position(positions)
    assert compound.count(",") == 3
    assert parse_position(compound, 4) == positions
    with pytest.raises(InvalidEventError, match="position"):
        parse_position(compound, 3)


async def test_leaving_ends_every_topic_subscription(
    broker_kind: str, request: pytest.FixtureRequest
) -> None:
    async with server_of(broker_kind, request) as server:
        query = "&".join(f"topic=t{i}" for i in range(10))
        sse = await SSEConnection.open(server, f"/events?{query}")
        await server.wait_for_subscribers(10)
        await sse.close_rst()
        await server.wait_for_subscribers(0)
        assert not server.broker.statistics().subscribers_per_topic


async def test_a_merge_past_its_bound_is_closed_as_slow_and_holds_nothing() -> None:
    broker = MemoryBroker()
    async with broker.subscribe("a") as a, broker.subscribe("b") as b:
        merge = TopicMerge([a, b], [None, None], queue_size=8)
        merge.limit_bytes(64 * 1024)
        assert await merge.receive_replay(REPLAY_PIECE) == []
        assert not merge.replay_pending
        for i in range(5):
            await broker.publish("a", ServerSentEvent(f"a{i}"))
            await broker.publish("b", ServerSentEvent(f"b{i}"))
        # Ten frames for a queue of eight: closed, and nothing kept for a stalled reader.
        assert merge.close_reason is CloseReason.SLOW_CONSUMER
        assert merge.queued == 0
        assert merge.queued_bytes == 0
        assert a.queued == 0
        assert b.queued == 0
        with pytest.raises(trio.EndOfChannel):
            merge.receive_batch_nowait()
        # Counted once, as a slow single-topic stream is (before: not at all).
        assert broker.statistics().dropped == 1


async def test_a_merge_replays_each_topic_then_goes_live_in_taken_order() -> None:
    broker = MemoryBroker()
    first = [await broker.publish("a", ServerSentEvent("a1"))]
    first.append(await broker.publish("b", ServerSentEvent("b1")))
    await broker.publish("a", ServerSentEvent("a2"))
    await broker.publish("b", ServerSentEvent("b2", event="note"))
    async with (
        broker.subscribe("a", last_event_id=first[0]) as a,
        broker.subscribe("b", last_event_id=first[1]) as b,
    ):
        merge = TopicMerge([a, b], first, queue_size=8)
        # Live before the replay is read: it waits behind it.
        a3 = await broker.publish("a", ServerSentEvent("a3"))
        frames = await merge.receive_replay(REPLAY_PIECE)
        assert await merge.receive_replay(REPLAY_PIECE) == []
        with pytest.raises(trio.WouldBlock):
            merge.receive_batch_nowait()
        await broker.publish("b", ServerSentEvent("b3"))
        frames += merge.receive_batch_nowait()
    decoder = Decoder()
    events = decoder.feed(b"".join(frames))
    assert [(e.type, e.data) for e in events] == [
        ("a", "a2"),
        ("a", "a3"),
        ("b:note", "b2"),
        ("b", "b3"),
    ]
    # The last frame's id holds every topic's newest position.
    last = parse_position(events[-1].last_event_id, 2)
    assert last[0] == a3
    assert last[1] is not None
    assert int(last[1]) > int(first[1])


async def test_a_topic_quiet_until_the_client_left_still_replays_what_it_missed(
    broker_kind: str, request: pytest.FixtureRequest
) -> None:
    async with server_of(broker_kind, request) as server:
        path = "/events?topic=busy&topic=quiet"
        sse = await SSEConnection.open(server, path)
        try:
            await server.wait_for_subscribers(2)
            await server.publish("busy", data="b1")
            (seen,) = await sse.read_events(1)
        finally:
            await sse.close_fin()
        await server.wait_for_subscribers(0)
        # The quiet topic's first event ever, while the client is away.
        await server.publish("quiet", data="q1")
        resumed = await SSEConnection.open(
            server, path, headers=[("Last-Event-ID", seen.last_event_id)]
        )
        try:
            await server.wait_for_subscribers(2)
            await server.publish("busy", data="b2")
            await resumed.read_until(lambda c: any(e.data == "b2" for e in c.events))
        finally:
            await resumed.close_fin()
        assert [(e.type, e.data) for e in resumed.events] == [("quiet", "q1"), ("busy", "b2")]


async def test_the_client_streams_several_topics_and_tells_each_events_topic() -> None:
    async with running_server() as server:
        url = topics_url(server.url + "/ignored?x=1", ["news", "chat"])
        assert url == f"{server.url}/events?topic=news&topic=chat"
        got: list[tuple[str, str, str]] = []
        with trio.fail_after(TIMEOUT):
            async with open_event_source(url) as source, trio.open_nursery() as nursery:

                async def publish() -> None:
                    await server.wait_for_subscribers(2)
                    await server.publish("chat", data="hi", event="join")
                    await server.publish("news", data="headline")

                nursery.start_soon(publish)
                async for event in source:
                    got.append((*split_event_type(event.type), event.data))
                    if len(got) == 2:
                        break
    assert got == [("chat", "join", "hi"), ("news", "message", "headline")]
    with pytest.raises(ValueError, match="twice"):
        topics_url("http://h", ["a", "a"])


async def test_listen_with_topics_prints_each_events_topic(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with running_server() as server, trio.open_nursery() as nursery:
        argv = ["listen", server.url, "--topic", "a", "--topic", "b", "--json"]
        argv += ["--max-events", "2", "--timeout", str(TIMEOUT)]
        nursery.start_soon(run_main, *argv)
        await server.wait_for_subscribers(2)
        id_b = await server.publish("b", data="one", event="note")
        id_a = await server.publish("a", data="two")
    out, err = capsys.readouterr()
    assert err == ""
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(line["topic"], line["event"], line["data"]) for line in lines] == [
        ("b", "note", "one"),
        ("a", "message", "two"),
    ]
    assert parse_position(lines[-1]["id"], 2) == [id_a, id_b]


# Ten topics, more than the six HTTP/1.1 connections a browser opens to one origin:
# one EventSource holds them all.
BROWSER_PAGE_SCRIPT = """
(topics) => {
  const url = "/events?" + topics.map((t) => "topic=" + encodeURIComponent(t)).join("&");
  const source = new EventSource(url);
  const got = {};
  window.received = new Promise((resolve, reject) => {
    for (const topic of topics) {
      source.addEventListener(topic, (event) => {
        got[topic] = {data: event.data, id: event.lastEventId};
        if (Object.keys(got).length === topics.length) { source.close(); resolve(got); }
      });
    }
    // Bounded: a page that never gets them all fails the test instead of hanging it.
    setTimeout(() => reject(new Error("got only " + Object.keys(got))), 15000);
  });
}
"""


@pytest.mark.slow
def test_a_browser_gets_ten_topics_on_one_eventsource_over_http1() -> None:
    executable = chromium_executable()
    topics = [f"room{i}" for i in range(10)]
    with (
        server_process(reference_server("--port", "0")) as api,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(15_000)
            # The API's origin (no CORS needed), over plain http://: HTTP/1.1, where a
            # browser opens at most 6 connections to one origin.
            page.goto(api.url + "/livez")
            page.evaluate(BROWSER_PAGE_SCRIPT, topics)
            with httpx.Client(base_url=api.url, timeout=10) as http:
                deadline = time.monotonic() + 10
                # The page's stream is open once the server counts its ten subscriptions.
                while http.get("/stats").json()["subscribers"] < len(topics):
                    assert time.monotonic() < deadline, "the page's stream did not open"
                    time.sleep(0.05)
                ids = {t: http.post(f"/events/{t}", json={"data": t}).json()["id"] for t in topics}
            got = page.evaluate("() => window.received")
        finally:
            browser.close()
    assert {t: got[t]["data"] for t in topics} == {t: t for t in topics}
    # The last event's id holds every topic's position.
    assert parse_position(got[topics[-1]]["id"], 10) == [ids[t] for t in topics]
