"""What only the MemoryBroker does: its ids, exact history, draining on close, the clock.

The behaviour every broker shares is in test_broker_contract.py, run against this
broker and the Redis one.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from trio_sse import (
    BrokerClosedError,
    BrokerUnavailableError,
    CloseReason,
    InvalidEventError,
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


async def test_assigned_ids_increase_and_given_ids_are_kept() -> None:
    broker = MemoryBroker()
    first = await broker.publish("a", ServerSentEvent("1"))
    second = await broker.publish("b", ServerSentEvent("2"))
    third = await broker.publish("a", ServerSentEvent("3"))
    assert int(first) < int(second) < int(third)
    chosen = str(int(third) + 1_000)
    assert await broker.publish("a", ServerSentEvent("4", id=chosen)) == chosen


async def test_a_chosen_id_moves_the_counter_past_it() -> None:
    # Before: an id equal to a future server id was kept, and that server id then
    # issued again, so a reader resuming from it skipped an event.
    broker = MemoryBroker()
    last = await broker.publish("t", ServerSentEvent("a"))
    future = str(int(last) + 1)  # what the next assigned id would have been
    assert await broker.publish("t", ServerSentEvent("b", id=future)) == future
    after = await broker.publish("t", ServerSentEvent("c"))
    assert int(after) > int(future)
    async with broker.subscribe("t", last_event_id=future) as sub:
        assert ids_of(await drain(sub)) == [after]


@pytest.mark.parametrize("reuse", ["same", "older"])
async def test_ids_must_increase_per_topic(reuse: str) -> None:
    # Before: a reused id was accepted, and a reader resuming from it skipped events.
    broker = MemoryBroker()
    first = await broker.publish("t", ServerSentEvent("a"))
    asked = first if reuse == "same" else str(int(first) - 1)
    with pytest.raises(InvalidEventError, match=r"not above .* ids must increase per topic"):
        await broker.publish("t", ServerSentEvent("b", id=asked))
    assert broker.statistics().published == 1
    # Another topic has its own order.
    assert await broker.publish("u", ServerSentEvent("b", id=asked)) == asked


@pytest.mark.parametrize(
    "chosen", ["custom", "0", "007", "-5", "+5", "1.5", " 5", "٣", str(2**53), "9" * 40_000]
)
async def test_chosen_ids_must_be_plain_decimal_integers(chosen: str) -> None:
    # Before: any text was accepted, a 40 KB one making every reconnect of its
    # readers fail with 431.
    broker = MemoryBroker()
    with pytest.raises(InvalidEventError, match="decimal integer from 1 to 9007199254740991"):
        await broker.publish("t", ServerSentEvent("x", id=chosen))
    assert broker.statistics().published == 0


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


async def test_history_keeps_the_newest_events_only() -> None:
    broker = MemoryBroker(history=3)
    ids = [await broker.publish("t", ServerSentEvent(str(i))) for i in range(6)]
    async with broker.subscribe("t", last_event_id=ids[3]) as sub:
        assert ids_of(await sub.receive_batch()) == ids[4:]
    # ids[2] was the last evicted: everything after it is retained, so it is placed.
    async with broker.subscribe("t", last_event_id=ids[2]) as sub:
        assert ids_of(await sub.receive_batch()) == ids[3:]
    # Events after ids[1] are gone: a reset notice, then what is retained.
    async with broker.subscribe("t", last_event_id=ids[1]) as sub:
        notice, *rest = await sub.receive_batch()
        assert notice.startswith(b"event: reset\n")
        assert ids_of(rest) == ids[3:]


async def test_history_off_gives_a_reset_notice_without_an_id() -> None:
    broker = MemoryBroker(history=0)
    last = await broker.publish("t", ServerSentEvent("x"))
    async with broker.subscribe("t", last_event_id=last) as sub:
        (notice,) = await sub.receive_batch()
    assert notice.startswith(f"event: {RESET_EVENT_TYPE}\n".encode())
    assert ids_of([notice]) == []


async def test_aclose_drains_what_was_queued_then_ends() -> None:
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


async def test_cancelled_publish_publishes_nothing() -> None:
    broker = MemoryBroker()
    async with broker.subscribe("t") as sub:
        with trio.CancelScope() as scope:
            scope.cancel()
            await broker.publish("t", ServerSentEvent("x"))
        assert broker.statistics().published == 0
        assert await drain(sub) == []


@pytest.mark.parametrize("kwargs", [{"history": -1}, {"queue_size": 0}])
def test_bad_broker_options_are_refused(kwargs: dict[str, Any]) -> None:
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


async def test_memory_broker_caps_the_number_of_topics() -> None:
    broker = MemoryBroker(max_topics=2)
    await broker.publish("a", ServerSentEvent("x"))
    async with broker.subscribe("b"), broker.subscribe("a"):
        with pytest.raises(BrokerUnavailableError, match="already holds 2 topics"):
            await broker.publish("c", ServerSentEvent("x"))
        with pytest.raises(BrokerUnavailableError, match="max_topics"):
            async with broker.subscribe("c"):
                pass
        # Every topic held has subscribers, so a new one cannot replace any; known
        # topics stay usable at the cap.
        await broker.publish("a", ServerSentEvent("y"))
        await broker.publish("b", ServerSentEvent("y"))
        async with broker.subscribe("a"):
            pass
    assert broker.statistics().topics == 2
    await broker.aclose()


async def test_memory_broker_frees_the_slot_of_a_topic_that_only_had_subscribers() -> None:
    broker = MemoryBroker(max_topics=1)
    async with broker.subscribe("a"):
        assert broker.statistics().topics == 1
    # Nothing was published to "a", so nothing of it remains once its subscriber left.
    async with broker.subscribe("b"):
        assert broker.statistics().topics == 1
    await broker.aclose()


def test_memory_broker_rejects_bad_max_topics() -> None:
    with pytest.raises(ValueError, match="max_topics"):
        MemoryBroker(max_topics=0)
