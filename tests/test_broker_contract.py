"""The Broker contract, run against every implementation: one behaviour, two brokers.

Each test gets ``open_broker``, a factory for an entered broker: the in-memory one,
and the Redis one on the session's real redis-server and on its Redis Cluster (each
test with keys of its own). Behaviour only one broker has is tested in test_broker.py (memory) and
test_redis_broker.py.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio

from tests.redis_server import RedisClusterServers, RedisServer
from tests.wire import TIMEOUT
from trio_sse import (
    Broker,
    BrokerClosedError,
    CloseReason,
    InvalidTopicError,
    MemoryBroker,
    ServerSentEvent,
    Subscription,
)
from trio_sse.broker import RESET_EVENT_TYPE, Presence

OpenBroker = Callable[..., AbstractAsyncContextManager[Broker]]


@asynccontextmanager
async def open_memory_broker(**options: Any) -> AsyncIterator[Broker]:
    broker = MemoryBroker(**options)
    try:
        yield broker
    finally:
        await broker.aclose()


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
def open_broker(request: pytest.FixtureRequest) -> OpenBroker:
    if request.param == "memory":
        return open_memory_broker
    from trio_sse.redis import open_redis_broker  # noqa: PLC0415 - needs the redis extra

    server: RedisServer | RedisClusterServers = request.getfixturevalue(
        "redis_cluster" if request.param == "redis-cluster" else "redis_server"
    )
    return partial(open_redis_broker, server.url, key_prefix=f"test:{uuid.uuid4().hex}:")


def ids_of(frames: list[bytes]) -> list[str]:
    return [line[4:] for f in frames for line in f.decode().split("\n") if line.startswith("id: ")]


def order(event_id: str) -> tuple[int, ...]:
    """Both brokers' ids as comparable tuples: "17" -> (17,), "17-3" -> (17, 3)."""
    return tuple(int(part) for part in event_id.split("-"))


def drain(subscription: Subscription) -> list[bytes]:
    """Everything queued now, without waiting."""
    try:
        return subscription.receive_batch_nowait(10_000)
    except trio.WouldBlock:
        return []


async def receive(subscription: Subscription) -> list[bytes]:
    with trio.fail_after(TIMEOUT):
        return await subscription.receive_batch()


async def receive_ids(subscription: Subscription, count: int) -> list[str]:
    """Ids of the next ``count`` events (the Redis broker delivers from its reader task)."""
    received: list[str] = []
    with trio.fail_after(TIMEOUT):
        while len(received) < count:
            received += ids_of(await subscription.receive_batch())
    return received


async def test_publish_fans_out_one_shared_frame_to_every_subscriber(
    open_broker: OpenBroker,
) -> None:
    async with (
        open_broker() as broker,
        broker.subscribe("t") as a,
        broker.subscribe("t") as b,
        broker.subscribe("u") as c,
    ):
        event_id = await broker.publish("t", ServerSentEvent("hello"))
        (frame_a,) = await receive(a)
        (frame_b,) = await receive(b)
        assert frame_a == f"id: {event_id}\ndata: hello\n\n".encode()
        assert frame_a is frame_b  # encoded once, shared
        assert drain(c) == []
        stats = broker.statistics()
        assert stats.subscribers == 3
        assert dict(stats.subscribers_per_topic) == {"t": 2, "u": 1}
        assert (stats.published, stats.delivered, stats.dropped) == (1, 2, 0)


async def test_event_fields_survive_the_broker(open_broker: OpenBroker) -> None:
    async with open_broker() as broker, broker.subscribe("t") as sub:
        event = ServerSentEvent("line 1\nline 2 é", event="update", retry=1500)
        event_id = await broker.publish("t", event)
        (frame,) = await receive(sub)
        expected = f"event: update\nid: {event_id}\nretry: 1500\ndata: line 1\ndata: line 2 é\n\n"
        assert frame == expected.encode()


async def test_assigned_ids_increase_within_a_topic(open_broker: OpenBroker) -> None:
    async with open_broker() as broker:
        ids = [await broker.publish("a", ServerSentEvent(str(i))) for i in range(20)]
    assert [order(i) for i in ids] == sorted(order(i) for i in ids)
    assert len(set(ids)) == 20


async def test_events_arrive_in_publish_order(open_broker: OpenBroker) -> None:
    async with open_broker() as broker, broker.subscribe("t") as sub:
        ids = [await broker.publish("t", ServerSentEvent(str(i))) for i in range(10)]
        assert await receive_ids(sub, 10) == ids
        assert drain(sub) == []


