"""Issue 12 on the Redis backplane: bounded replay, history and topics; ids; idempotency.

Every test runs on a real redis-server (the session's, or one of its own when it
pauses Redis) and, where the finding is about HTTP answers, a real Hypercorn.
"""

from __future__ import annotations

import json
import os
import signal
import tracemalloc
import uuid
from contextlib import AsyncExitStack

import coredis
import httpx
import pytest
import trio

from tests.redis_server import RedisServer
from tests.test_broker_contract import ids_of, receive_ids
from tests.test_cli import serve_process
from tests.test_redis_broker import broker_on
from tests.wire import TIMEOUT, running_server
from trio_sse import BrokerUnavailableError, InvalidEventError, ServerSentEvent
from trio_sse.broker import REPLAY_PIECE, RESET_EVENT_TYPE
from trio_sse.redis import DEFAULT_KEY_PREFIX

MiB = 1024 * 1024


@pytest.fixture
def prefix() -> str:
    return f"test:{uuid.uuid4().hex}:"


def text(value: str | bytes | None) -> str:
    assert value is not None
    return value.decode() if isinstance(value, bytes) else value


async def keys_under(server: RedisServer, prefix: str) -> list[bytes]:
    async with coredis.Redis(port=server.port) as client:
        return sorted([key async for key in client.scan_iter(match=f"{prefix}*")])


# Finding 2: a stale reconnect costs one piece at a time, not its whole history.


@pytest.mark.slow
async def test_a_stale_replay_is_read_in_pieces_on_demand(
    redis_server: RedisServer, prefix: str
) -> None:
    big = "x" * 60_000
    async with (
        broker_on(redis_server, prefix, history_bytes=64 * MiB, queue_size=1000) as broker,
        broker.subscribe("t") as normal,
    ):
        ids = [await broker.publish("t", ServerSentEvent(big)) for _ in range(200)]
        assert await receive_ids(normal, 200) == ids
        tracemalloc.start()
        try:
            baseline = tracemalloc.get_traced_memory()[0]
            async with AsyncExitStack() as stack:
                # Eight clients reconnect with the oldest id and never read.
                stale = [
                    await stack.enter_async_context(broker.subscribe("t", last_event_id=ids[0]))
                    for _ in range(8)
                ]
                held = tracemalloc.get_traced_memory()[0] - baseline
                live = await broker.publish("t", ServerSentEvent("live"))
                # One of them reads: piece by piece, everything, then live.
                received: list[str] = []
                largest = 0
                with trio.fail_after(TIMEOUT * 2):
                    while len(received) < 200:
                        batch = await stale[0].receive_batch()
                        largest = max(largest, sum(map(len, batch)))
                        received += ids_of(batch)
        finally:
            tracemalloc.stop()
        assert received == [*ids[1:], live]
        assert held < 1 * MiB, f"8 stale subscriptions hold {held / MiB:.1f} MiB"
        assert largest <= REPLAY_PIECE + 61_000
        assert await receive_ids(normal, 1) == [live]


# Finding 3: history in bytes and age, idle topics expire, topics are capped.


async def test_history_is_bounded_in_bytes(redis_server: RedisServer, prefix: str) -> None:
    big = "x" * 64 * 1024
    async with (
        broker_on(redis_server, prefix, history_bytes=1 * MiB, queue_size=1000) as broker,
        broker.subscribe("t") as normal,
    ):
        ids = [await broker.publish("t", ServerSentEvent(big)) for _ in range(100)]
        assert await receive_ids(normal, 100) == ids
    async with coredis.Redis(port=redis_server.port) as client:
        length = await client.xlen(f"{prefix}{{t}}")
        usage = await client.memory_usage(f"{prefix}{{t}}")
    assert length <= 16, f"{length} entries of 64 KiB kept"
    assert usage is not None
    assert usage <= 1.5 * MiB, f"the stream takes {usage / MiB:.2f} MiB"


@pytest.mark.slow
async def test_history_is_bounded_in_age_and_idle_topics_expire(
    redis_server: RedisServer, prefix: str
) -> None:
    async with broker_on(redis_server, prefix, history_ttl=1.0) as broker:
        old = await broker.publish("t", ServerSentEvent("old"), idempotency_key="k-old")
        await trio.sleep(1.1)  # let the first event age past history_ttl
        new = await broker.publish("t", ServerSentEvent("new"))
        async with coredis.Redis(port=redis_server.port) as client:
            entries = await client.xrange(f"{prefix}{{t}}")
            ttl = await client.pttl(f"{prefix}{{t}}")
        assert [text(entry.identifier) for entry in entries] == [new]
        assert 0 < ttl <= 1000
        # Its id left history: the key publishes anew.
        again = await broker.publish("t", ServerSentEvent("old"), idempotency_key="k-old")
        assert again not in (old, new)
        # No publish for history_ttl: every key of the topic is gone from Redis.
        with trio.fail_after(TIMEOUT):
            while await keys_under(redis_server, prefix):  # noqa: ASYNC110 - Redis expiry
                await trio.sleep(0.1)


