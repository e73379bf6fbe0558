"""Batch publish: one event to many topics, all or nothing, each topic once.

``Broker.publish_many`` on every broker (memory, Redis, Redis Cluster), then
``POST /publish`` over a real Hypercorn with the memory and the Redis broker.
"""

from __future__ import annotations

import binascii
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import jwt
import pytest
import trio

from tests import test_broker_contract
from tests.redis_server import RedisClusterServers, RedisServer
from tests.test_broker_contract import OpenBroker, drain, ids_of, order, receive_ids
from tests.wire import TIMEOUT, Server, SSEConnection, running_server
from trio_sse import (
    BrokerUnavailableError,
    InvalidEventError,
    InvalidTopicError,
    MemoryBroker,
    ServerSentEvent,
)
from trio_sse.app import DEFAULT_MAX_TOPICS_PER_PUBLISH
from trio_sse.web import AuthConfig

SECRET = "batch-publish-test-secret-of-32-bytes"

# Every broker: memory, Redis, Redis Cluster.
open_broker = test_broker_contract.open_broker


def token(publish: list[str]) -> str:
    return jwt.encode({"trio_sse": {"publish": publish}}, SECRET, algorithm="HS256")


def hash_slot(key: bytes) -> int:
    """The Redis Cluster slot of ``key`` (no hash tag inside): CRC-16/XMODEM mod 16384."""
    return binascii.crc_hqx(key, 0) % 16384


def topics_in_one_slot(count: int) -> list[str]:
    """``count`` topic names whose keys share a Redis Cluster slot."""
    run = uuid.uuid4().hex[:6]
    by_slot: dict[int, list[str]] = {}
    for i in range(100_000):
        name = f"s{run}-{i}"
        # A topic's keys are <prefix>{<topic>}: the topic is their hash tag.
        names = by_slot.setdefault(hash_slot(name.encode()), [])
        names.append(name)
        if len(names) == count:
            return names
    raise AssertionError("no slot found")  # pragma: no cover


# The brokers ----------------------------------------------------------------------


@pytest.mark.slow
async def test_publish_many_gives_each_topic_the_event_once(open_broker: OpenBroker) -> None:
    async with (
        open_broker() as broker,
        broker.subscribe("a") as a,
        broker.subscribe("b") as b,
        broker.subscribe("c") as c,
    ):
        ids = await broker.publish_many(["a", "b"], ServerSentEvent("x", event="note"))
        assert list(ids) == ["a", "b"]
        assert await receive_ids(a, 1) == [ids["a"]]
        assert await receive_ids(b, 1) == [ids["b"]]
        # Once: the next event of each topic follows it directly.
        after = await broker.publish_many(["a", "b", "c"], ServerSentEvent("y"))
        assert await receive_ids(a, 1) == [after["a"]]
        assert await receive_ids(b, 1) == [after["b"]]
        assert await receive_ids(c, 1) == [after["c"]]
        for topic in ("a", "b"):
            assert order(after[topic]) > order(ids[topic])
        assert broker.statistics().published == 5


async def test_publish_many_refuses_a_bad_topic_and_publishes_nothing(
    open_broker: OpenBroker,
) -> None:
    async with open_broker() as broker, broker.subscribe("a") as a:
        for topics in (["a", "not a topic"], ["a", "b", "a"], []):
            with pytest.raises(InvalidTopicError):
                await broker.publish_many(topics, ServerSentEvent("x"))
        marker = await broker.publish("a", ServerSentEvent("marker"))
        assert await receive_ids(a, 1) == [marker]
        assert broker.statistics().published == 1


async def test_publish_many_repeats_nothing_for_a_repeated_key(open_broker: OpenBroker) -> None:
    async with open_broker() as broker, broker.subscribe("a") as a, broker.subscribe("b") as b:
        event = ServerSentEvent("x")
        first = await broker.publish_many(["a", "b"], event, idempotency_key="k1")
        again = await broker.publish_many(["a", "b"], event, idempotency_key="k1")
        assert again == first
        # Keys are per topic: a topic the first batch did not have gets the event.
        wider = await broker.publish_many(["a", "b", "c"], event, idempotency_key="k1")
        assert {t: wider[t] for t in ("a", "b")} == first
        assert "c" in wider
        marker = await broker.publish_many(["a", "b"], ServerSentEvent("m"))
        assert await receive_ids(a, 2) == [first["a"], marker["a"]]
        assert await receive_ids(b, 2) == [first["b"], marker["b"]]
        assert broker.statistics().published == 5


