"""MemoryBroker: fan-out, unsubscribe on every exit path, slow consumers, replay."""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing

from trio_sse import (
    BrokerClosedError,
    CloseReason,
    InvalidTopicError,
    MemoryBroker,
    ServerSentEvent,
    Subscription,
)
from trio_sse.broker import RESET_EVENT_TYPE


def ids_of(frames: list[bytes]) -> list[str]:
    return [line[4:] for f in frames for line in f.decode().split("\n") if line.startswith("id: ")]


async def drain(subscription: Subscription) -> list[bytes]:
    """Everything queued now, without waiting."""
    try:
        return subscription.receive_batch_nowait(10_000)
    except trio.WouldBlock:
        return []


async def test_publish_fans_out_one_shared_frame_to_every_subscriber() -> None:
    broker = MemoryBroker()
    async with broker.subscribe("t") as a, broker.subscribe("t") as b, broker.subscribe("u") as c:
        event_id = await broker.publish("t", ServerSentEvent("hello"))
        (frame_a,) = await a.receive_batch()
        (frame_b,) = await b.receive_batch()
        assert frame_a == f"id: {event_id}\ndata: hello\n\n".encode()
        assert frame_a is frame_b  # encoded once, shared
        assert await drain(c) == []
        stats = broker.statistics()
        assert stats.subscribers == 3
        assert dict(stats.subscribers_per_topic) == {"t": 2, "u": 1}
        assert (stats.published, stats.delivered, stats.dropped) == (1, 2, 0)


async def test_assigned_ids_increase_and_given_ids_are_kept() -> None:
    broker = MemoryBroker()
    first = await broker.publish("a", ServerSentEvent("1"))
    second = await broker.publish("b", ServerSentEvent("2"))
    third = await broker.publish("a", ServerSentEvent("3"))
    assert int(first) < int(second) < int(third)
    assert await broker.publish("a", ServerSentEvent("4", id="custom")) == "custom"


async def test_a_restarted_broker_never_reuses_ids() -> None:
    old = MemoryBroker()
    old_ids = [await old.publish("t", ServerSentEvent(str(i))) for i in range(100)]
    new = MemoryBroker()
    new_id = await new.publish("t", ServerSentEvent("x"))
    assert int(new_id) > int(old_ids[-1])


async def test_receive_batch_coalesces_everything_queued() -> None:
    broker = MemoryBroker()
    async with broker.subscribe("t") as sub:
        ids = [await broker.publish("t", ServerSentEvent(str(i))) for i in range(10)]
        batch = await sub.receive_batch()
        assert ids_of(batch) == ids
        assert await drain(sub) == []


@pytest.mark.parametrize("exit_path", ["return", "error", "cancel"])
async def test_leaving_subscribe_by_any_path_unsubscribes(exit_path: str) -> None:
    broker = MemoryBroker()
    seen: list[Subscription] = []

    async def subscriber() -> None:
        async with broker.subscribe("t") as sub:
            seen.append(sub)
            if exit_path == "error":
                raise KeyError("boom")
            if exit_path == "cancel":
                await trio.sleep_forever()

    with trio.move_on_after(0.01):
        if exit_path == "error":
            with pytest.raises(KeyError):
                await subscriber()
        else:
            await subscriber()
    assert broker.statistics().subscribers == 0
    # The channel is released: a publish delivers to nobody.
    await broker.publish("t", ServerSentEvent("x"))
    assert broker.statistics().delivered == 0
    with pytest.raises(trio.ClosedResourceError):
        seen[0].receive_batch_nowait()


async def test_slow_consumer_is_dropped_alone_and_publisher_never_blocks() -> None:
    broker = MemoryBroker(queue_size=4)
    async with broker.subscribe("t") as slow, broker.subscribe("t") as fast:
        delivered_to_fast: list[bytes] = []
        with trio.fail_after(1):  # a blocked publish would trip this
            for i in range(20):
                await broker.publish("t", ServerSentEvent(str(i)))
                delivered_to_fast += await fast.receive_batch()
        assert len(delivered_to_fast) == 20
        assert slow.close_reason is CloseReason.SLOW_CONSUMER
        # The slow one gets what was queued before the drop, then the end.
        assert len(await slow.receive_batch()) == 4
        with pytest.raises(trio.EndOfChannel):
            await slow.receive_batch()
        stats = broker.statistics()
        assert (stats.dropped, stats.subscribers) == (1, 1)
        assert fast.close_reason is None
    assert broker.statistics().subscribers == 0


async def test_replay_after_last_event_id_then_live_without_gap_or_duplicate() -> None:
    broker = MemoryBroker(history=100)
    ids = [await broker.publish("t", ServerSentEvent(str(i))) for i in range(10)]
    async with broker.subscribe("t", last_event_id=ids[3]) as sub:
        ids.append(await broker.publish("t", ServerSentEvent("live")))
        received = ids_of(await sub.receive_batch())
    assert received == ids[4:]


async def test_replay_hand_over_under_concurrent_publishing() -> None:
    broker = MemoryBroker(history=10_000, queue_size=10_000)
    published: list[str] = []
    received: list[str] = []
    hundred_published = trio.Event()

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

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(publisher)
            nursery.start_soon(late_subscriber)
    assert received == published[50:]


async def test_replay_from_the_newest_id_gives_only_live_events() -> None:
    broker = MemoryBroker()
    newest = await broker.publish("t", ServerSentEvent("old"))
    async with broker.subscribe("t", last_event_id=newest) as sub:
        assert await drain(sub) == []