async def test_topics_created_through_the_backplane_are_capped(
    redis_server: RedisServer, prefix: str
) -> None:
    options = {"max_topics": 3, "history_ttl": 1.0}
    async with (
        broker_on(redis_server, prefix, **options) as one,
        broker_on(redis_server, prefix, **options) as two,  # another worker
        running_server(broker=one) as server,
    ):
        await server.publish("a", data="x")
        await server.publish("b", data="x")
        await two.publish("c", ServerSentEvent("x"))
        refused = await server.http.post("/events/d", json={"data": "x"})
        assert refused.status_code == 503, refused.text
        assert "max_topics" in refused.json()["error"]
        with pytest.raises(BrokerUnavailableError, match="max_topics"):
            await two.publish("d", ServerSentEvent("x"))
        # Existing topics still take events, and the backplane is not marked down.
        await server.publish("a", data="y")
        assert one.statistics().backplane.is_connected  # type: ignore[union-attr]
        # Once topics expire (history_ttl without a publish), new ones are accepted.
        with trio.fail_after(TIMEOUT):
            while (await server.http.post("/events/d", json={"data": "x"})).status_code != 202:  # noqa: ASYNC110 - Redis expiry signals nothing
                await trio.sleep(0.1)


# Finding 11: ids are validated before Redis sees them; none can wedge a topic.


async def test_ids_redis_cannot_take_are_400_and_never_wedge_a_topic(
    redis_server: RedisServer, prefix: str
) -> None:
    async with (
        broker_on(redis_server, prefix) as broker,
        running_server(broker=broker) as server,
        broker.subscribe("t") as normal,
    ):
        accepted = [await server.publish("t", data="a", id="5-1")]
        for bad in [
            "18446744073709551615-18446744073709551615",  # the largest id: no room after it
            "18446744073709551615-0",
            "١٢٣-1",  # Arabic-Indic digits
            "5-1",  # not above the newest
            "4-9",
            f"{2**64}-0",
            "9-" + "1" * 300,
            "0-0",
            "abc",
        ]:
            response = await server.http.post("/events/t", json={"data": "x", "id": bad})
            assert response.status_code == 400, (bad, response.status_code, response.text)
            assert "id" in response.json()["error"]
            assert broker.statistics().backplane.is_connected  # type: ignore[union-attr]
        metrics = (await server.http.get("/metrics")).text
        assert "trio_sse_backplane_up 1" in metrics
        # The <ms> form is a stream id too; the topic still takes events.
        accepted.append(await server.publish("t", data="b", id="7"))
        assert accepted[-1] == "7-0"
        accepted.append(await server.publish("t", data="c"))
        accepted.append(await server.publish("t", data="d", id="18446744073709551614-5"))
        accepted.append(await server.publish("t", data="e"))
        assert await receive_ids(normal, len(accepted)) == accepted


# Finding 12: idempotent publishing, atomic with the write.


async def test_a_repeated_idempotency_key_publishes_once(
    redis_server: RedisServer, prefix: str
) -> None:
    async with broker_on(redis_server, prefix) as broker, broker.subscribe("t") as normal:
        first = await broker.publish("t", ServerSentEvent("a"), idempotency_key="order-1")
        assert await broker.publish("t", ServerSentEvent("a"), idempotency_key="order-1") == first
        second = await broker.publish("t", ServerSentEvent("b"), idempotency_key="order-2")
        elsewhere = await broker.publish("u", ServerSentEvent("a"), idempotency_key="order-1")
        plain = await broker.publish("t", ServerSentEvent("c"))
        assert await broker.publish("t", ServerSentEvent("x"), idempotency_key="order-2") == second
        assert await receive_ids(normal, 3) == [first, second, plain]
        for bad in ["", "x" * 129, "has space", "é"]:
            with pytest.raises(InvalidEventError, match="idempotency key"):
                await broker.publish("t", ServerSentEvent("x"), idempotency_key=bad)
        assert broker.statistics().published == 4
    async with coredis.Redis(port=redis_server.port) as client:
        assert await client.xlen(f"{prefix}{{t}}") == 3
        (entry,) = await client.xrange(f"{prefix}{{u}}")
    assert text(entry.identifier) == elsewhere