async def test_memory_publish_many_encodes_the_event_once() -> None:
    broker = MemoryBroker()
    async with broker.subscribe("a") as a, broker.subscribe("b") as b:
        ids = await broker.publish_many(["a", "b"], ServerSentEvent("x"))
        # One id for the batch, so one frame shared by every topic.
        assert ids["a"] == ids["b"]
        (frame_a,) = drain(a)
        (frame_b,) = drain(b)
        assert frame_a is frame_b


async def test_memory_publish_many_refuses_an_id_one_topic_cannot_take() -> None:
    broker = MemoryBroker()
    async with broker.subscribe("a") as a:
        await broker.publish("b", ServerSentEvent("x", id="50"))
        with pytest.raises(InvalidEventError, match="not above 50"):
            await broker.publish_many(["a", "b"], ServerSentEvent("y", id="10"))
        assert drain(a) == []
        assert broker.statistics().published == 1
        ids = await broker.publish_many(["a", "b"], ServerSentEvent("y", id="60"))
        assert ids == {"a": "60", "b": "60"}
        assert ids_of(drain(a)) == ["60"]


async def test_memory_publish_many_refuses_when_the_new_topics_do_not_fit() -> None:
    broker = MemoryBroker(max_topics=3)
    async with broker.subscribe("a") as a, broker.subscribe("b") as b:
        with pytest.raises(BrokerUnavailableError, match="max_topics"):
            await broker.publish_many(["a", "c", "d"], ServerSentEvent("x"))
        assert drain(a) == []
        assert broker.statistics().published == 0
        # A topic without subscribers makes room for a new one...
        await broker.publish("c", ServerSentEvent("x"))
        ids = await broker.publish_many(["a", "b", "d"], ServerSentEvent("y"))
        assert ids_of(drain(a)) == [ids["a"]]
        assert ids_of(drain(b)) == [ids["b"]]
        # ... but never one of the batch for another.
        with pytest.raises(BrokerUnavailableError, match="max_topics"):
            await broker.publish_many(["a", "d", "e"], ServerSentEvent("z"))
        assert drain(a) == []
        assert broker.statistics().published == 4


async def test_redis_publish_many_is_all_or_nothing_on_a_refused_id(
    redis_server: RedisServer,
) -> None:
    from trio_sse.redis import open_redis_broker  # noqa: PLC0415

    prefix = f"test:{uuid.uuid4().hex}:"
    async with open_redis_broker(redis_server.url, key_prefix=prefix) as broker:
        async with broker.subscribe("a") as a:
            await broker.publish("b", ServerSentEvent("x", id="50-0"))
            with pytest.raises(InvalidEventError, match="'b'"):
                await broker.publish_many(["a", "b"], ServerSentEvent("y", id="10-0"))
            ids = await broker.publish_many(["a", "b"], ServerSentEvent("y", id="60-0"))
            assert ids == {"a": "60-0", "b": "60-0"}
            # Nothing of the refused batch reached "a".
            assert await receive_ids(a, 1) == ["60-0"]
        assert broker.statistics().published == 3


async def test_redis_publish_many_is_all_or_nothing_at_the_topic_cap(
    redis_server: RedisServer,
) -> None:
    from trio_sse.redis import open_redis_broker  # noqa: PLC0415

    prefix = f"test:{uuid.uuid4().hex}:"
    async with open_redis_broker(redis_server.url, key_prefix=prefix, max_topics=3) as broker:
        await broker.publish("a", ServerSentEvent("x"))
        with pytest.raises(BrokerUnavailableError, match=r"max_topics"):
            await broker.publish_many(["a", "b", "c", "d"], ServerSentEvent("y"))
        assert broker.statistics().published == 1
        ids = await broker.publish_many(["a", "b", "c"], ServerSentEvent("y"))
        assert set(ids) == {"a", "b", "c"}


async def test_cluster_publish_many_spans_slots_and_keeps_an_own_id_to_one_slot(
    redis_cluster: RedisClusterServers,
) -> None:
    """Across slots: one script per slot (the weaker guarantee the docs state); an
    event with an id of its own only within one slot, where it is atomic."""
    from trio_sse.redis import open_redis_broker  # noqa: PLC0415

    prefix = f"test:{uuid.uuid4().hex}:"
    same = topics_in_one_slot(2)
    async with (
        open_redis_broker(redis_cluster.url, key_prefix=prefix) as broker,
        broker.subscribe(same[0]) as first,
        broker.subscribe("c3") as spread_reader,
    ):
        spread = [f"c{i}" for i in range(10)]
        assert len({hash_slot(topic.encode()) for topic in spread}) > 1
        with trio.fail_after(TIMEOUT):
            ids = await broker.publish_many(spread, ServerSentEvent("x"))
            again = await broker.publish_many(spread, ServerSentEvent("x"), idempotency_key="k")
            assert (
                await broker.publish_many(spread, ServerSentEvent("x"), idempotency_key="k")
                == again
            )
        assert list(ids) == spread
        assert await receive_ids(spread_reader, 2) == [ids["c3"], again["c3"]]
        with pytest.raises(InvalidEventError, match="one slot"):
            await broker.publish_many([same[0], "c0"], ServerSentEvent("y", id="90-0"))
        await broker.publish(same[1], ServerSentEvent("x", id="50-0"))
        with pytest.raises(InvalidEventError, match=repr(same[1])):
            await broker.publish_many(same, ServerSentEvent("y", id="10-0"))
        ids = await broker.publish_many(same, ServerSentEvent("y", id="60-0"))
        assert ids == dict.fromkeys(same, "60-0")
        assert await receive_ids(first, 1) == ["60-0"]
        assert broker.statistics().published == 23