@pytest.mark.parametrize("case", ["unknown", "expired", "empty-topic", "history-off"])
async def test_unplaceable_last_event_id_gets_a_reset_notice_first(case: str) -> None:
    broker = MemoryBroker(history=0 if case == "history-off" else 5)
    ids = []
    if case != "empty-topic":
        ids = [await broker.publish("t", ServerSentEvent(str(i))) for i in range(8)]
    asked = {"unknown": "nope", "expired": ids[0] if ids else "", "empty-topic": "41"}.get(
        case, ids[-1] if ids else ""
    )
    async with broker.subscribe("t", last_event_id=asked) as sub:
        live = await broker.publish("t", ServerSentEvent("live"))
        notice, *rest = await sub.receive_batch()
    lines = notice.decode().split("\n")
    assert lines[0] == f"event: {RESET_EVENT_TYPE}"
    payload = json.loads(next(line[6:] for line in lines if line.startswith("data: ")))
    assert payload["last_event_id"] == asked
    # The notice carries the newest retained id, so a reconnect after it resumes there.
    resume = ids_of([notice])
    assert resume == ([ids[-1]] if ids and case != "history-off" else [])
    assert ids_of(rest) == [live]


async def test_history_keeps_the_newest_events_only() -> None:
    broker = MemoryBroker(history=3)
    ids = [await broker.publish("t", ServerSentEvent(str(i))) for i in range(6)]
    async with broker.subscribe("t", last_event_id=ids[3]) as sub:
        assert ids_of(await sub.receive_batch()) == ids[4:]
    # ids[2] was evicted: the events after it are all retained, but the broker cannot
    # tell that from an id it no longer has, so it says so rather than guess.
    async with broker.subscribe("t", last_event_id=ids[2]) as sub:
        (notice,) = await sub.receive_batch()
        assert notice.startswith(b"event: reset\n")


async def test_reused_ids_resume_from_their_newest_use() -> None:
    broker = MemoryBroker(history=3)
    await broker.publish("t", ServerSentEvent("a", id="same"))
    await broker.publish("t", ServerSentEvent("b"))
    await broker.publish("t", ServerSentEvent("c", id="same"))
    last = await broker.publish("t", ServerSentEvent("d"))
    await broker.publish("t", ServerSentEvent("e"))  # evicts the first "same"
    async with broker.subscribe("t", last_event_id="same") as sub:
        frames = await sub.receive_batch()
    assert ids_of(frames)[0] == last


async def test_replay_longer_than_the_queue_is_not_a_slow_consumer() -> None:
    broker = MemoryBroker(history=50, queue_size=2)
    ids = [await broker.publish("t", ServerSentEvent(str(i))) for i in range(50)]
    async with broker.subscribe("t", last_event_id=ids[0]) as sub:
        assert ids_of(await sub.receive_batch()) == ids[1:]
        assert sub.close_reason is None


async def test_aclose_ends_streams_cleanly_and_refuses_new_work() -> None:
    broker = MemoryBroker()
    async with broker.subscribe("t") as sub:
        await broker.publish("t", ServerSentEvent("last words"))
        await broker.aclose()
        assert broker.is_closed
        assert len(await sub.receive_batch()) == 1
        with pytest.raises(trio.EndOfChannel):
            await sub.receive_batch()
        assert sub.close_reason is CloseReason.SHUTDOWN
        with pytest.raises(BrokerClosedError):
            await broker.publish("t", ServerSentEvent("late"))
        with pytest.raises(BrokerClosedError):
            async with broker.subscribe("t"):
                pass  # pragma: no cover
    await broker.aclose()  # idempotent
    assert broker.statistics().subscribers == 0


@pytest.mark.parametrize("topic", ["", "a b", "x" * 129, "a/b", "é", "a\n"])
async def test_bad_topics_are_refused_and_nothing_is_published(topic: str) -> None:
    broker = MemoryBroker()
    with pytest.raises(InvalidTopicError):
        await broker.publish(topic, ServerSentEvent("x"))
    with pytest.raises(InvalidTopicError):
        async with broker.subscribe(topic):
            pass  # pragma: no cover
    assert broker.statistics().published == 0


async def test_cancelled_publish_publishes_nothing() -> None:
    broker = MemoryBroker()
    async with broker.subscribe("t") as sub:
        with trio.CancelScope() as scope:
            scope.cancel()
            await broker.publish("t", ServerSentEvent("x"))
        assert broker.statistics().published == 0
        assert await drain(sub) == []


async def test_cancelled_receive_takes_no_frame() -> None:
    broker = MemoryBroker()
    async with broker.subscribe("t") as sub:
        await broker.publish("t", ServerSentEvent("x"))
        with trio.CancelScope() as scope:
            scope.cancel()
            await sub.receive_batch()
        assert len(await drain(sub)) == 1


async def test_statistics_is_an_immutable_snapshot() -> None:
    broker = MemoryBroker()
    async with broker.subscribe("t"):
        snapshot = broker.statistics()
    assert snapshot.subscribers == 1
    assert broker.statistics().subscribers == 0
    with pytest.raises(TypeError):
        snapshot.subscribers_per_topic["t"] = 5  # type: ignore[index]


@pytest.mark.parametrize("kwargs", [{"history": -1}, {"queue_size": 0}])
def test_bad_broker_options_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=">="):
        MemoryBroker(**kwargs)


async def test_heartbeat_free_waiting_uses_no_clock(autojump_clock: trio.testing.MockClock) -> None:
    # A subscriber can wait an hour of (virtual) time and still get the next event.
    broker = MemoryBroker()
    async with broker.subscribe("t") as sub, trio.open_nursery() as nursery:

        async def later() -> None:
            await trio.sleep(3600)
            await broker.publish("t", ServerSentEvent("late"))

        nursery.start_soon(later)
        assert len(await sub.receive_batch()) == 1