async def test_a_key_publishes_anew_once_its_event_left_history(
    redis_server: RedisServer, prefix: str
) -> None:
    async with broker_on(redis_server, prefix, history=2) as broker:
        first = await broker.publish("t", ServerSentEvent("a"), idempotency_key="k")
        for i in range(3):
            await broker.publish("t", ServerSentEvent(str(i)))
        again = await broker.publish("t", ServerSentEvent("a"), idempotency_key="k")
        assert again != first
        assert await broker.publish("t", ServerSentEvent("a"), idempotency_key="k") == again
    # The keys of trimmed events are dropped with them: Redis holds one per retained event.
    async with coredis.Redis(port=redis_server.port) as client:
        assert await client.hlen(f"{prefix}{{t}}:keys") == 1


async def test_a_retry_after_a_timed_out_publish_does_not_duplicate(
    own_redis_server: RedisServer, prefix: str
) -> None:
    process = own_redis_server.process
    assert process is not None
    async with (
        broker_on(own_redis_server, prefix, command_timeout=1.0) as broker,
        broker_on(own_redis_server, prefix) as other,
        other.subscribe("t") as normal,
    ):
        os.kill(process.pid, signal.SIGSTOP)
        try:
            with trio.fail_after(TIMEOUT), pytest.raises(BrokerUnavailableError):
                await broker.publish("t", ServerSentEvent("once"), idempotency_key="k")
        finally:
            os.kill(process.pid, signal.SIGCONT)
        # Redis now runs the publish it had buffered; the publisher retries, same key.
        with trio.fail_after(TIMEOUT):
            while True:
                try:
                    event_id = await broker.publish(
                        "t", ServerSentEvent("once"), idempotency_key="k"
                    )
                    break
                except BrokerUnavailableError:
                    await trio.sleep(0.05)
        marker = await broker.publish("t", ServerSentEvent("marker"))
        assert await receive_ids(normal, 2) == [event_id, marker]
    async with coredis.Redis(port=own_redis_server.port) as client:
        entries = await client.xrange(f"{prefix}{{t}}")
    assert [text(entry.identifier) for entry in entries] == [event_id, marker]


# The byte and age trims may remove an entry before a lagging reader read it: the
# reader notices from the entry after it and tells its subscribers.


async def test_a_gap_in_live_delivery_gets_a_reset_notice(
    redis_server: RedisServer, prefix: str
) -> None:
    async with broker_on(redis_server, prefix) as broker, broker.subscribe("t") as sub:
        first = await broker.publish("t", ServerSentEvent("a"))
        assert await receive_ids(sub, 1) == [first]
        # As if an entry after `first` had been trimmed before this reader read it.
        async with coredis.Redis(port=redis_server.port) as client:
            ms, seq = first.split("-")
            missing = f"{ms}-{int(seq) + 1}"
            after = await client.xadd(
                f"{prefix}{{t}}",
                {"data": "c", "t": "0", "p": missing},
                identifier=f"{ms}-{int(seq) + 2}",
            )
        with trio.fail_after(TIMEOUT):
            frames = await sub.receive_batch()
            while len(frames) < 2:
                frames += await sub.receive_batch()
    notice = frames[0].decode()
    assert notice.startswith(f"event: {RESET_EVENT_TYPE}\n")
    payload = json.loads(next(line[6:] for line in notice.split("\n") if line.startswith("data: ")))
    assert payload["last_event_id"] == first
    assert ids_of(frames[1:]) == [text(after)]


@pytest.mark.slow
async def test_serve_passes_the_history_and_topic_bounds_to_redis(
    own_redis_server: RedisServer,
) -> None:
    # A Redis of its own: the topic cap counts every topic under the default prefix.
    flags = ["--max-topics", "1", "--history-ttl", "30", "--history-bytes", "1000"]
    async with (
        serve_process("--broker", own_redis_server.url, *flags) as (_, (host, port)),
        httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=TIMEOUT) as http,
    ):
        for data in ["x" * 600, "y" * 600]:
            assert (await http.post("/events/a", json={"data": data})).status_code == 202
        assert (await http.post("/events/b", json={"data": "x"})).status_code == 503
    async with coredis.Redis(port=own_redis_server.port) as client:
        assert await client.xlen(f"{DEFAULT_KEY_PREFIX}{{a}}") == 1
        assert 0 < await client.pttl(f"{DEFAULT_KEY_PREFIX}{{a}}") <= 30_000
