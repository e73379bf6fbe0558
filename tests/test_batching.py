"""Batching across time (min_write_interval): EventStreamBody driven directly, on virtual time.

A test plays Quart's part: it calls ``__anext__`` and treats the return as the chunk
written, so calling ``__anext__`` again means "that write has ended". A reader that
waits before calling again is a write that takes that long.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio.testing

from trio_sse import MemoryBroker, ServerSentEvent
from trio_sse.broker import Subscription
from trio_sse.web import EventStreamBody

INTERVAL = 1.0
# A write this long makes a busy round (above the stream's _BUSY share of the window),
# as 1000 streams' writes do: only then does batching hold events back.
BUSY_WRITE = 0.2
PRELUDE = b": stream open\n\n"


def body_for(broker: MemoryBroker, interval: float = INTERVAL) -> EventStreamBody:
    return EventStreamBody(
        broker,
        "t",
        last_event_id=None,
        heartbeat=0,
        min_write_interval=interval,
        prelude=PRELUDE,
        prelude_events=0,
    )


class Writes:
    """The chunks a body produced, each with the (virtual) time it was handed over."""

    def __init__(self) -> None:
        self.chunks: list[tuple[float, bytes]] = []
        self._taken = 0
        self.ended_at: float | None = None
        self.arrived = trio.Event()

    async def drive(self, body: EventStreamBody, write_time: float = 0.0) -> None:
        """Iterate ``body`` as Quart does; each write takes ``write_time`` seconds."""
        async for chunk in body:
            self.chunks.append((trio.current_time(), chunk))
            self.arrived.set()
            self.arrived = trio.Event()
            await trio.sleep(write_time)
        self.ended_at = trio.current_time()

    async def next_chunk(self) -> tuple[float, bytes]:
        """The first chunk not returned yet, once it is written."""
        with trio.fail_after(3600):  # virtual time
            while len(self.chunks) <= self._taken:
                await self.arrived.wait()
        self._taken += 1
        return self.chunks[self._taken - 1]


@asynccontextmanager
async def driven(
    broker: MemoryBroker, interval: float = INTERVAL, write_time: float = 0.0
) -> AsyncIterator[Writes]:
    """A body on topic ``t``, iterated in the background until the block ends."""
    writes = Writes()
    async with body_for(broker, interval) as body, trio.open_nursery() as nursery:
        nursery.start_soon(writes.drive, body, write_time)
        assert (await writes.next_chunk())[1] == PRELUDE
        yield writes
        nursery.cancel_scope.cancel()


def event(data: str) -> ServerSentEvent:
    return ServerSentEvent(data, id=data)


async def test_an_event_after_a_quiet_spell_is_written_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = MemoryBroker()
    async with driven(broker) as writes:
        for name in "abc":
            await trio.sleep(1.5 * INTERVAL)
            await broker.publish("t", event(name))
            published_at = trio.current_time()
            assert await writes.next_chunk() == (published_at, event(name).encode())


async def test_an_event_that_is_not_soon_after_a_write_is_written_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Within the window, but not soon enough after the last write to mean that
    # events are flowing: a low rate, written at once.
    broker = MemoryBroker()
    async with driven(broker) as writes:
        await trio.sleep(0.75 * INTERVAL)
        await broker.publish("t", event("a"))
        published_at = trio.current_time()
        assert await writes.next_chunk() == (published_at, event("a").encode())


async def test_events_published_within_the_window_share_one_write_at_its_end(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = MemoryBroker()
    async with driven(broker, write_time=BUSY_WRITE) as writes:
        window_start = trio.current_time() + BUSY_WRITE  # when the prelude's write ends
        for name in "abc":
            await trio.sleep(0.1)
            await broker.publish("t", event(name))
        written_at, chunk = await writes.next_chunk()
        assert chunk == b"".join(event(name).encode() for name in "abc")
        assert written_at == window_start + INTERVAL
        # Published right after that write: it waits for the next window's end.
        await broker.publish("t", event("d"))
        assert await writes.next_chunk() == (
            written_at + BUSY_WRITE + INTERVAL,
            event("d").encode(),
        )


async def test_cheap_writes_never_hold_events_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Writes that take no time (one stream, say) leave the loop idle: batching would
    only add latency, so events flowing fast are still written as they come."""
    broker = MemoryBroker()
    async with driven(broker) as writes:
        for name in "abc":
            await trio.sleep(0.1)
            await broker.publish("t", event(name))
            published_at = trio.current_time()
            assert await writes.next_chunk() == (published_at, event(name).encode())