# Over HTTP ------------------------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
def broker_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@asynccontextmanager
async def serving(
    kind: str, request: pytest.FixtureRequest, **app_options: Any
) -> AsyncIterator[Server]:
    if kind == "memory":
        async with running_server(**app_options) as server:
            yield server
        return
    from trio_sse.redis import open_redis_broker  # noqa: PLC0415

    redis: RedisServer = request.getfixturevalue("redis_server")
    prefix = f"test:{uuid.uuid4().hex}:"
    async with (
        open_redis_broker(redis.url, key_prefix=prefix) as broker,
        running_server(broker=broker, **app_options) as server,
    ):
        yield server


async def read_ids(conn: SSEConnection, count: int) -> list[tuple[str, str]]:
    events = await conn.read_events(count)
    return [(event.data, event.last_event_id) for event in events]


async def test_http_batch_publish_answers_the_id_per_topic_and_delivers_once(
    broker_kind: str, request: pytest.FixtureRequest
) -> None:
    async with serving(broker_kind, request) as server:
        streams = [await SSEConnection.open(server, f"/events/{t}") for t in "abc"]
        try:
            await server.wait_for_subscribers(3)
            response = await server.http.post(
                "/publish", json={"topics": ["a", "b"], "data": {"n": 1}, "event": "note"}
            )
            assert response.status_code == 202, response.text
            ids = response.json()["ids"]
            assert set(ids) == {"a", "b"}
            markers = {t: await server.publish(t, data="marker") for t in "abc"}
            a, b, c = streams
            assert await read_ids(a, 2) == [('{"n":1}', ids["a"]), ("marker", markers["a"])]
            assert await read_ids(b, 2) == [('{"n":1}', ids["b"]), ("marker", markers["b"])]
            assert await read_ids(c, 1) == [("marker", markers["c"])]
        finally:
            for stream in streams:
                await stream.close_fin()
        assert server.broker.statistics().published == 5


async def test_http_batch_publish_refused_for_one_topic_publishes_nothing(
    broker_kind: str, request: pytest.FixtureRequest
) -> None:
    auth = AuthConfig(jwt_key=SECRET)
    async with serving(broker_kind, request, auth=auth) as server:
        stream = await SSEConnection.open(server, "/events/chat.a")
        try:
            await server.wait_for_subscribers(1)
            allowed = {"Authorization": f"Bearer {token(['chat.*'])}"}
            refused = await server.http.post(
                "/publish",
                json={"topics": ["chat.a", "news", "chat.b"], "data": "x"},
                headers=allowed,
            )
            assert refused.status_code == 403
            assert refused.json() == {"error": "the token does not allow publish on topic 'news'"}
            anonymous = await server.http.post("/publish", json={"topics": ["chat.a"], "data": "x"})
            assert anonymous.status_code == 401
            bad_name = await server.http.post(
                "/publish", json={"topics": ["chat.a", "chat b"], "data": "x"}, headers=allowed
            )
            assert bad_name.status_code == 400
            assert bad_name.json()["error"].startswith("topics[1]: topic must be")
            marker = await server.http.post(
                "/publish", json={"topics": ["chat.a"], "data": "marker"}, headers=allowed
            )
            assert marker.status_code == 202
            assert await read_ids(stream, 1) == [("marker", marker.json()["ids"]["chat.a"])]
        finally:
            await stream.close_fin()
        assert server.broker.statistics().published == 1