@pytest.mark.parametrize("exit_path", ["return", "error", "cancel"])
async def test_leaving_subscribe_by_any_path_unsubscribes(
    open_broker: OpenBroker, exit_path: str
) -> None:
    seen: list[Subscription] = []
    async with open_broker() as broker:
        entered = trio.Event()

        async def subscriber() -> None:
            async with broker.subscribe("t") as sub:
                seen.append(sub)
                entered.set()
                if exit_path == "error":
                    raise KeyError("boom")
                if exit_path == "cancel":
                    await trio.sleep_forever()

        with trio.fail_after(TIMEOUT):
            if exit_path == "error":
                with pytest.raises(KeyError):
                    await subscriber()
            elif exit_path == "cancel":
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(subscriber)
                    await entered.wait()
                    nursery.cancel_scope.cancel()
            else:
                await subscriber()
        assert broker.statistics().subscribers == 0
        await broker.publish("t", ServerSentEvent("x"))
        assert broker.statistics().delivered == 0
        # The channel is released.
        with pytest.raises(trio.ClosedResourceError):
            seen[0].receive_batch_nowait()


async def test_slow_consumer_is_dropped_alone_and_publisher_never_blocks(
    open_broker: OpenBroker,
) -> None:
    async with (
        open_broker(queue_size=4) as broker,
        broker.subscribe("t") as slow,
        broker.subscribe("t") as fast,
    ):
        delivered_to_fast: list[bytes] = []
        with trio.fail_after(TIMEOUT):  # a blocked publish would trip this
            for i in range(20):
                await broker.publish("t", ServerSentEvent(str(i)))
                delivered_to_fast += await fast.receive_batch()
        assert len(delivered_to_fast) == 20
        assert slow.close_reason is CloseReason.SLOW_CONSUMER
        # The slow one's queue is discarded: it gets the end at once, and will
        # resume from history.
        with pytest.raises(trio.EndOfChannel):
            await receive(slow)
        stats = broker.statistics()
        assert (stats.dropped, stats.subscribers) == (1, 1)
        assert fast.close_reason is None


async def test_replay_after_last_event_id_then_live_without_gap_or_duplicate(
    open_broker: OpenBroker,
) -> None:
    async with open_broker(history=100) as broker:
        ids = [await broker.publish("t", ServerSentEvent(str(i))) for i in range(10)]
        async with broker.subscribe("t", last_event_id=ids[3]) as sub:
            ids.append(await broker.publish("t", ServerSentEvent("live")))
            assert await receive_ids(sub, 7) == ids[4:]
            assert drain(sub) == []


async def test_replay_hand_over_under_concurrent_publishing(open_broker: OpenBroker) -> None:
    published: list[str] = []
    received: list[str] = []
    hundred_published = trio.Event()

    async with open_broker(history=10_000, queue_size=10_000) as broker:

        async def publisher() -> None:
            for i in range(500):
                published.append(await broker.publish("t", ServerSentEvent(str(i))))
                if i == 99:
                    hundred_published.set()
                if i % 7 == 0:
                    # Let the subscriber run mid-stream, so it joins while events flow.
                    await trio.lowlevel.checkpoint()

        async def late_subscriber() -> None:
            await hundred_published.wait()
            async with broker.subscribe("t", last_event_id=published[49]) as sub:
                while len(received) < 450:
                    received.extend(ids_of(await sub.receive_batch()))

        with trio.fail_after(TIMEOUT * 4):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(publisher)
                nursery.start_soon(late_subscriber)
    assert received == published[50:]


async def test_replay_from_the_newest_id_gives_only_live_events(open_broker: OpenBroker) -> None:
    async with open_broker() as broker:
        newest = await broker.publish("t", ServerSentEvent("old"))
        async with broker.subscribe("t", last_event_id=newest) as sub:
            assert drain(sub) == []
            live = await broker.publish("t", ServerSentEvent("new"))
            assert await receive_ids(sub, 1) == [live]