async def test_an_event_that_comes_during_a_write_waits_for_the_window_after_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = MemoryBroker()
    async with driven(broker, write_time=0.5) as writes:
        await trio.sleep(10)
        await broker.publish("t", event("a"))
        written_at, _ = await writes.next_chunk()
        await trio.sleep(0.1)
        await broker.publish("t", event("b"))  # while "a" is being written
        assert await writes.next_chunk() == (written_at + 0.5 + INTERVAL, event("b").encode())


async def test_without_an_interval_each_event_is_written_as_it_comes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = MemoryBroker()
    async with driven(broker, interval=0) as writes:
        for name in "abc":
            await trio.sleep(0.1)
            await broker.publish("t", event(name))
            published_at = trio.current_time()
            assert await writes.next_chunk() == (published_at, event(name).encode())


async def test_a_half_full_queue_ends_the_window_early(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = MemoryBroker(queue_size=8)
    async with driven(broker, write_time=BUSY_WRITE) as writes:
        write_ends = trio.current_time() + BUSY_WRITE
        await trio.sleep(0.1)
        for name in "abcd":
            await broker.publish("t", event(name))
        written_at, chunk = await writes.next_chunk()
    assert chunk == b"".join(event(name).encode() for name in "abcd")
    # Written as soon as the previous write ended, not a window later.
    assert written_at == write_ends
    assert broker.statistics().dropped == 0


async def test_a_closing_broker_ends_a_stream_waiting_out_its_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = MemoryBroker()
    async with body_for(broker) as body:
        writes = Writes()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writes.drive, body)
            await writes.next_chunk()
            await trio.sleep(0.1)
            await broker.publish("t", event("last"))
            closed_at = trio.current_time()
            await broker.aclose()
    assert writes.chunks[-1] == (closed_at, event("last").encode())
    assert writes.ended_at == closed_at


async def test_a_stream_waits_for_the_round_of_writes_it_was_part_of(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Two streams of one topic, in one round of writes: A's write takes 1.5 s and B's
    # 2 s. A waits for B's to end too, then its window.
    broker = MemoryBroker()
    async with driven(broker, write_time=1.5) as a, driven(broker, write_time=2.0) as b:
        await trio.sleep(10)  # both quiet: the next event is written at once
        round_start = trio.current_time()
        await broker.publish("t", event("x"))
        assert await a.next_chunk() == await b.next_chunk() == (round_start, event("x").encode())
        await trio.sleep(0.1)
        await broker.publish("t", event("y"))
        assert await a.next_chunk() == (round_start + 2.0 + INTERVAL, event("y").encode())


async def test_a_write_far_longer_than_ours_does_not_hold_us_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # B's write is stuck (a reader that stopped reading). A waits no longer than its
    # own write took, 0.5 s, for the round to end; then its window.
    broker = MemoryBroker()
    async with driven(broker, write_time=0.5) as a, driven(broker, write_time=100.0) as b:
        await trio.sleep(200)  # both quiet: the next event is written at once
        round_start = trio.current_time()
        await broker.publish("t", event("x"))
        await a.next_chunk()
        await b.next_chunk()
        await broker.publish("t", event("y"))
        expected = round_start + 0.5 + 0.5 + INTERVAL
        assert await a.next_chunk() == (expected, event("y").encode())
        assert len(b.chunks) == 2  # B is still writing x


async def test_the_wait_for_a_round_is_bounded(autojump_clock: trio.testing.MockClock) -> None:
    broker = MemoryBroker()
    async with driven(broker, write_time=10.0) as a, driven(broker, write_time=100.0) as b:
        await trio.sleep(200)  # both quiet: the next event is written at once
        round_start = trio.current_time()
        await broker.publish("t", event("x"))
        await a.next_chunk()
        await b.next_chunk()
        await broker.publish("t", event("y"))
        expected = round_start + 10.0 + 4 * INTERVAL + INTERVAL
        assert await a.next_chunk() == (expected, event("y").encode())


async def test_wait_for_frames_counts_only_frames_still_queued(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = MemoryBroker(queue_size=4)
    async with broker.subscribe("t") as subscription:
        await broker.publish("t", event("a"))
        assert len(await subscription.receive_batch()) == 1
        await broker.publish("t", event("b"))
        # One frame queued of a goal of two: the wait runs to its deadline.
        start = trio.current_time()
        await subscription.wait_for_frames(start + 5)
        assert trio.current_time() == start + 5
        await broker.publish("t", event("c"))
        await subscription.wait_for_frames(trio.current_time() + 5)
        assert trio.current_time() == start + 5
        assert len(await subscription.receive_batch()) == 2
    assert isinstance(subscription, Subscription)