async def test_http_batch_publish_repeats_nothing_for_a_repeated_key(
    broker_kind: str, request: pytest.FixtureRequest
) -> None:
    async with serving(broker_kind, request) as server:
        streams = [await SSEConnection.open(server, f"/events/{t}") for t in "ab"]
        try:
            await server.wait_for_subscribers(2)
            answers = [
                await server.http.post(
                    "/publish",
                    json={"topics": ["a", "b"], "data": "once"},
                    headers={"Idempotency-Key": "batch-7"},
                )
                for _ in range(3)
            ]
            assert [answer.status_code for answer in answers] == [202] * 3
            first, *rest = (answer.json() for answer in answers)
            assert rest == [first, first]
            markers = {t: await server.publish(t, data="marker") for t in "ab"}
            for topic, stream in zip("ab", streams, strict=True):
                assert await read_ids(stream, 2) == [
                    ("once", first["ids"][topic]),
                    ("marker", markers[topic]),
                ]
        finally:
            for stream in streams:
                await stream.close_fin()
        assert server.broker.statistics().published == 4


async def test_http_batch_publish_caps_the_topics(
    broker_kind: str, request: pytest.FixtureRequest
) -> None:
    async with serving(broker_kind, request) as server:
        cap = DEFAULT_MAX_TOPICS_PER_PUBLISH
        over = await server.http.post(
            "/publish", json={"topics": [f"t{i}" for i in range(cap + 1)], "data": "x"}
        )
        assert over.status_code == 400
        assert over.json() == {
            "error": f'"topics" lists {cap + 1} topics; a publish may list at most {cap}'
        }
        at = await server.http.post(
            "/publish", json={"topics": [f"t{i}" for i in range(cap)], "data": "x"}
        )
        assert at.status_code == 202, at.text
        assert len(at.json()["ids"]) == cap
        assert server.broker.statistics().published == cap


async def test_http_batch_publish_cap_is_configurable() -> None:
    async with running_server(max_topics_per_publish=2) as server:
        over = await server.http.post("/publish", json={"topics": ["a", "b", "c"], "data": "x"})
        assert over.status_code == 400
        assert "at most 2" in over.json()["error"]
    with pytest.raises(ValueError, match="max_topics_per_publish"):
        async with running_server(max_topics_per_publish=0):
            pass  # pragma: no cover


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"data": "x"}, 'missing field "topics"'),
        ({"topics": "a", "data": "x"}, '"topics" must be a list of topic names'),
        ({"topics": [], "data": "x"}, '"topics" must list at least one topic'),
        ({"topics": ["a", 3], "data": "x"}, "topics[1]: topic must be"),
        ({"topics": ["a", "b", "a"], "data": "x"}, "topic 'a' is listed twice"),
        ({"topics": ["a"]}, 'missing field "data"'),
        ({"topics": ["a"], "data": "x", "topic": "b"}, "unknown field(s): topic"),
        ({"topics": ["a"], "data": "x", "id": ""}, '"id" must not be empty'),
    ],
)
async def test_http_batch_publish_refuses_a_bad_body(body: dict[str, Any], error: str) -> None:
    async with running_server() as server:
        response = await server.http.post("/publish", json=body)
        assert response.status_code == 400
        assert error in response.json()["error"]
        assert server.broker.statistics().published == 0


async def test_http_batch_publish_needs_json() -> None:
    async with running_server() as server:
        response = await server.http.post(
            "/publish",
            content=b'{"topics": ["a"], "data": "x"}',
            headers={"Content-Type": "text/plain"},
        )
        assert response.status_code == 415
        assert server.broker.statistics().published == 0


async def test_http_batch_publish_refuses_an_id_one_topic_cannot_take() -> None:
    async with running_server() as server:
        stream = await SSEConnection.open(server, "/events/a")
        try:
            await server.wait_for_subscribers(1)
            await server.publish("b", data="x", id="50")
            response = await server.http.post(
                "/publish", json={"topics": ["a", "b"], "data": "y", "id": "10"}
            )
            assert response.status_code == 400
            assert "not above 50" in response.json()["error"]
            marker = await server.publish("a", data="marker")
            assert await read_ids(stream, 1) == [("marker", marker)]
        finally:
            await stream.close_fin()


async def test_redis_publish_many_waits_for_replicas_once_for_the_batch(
    redis_server: RedisServer,
) -> None:
    """With min_replicas, a batch too few replicas took is stored and says so; a retry
    with its key stores nothing more (the session's Redis has no replica)."""
    from trio_sse.redis import open_redis_broker  # noqa: PLC0415

    prefix = f"test:{uuid.uuid4().hex}:"
    async with open_redis_broker(
        redis_server.url, key_prefix=prefix, min_replicas=1, replica_timeout=0.05
    ) as broker:
        for _ in range(2):
            with pytest.raises(BrokerUnavailableError, match="acknowledged by 0 of 1 replicas"):
                await broker.publish_many(["a", "b"], ServerSentEvent("x"), idempotency_key="k")
        assert broker.statistics().published == 2