@pytest.mark.parametrize("case", ["unknown", "expired", "empty-topic", "from-the-future"])
async def test_unplaceable_last_event_id_gets_a_reset_notice_first(
    open_broker: OpenBroker, case: str
) -> None:
    # Redis trims whole internal nodes (up to 100 entries), so "expired" needs more
    # events than history plus a node.
    async with open_broker(history=5) as broker:
        ids = []
        if case != "empty-topic":
            ids = [await broker.publish("t", ServerSentEvent(str(i))) for i in range(250)]
        asked = {
            "unknown": "nope",
            "expired": ids[0] if ids else "",
            "empty-topic": "41",
            "from-the-future": "99999999999999-0",
        }[case]
        async with broker.subscribe("t", last_event_id=asked) as sub:
            live = await broker.publish("t", ServerSentEvent("live"))
            frames: list[bytes] = []
            with trio.fail_after(TIMEOUT):
                while live not in ids_of(frames):
                    frames += await sub.receive_batch()
        notice, *rest = frames
        lines = notice.decode().split("\n")
        assert lines[0] == f"event: {RESET_EVENT_TYPE}"
        payload = json.loads(next(line[6:] for line in lines if line.startswith("data: ")))
        assert payload["last_event_id"] == asked
        *replayed, last = ids_of(rest)
        assert last == live
        if not replayed:
            # The notice carries the newest id, so a reconnect after it resumes there.
            assert ids_of([notice]) == ids[-1:]
        else:
            # A broker that can tell which retained events came after an expired id
            # (the memory broker: its ids are numbers) sends them after the notice,
            # whose id resumes just before them, without a second notice.
            assert case == "expired"
            assert replayed == ids[-len(replayed) :]
            (resume,) = ids_of([notice])
            async with broker.subscribe("t", last_event_id=resume) as again:
                assert ids_of(await receive(again)) == [*replayed, live]


async def test_replay_longer_than_the_queue_is_not_a_slow_consumer(
    open_broker: OpenBroker,
) -> None:
    async with open_broker(history=50, queue_size=2) as broker:
        ids = [await broker.publish("t", ServerSentEvent(str(i))) for i in range(50)]
        async with broker.subscribe("t", last_event_id=ids[0]) as sub:
            assert ids_of(await receive(sub)) == ids[1:]
            assert sub.close_reason is None


async def test_aclose_ends_streams_cleanly_and_refuses_new_work(open_broker: OpenBroker) -> None:
    async with open_broker() as broker:
        async with broker.subscribe("t") as sub:
            await broker.publish("t", ServerSentEvent("last words"))
            assert len(await receive(sub)) == 1
            await broker.aclose()
            assert broker.is_closed
            with pytest.raises(trio.EndOfChannel):
                await receive(sub)
            assert sub.close_reason is CloseReason.SHUTDOWN
            with pytest.raises(BrokerClosedError):
                await broker.publish("t", ServerSentEvent("late"))
            with pytest.raises(BrokerClosedError):
                async with broker.subscribe("t"):
                    pass  # pragma: no cover
            with pytest.raises(BrokerClosedError):
                await broker.ping()
        await broker.aclose()  # idempotent
        assert broker.statistics().subscribers == 0


@pytest.mark.parametrize("topic", ["", "a b", "x" * 129, "a/b", "é", "a\n"])
async def test_bad_topics_are_refused_and_nothing_is_published(
    open_broker: OpenBroker, topic: str
) -> None:
    async with open_broker() as broker:
        with pytest.raises(InvalidTopicError):
            await broker.publish(topic, ServerSentEvent("x"))
        with pytest.raises(InvalidTopicError):
            async with broker.subscribe(topic):
                pass  # pragma: no cover
        assert broker.statistics().published == 0


async def test_cancelled_publish_publishes_nothing(open_broker: OpenBroker) -> None:
    async with open_broker() as broker, broker.subscribe("t") as sub:
        with trio.CancelScope() as scope:
            scope.cancel()
            await broker.publish("t", ServerSentEvent("x"))
        assert broker.statistics().published == 0
        # A later event is the first one the subscriber sees.
        after = await broker.publish("t", ServerSentEvent("y"))
        assert ids_of(await receive(sub)) == [after]


async def test_cancelled_receive_takes_no_frame(open_broker: OpenBroker) -> None:
    async with open_broker() as broker, broker.subscribe("t") as sub:
        await broker.publish("t", ServerSentEvent("x"))
        with trio.CancelScope() as scope:
            scope.cancel()
            await sub.receive_batch()
        assert len(await receive(sub)) == 1


async def test_statistics_is_an_immutable_snapshot(open_broker: OpenBroker) -> None:
    async with open_broker() as broker:
        async with broker.subscribe("t"):
            snapshot = broker.statistics()
        assert snapshot.subscribers == 1
        assert broker.statistics().subscribers == 0
        with pytest.raises(TypeError):
            snapshot.subscribers_per_topic["t"] = 5  # type: ignore[index]


async def test_ping_answers_while_open(open_broker: OpenBroker) -> None:
    async with open_broker() as broker:
        with trio.fail_after(TIMEOUT):
            await broker.ping()


# Presence and backlog


async def presence_of(broker: Broker, topic: str, expected: Presence, **options: Any) -> Presence:
    """Presence once it equals ``expected`` (a Redis broker writes it out within ~50 ms)."""
    with trio.fail_after(TIMEOUT):
        while (found := await broker.presence(topic, **options)) != expected:  # noqa: ASYNC110
            # (Nothing tells of a write to Redis by another task: poll.)
            await trio.sleep(0.02)
    return found


def data_of(frames: list[bytes]) -> list[tuple[str, str]]:
    """(event type, data) of each frame."""
    events = []
    for frame in frames:
        fields = dict(line.split(": ", 1) for line in frame.decode().strip().split("\n"))
        events.append((fields.get("event", "message"), fields["data"]))
    return events


async def receive_events(subscription: Subscription, count: int) -> list[tuple[str, str]]:
    events: list[tuple[str, str]] = []
    with trio.fail_after(TIMEOUT):
        while len(events) < count:
            events += data_of(await subscription.receive_batch())
    return events


async def test_presence_counts_streams_and_distinct_subjects(open_broker: OpenBroker) -> None:
    async with open_broker() as broker:
        assert await broker.presence("room") == Presence("room", 0, (), 0)
        async with (
            broker.subscribe("room", subject="bo"),
            broker.subscribe("room", subject="ana"),
            broker.subscribe("room", subject="ana"),  # a second tab
            broker.subscribe("room"),  # no token: a stream, no subject
            broker.subscribe("other", subject="cy"),
        ):
            await presence_of(broker, "room", Presence("room", 4, ("ana", "bo"), 2))
            await presence_of(broker, "room", Presence("room", 4, ("ana",), 2), limit=1)
            await presence_of(broker, "other", Presence("other", 1, ("cy",), 1))
        await presence_of(broker, "room", Presence("room", 0, (), 0))
        await presence_of(broker, "other", Presence("other", 0, (), 0))


async def test_presence_events_once_per_subject_however_many_streams(
    open_broker: OpenBroker,
) -> None:
    async with open_broker(presence_events=True) as broker, broker.subscribe("room") as watcher:
        async with broker.subscribe("room", subject="ana"):
            async with broker.subscribe("room", subject="ana"):
                assert await receive_events(watcher, 1) == [("join", '{"sub":"ana"}')]
                async with broker.subscribe("room", subject="bo"):
                    assert await receive_events(watcher, 1) == [("join", '{"sub":"bo"}')]
                assert await receive_events(watcher, 1) == [("leave", '{"sub":"bo"}')]
            # ana still has a stream open: no leave yet, whatever comes next comes first.
            await broker.publish("room", ServerSentEvent("marker"))
            assert await receive_events(watcher, 1) == [("message", "marker")]
        assert await receive_events(watcher, 1) == [("leave", '{"sub":"ana"}')]


async def test_no_presence_events_unless_asked(open_broker: OpenBroker) -> None:
    async with open_broker() as broker, broker.subscribe("room") as watcher:
        async with broker.subscribe("room", subject="ana"):
            await presence_of(broker, "room", Presence("room", 2, ("ana",), 1))
        await presence_of(broker, "room", Presence("room", 1, (), 0))
        await broker.publish("room", ServerSentEvent("only this"))
        assert await receive_events(watcher, 1) == [("message", "only this")]


@pytest.mark.parametrize("subject", ["", "x" * 257])
async def test_a_subject_out_of_bounds_is_refused(open_broker: OpenBroker, subject: str) -> None:
    async with open_broker() as broker:
        with pytest.raises(ValueError, match="subject"):
            async with broker.subscribe("room", subject=subject):
                pass


async def test_a_presence_limit_out_of_bounds_is_refused(open_broker: OpenBroker) -> None:
    async with open_broker() as broker:
        with pytest.raises(ValueError, match="limit"):
            await broker.presence("room", limit=1001)


async def test_backlog_gives_the_newest_events_then_live_ones(open_broker: OpenBroker) -> None:
    async with open_broker() as broker:
        ids = [await broker.publish("room", ServerSentEvent(str(i))) for i in range(8)]
        async with broker.subscribe("room", backlog=3) as sub:
            later = await broker.publish("room", ServerSentEvent("8"))
            assert await receive_ids(sub, 4) == [*ids[-3:], later]
        # Fewer retained than asked: all of them, no reset notice.
        async with broker.subscribe("fresh", backlog=50) as sub:
            assert drain(sub) == []
            first = await broker.publish("fresh", ServerSentEvent("a"))
            assert await receive_ids(sub, 1) == [first]
        async with broker.subscribe("room", backlog=100) as sub:
            frames = await receive(sub)
            while len(ids_of(frames)) < 9:
                frames += await receive(sub)
            assert ids_of(frames) == [*ids, later]
        with pytest.raises(ValueError, match="backlog"):
            async with broker.subscribe("room", backlog=1001):
                pass
