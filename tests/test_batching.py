"""Batching across time: the BatchWindow policy, and EventStreamBody's write loop on virtual time.

The loop tests play the server's part: a writer records each chunk with the (virtual)
time it was handed over, then sleeps ``write_time``, the time the write takes. Frames
published meanwhile wait for the stream, as they would on a busy event loop, which is
what the window reacts to; writes that take no time leave the loop idle.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from trio_sse import MemoryBroker, ServerSentEvent
from trio_sse.web import BatchWindow, EventStreamBody, LoopLoad, loop_load

INTERVAL = 1.0
# A write this long lets frames queue up while it lasts, as on a loop saturated by a
# thousand streams' writes (tests that need a saturated loop say so: mark_loop_busy).
BUSY_WRITE = 0.2
PRELUDE = b": stream open\n\n"


@pytest.mark.parametrize(
    ("last_write_end", "queued_at", "now", "expected"),
    [
        # A quiet spell (half the window or more) before the frame: write now.
        (10.0, 10.5, 10.6, None),
        (10.0, 11.5, 11.6, None),
        # Flowing: hold until the window after the last write.
        (10.0, 10.1, 10.1, 11.0),
        (10.0, 10.1, 10.5, 11.0),
        # Queued while we were writing.
        (10.0, 9.9, 10.0, 11.0),
        # The window has already passed: write now.
        (10.0, 10.4, 11.2, None),
    ],
)
def test_batch_window_holds_flowing_frames_while_the_loop_is_busy(
    last_write_end: float, queued_at: float, now: float, expected: float | None
) -> None:
    window = BatchWindow(INTERVAL)
    times = {"last_write_end": last_write_end, "queued_at": queued_at, "now": now}
    assert window.hold_until(**times, is_loop_busy=True) == expected
    # An idle loop never holds anything back.
    assert window.hold_until(**times, is_loop_busy=False) is None


def test_loop_load_is_busy_for_a_window_after_a_streak_of_late_wake_ups() -> None:
    load, window = LoopLoad(), BatchWindow(INTERVAL)
    # Late (2 % of the window or more), delivery after delivery, for 5 % of the window.
    for now in (10.0, 10.015, 10.03, 10.045):
        load.note_wake_delay(0.03, now=now, window=window)
        assert not load.is_busy(now)
    load.note_wake_delay(0.03, now=10.055, window=window)
    assert load.is_busy(10.055)
    assert load.is_busy(11.05)
    assert not load.is_busy(11.06)


def test_one_late_moment_does_not_make_the_loop_busy() -> None:
    # A pause (a full collection, say) delays the wake-ups around it, then the loop
    # catches up: on-time wake-ups, or a gap, break the streak.
    load, window = LoopLoad(), BatchWindow(INTERVAL)
    load.note_wake_delay(0.5, now=10.0, window=window)
    load.note_wake_delay(0.5, now=10.01, window=window)
    load.note_wake_delay(0.001, now=10.02, window=window)  # on time
    load.note_wake_delay(0.5, now=10.04, window=window)
    assert not load.is_busy(10.04)
    load.note_wake_delay(0.5, now=10.1, window=window)  # after a gap of 60 ms
    assert not load.is_busy(10.1)
    # Under 2 % of the window is on time, however many.
    for i in range(100):
        load.note_wake_delay(0.019, now=20 + i * 0.01, window=window)
    assert not load.is_busy(21.0)
    # A zero window never batches, so it never marks the loop busy.
    for i in range(100):
        load.note_wake_delay(5.0, now=30 + i * 0.01, window=BatchWindow(0))
    assert not load.is_busy(31.0)


def mark_loop_busy() -> None:
    """Make this Trio run's loop count as saturated for the rest of the test."""
    load, window = loop_load(), BatchWindow(INTERVAL)
    for i in range(11):  # late deliveries 10 ms apart, for a tenth of the window
        load.note_wake_delay(INTERVAL, now=1e9 + i * 0.01, window=window)
    assert load.is_busy(0.0)


def test_a_zero_window_never_holds() -> None:
    window = BatchWindow(0)
    assert window.hold_until(last_write_end=0.0, queued_at=0.0, now=5.0, is_loop_busy=True) is None


@pytest.mark.parametrize("seconds", [-1.0, float("nan")])
def test_a_bad_window_is_refused(seconds: float) -> None:
    with pytest.raises(ValueError, match="window"):
        BatchWindow(seconds)


def body_for(broker: MemoryBroker, interval: float = INTERVAL, topic: str = "t") -> EventStreamBody:
    return EventStreamBody(
        broker,
        topic,
        last_event_id=None,
        heartbeat=0,
        min_write_interval=interval,
        prelude=PRELUDE,
        prelude_events=0,
    )


class Writes:
    """A ChunkWriter that records each chunk with the (virtual) time it was handed over."""

    def __init__(self, write_time: float = 0.0) -> None:
        self.chunks: list[tuple[float, bytes]] = []
        self._taken = 0
        self._write_time = write_time
        self.ended_at: float | None = None
        self.arrived = trio.Event()

    async def write(self, chunk: bytes) -> None:
        self.chunks.append((trio.current_time(), chunk))
        self.arrived.set()
        self.arrived = trio.Event()
        await trio.sleep(self._write_time)

    async def drive(self, body: EventStreamBody) -> None:
        """Run the body's write loop, as EventStreamConnection does."""
        await self.write(body.first_chunk())
        await body.stream_to(self)
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
    broker: MemoryBroker, interval: float = INTERVAL, write_time: float = 0.0, topic: str = "t"
) -> AsyncIterator[Writes]:
    """A body on ``topic``, its write loop running in the background until the block ends."""
    writes = Writes(write_time)
    async with body_for(broker, interval, topic) as body, trio.open_nursery() as nursery:
        nursery.start_soon(writes.drive, body)
        assert (await writes.next_chunk())[1] == PRELUDE
        yield writes
        nursery.cancel_scope.cancel()


def event(data: str) -> ServerSentEvent:
    # An id of its own, derived from the data: the memory broker takes decimal ids that
    # increase per topic, and the names published here ("a" < "b", "9" < "10") give them.
    return ServerSentEvent(data, id=str(1 + int.from_bytes(data.encode(), "big")))


async def test_an_event_after_a_quiet_spell_is_written_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    mark_loop_busy()
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
    mark_loop_busy()
    broker = MemoryBroker()
    async with driven(broker) as writes:
        await trio.sleep(0.75 * INTERVAL)
        await broker.publish("t", event("a"))
        published_at = trio.current_time()
        assert await writes.next_chunk() == (published_at, event("a").encode())


async def test_events_published_within_the_window_share_one_write_at_its_end(
    autojump_clock: trio.testing.MockClock,
) -> None:
    mark_loop_busy()
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


async def test_an_idle_loop_never_holds_events_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Streams woken at once mean the loop has time to spare: batching would only add
    latency, so events flowing fast are still written as they come."""
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
    mark_loop_busy()
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
    mark_loop_busy()
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
    mark_loop_busy()
    broker = MemoryBroker()
    async with body_for(broker) as body:
        writes = Writes(BUSY_WRITE)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writes.drive, body)
            await writes.next_chunk()
            # Published during the prelude's write: the stream holds it for its window.
            await broker.publish("t", event("last"))
            await trio.sleep(BUSY_WRITE + 0.1)
            assert len(writes.chunks) == 1
            closed_at = trio.current_time()
            await broker.aclose()
    assert writes.chunks[-1] == (closed_at, event("last").encode())
    assert writes.ended_at == closed_at + BUSY_WRITE


async def test_a_publisher_that_waits_for_each_event_is_never_held_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Ping-pong: each event is published as soon as the one before was written. The
    # events flow, but the stream always takes them at once: nothing to batch.
    broker = MemoryBroker()
    async with driven(broker) as writes:
        for i in range(20):
            await broker.publish("t", event(str(i)))
            published_at = trio.current_time()
            assert await writes.next_chunk() == (published_at, event(str(i)).encode())


async def test_a_burst_costs_two_writes_and_no_wait(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The first event goes out at once; the rest, published during that (cheap) write,
    # share the next one, written as soon as the first ends.
    broker = MemoryBroker()
    cheap_write = 0.01
    async with driven(broker, write_time=cheap_write) as writes:
        await trio.sleep(10)
        published_at = trio.current_time()
        names = [str(i) for i in range(100)]
        for name in names:
            await broker.publish("t", event(name))
        first_at, first = await writes.next_chunk()
        second_at, second = await writes.next_chunk()
        # The stream may take a frame or two before the publisher's next turn.
        assert first.startswith(event("0").encode())
        assert first + second == b"".join(event(name).encode() for name in names)
        assert (first_at, second_at) == (published_at, published_at + cheap_write)


async def test_a_lone_reader_is_not_held_up_by_a_busy_topic(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Each stream judges by its own frames: a busy topic batching next door does not
    # delay a reader of a quiet one.
    mark_loop_busy()
    broker = MemoryBroker()
    async with (
        driven(broker, write_time=BUSY_WRITE, topic="busy") as busy,
        driven(broker, topic="quiet") as quiet,
    ):
        await trio.sleep(10)  # past the preludes' writes
        for i in range(10):
            await broker.publish("busy", event(str(i)))
            await trio.sleep(0.05)
        await broker.publish("quiet", event("q"))
        published_at = trio.current_time()
        assert await quiet.next_chunk() == (published_at, event("q").encode())
        # Meanwhile the busy stream wrote its first event alone, then held the rest.
        assert len(busy.chunks) == 2
        await busy.next_chunk()
        assert (await busy.next_chunk())[1] == b"".join(
            event(str(i)).encode() for i in range(1, 10)
        )


async def test_wait_queued_counts_only_frames_still_queued(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = MemoryBroker(queue_size=4)
    async with broker.subscribe("t") as subscription:
        await broker.publish("t", event("a"))
        assert len(await subscription.receive_batch()) == 1
        await broker.publish("t", event("b"))
        # One frame queued of a goal of two: the wait runs to its deadline.
        start = trio.current_time()
        with trio.move_on_after(5):
            await subscription.wait_queued(2)
        assert trio.current_time() == start + 5
        await broker.publish("t", event("c"))
        with trio.move_on_after(5):
            await subscription.wait_queued(2)
        assert trio.current_time() == start + 5
        # A goal above the queue's capacity is capped there.
        await broker.publish("t", event("d"))
        await broker.publish("t", event("e"))
        with trio.move_on_after(5):
            await subscription.wait_queued(100)
        assert trio.current_time() == start + 5
        assert len(await subscription.receive_batch()) == 4


class FlakyDirectWriter:
    """A DirectChunkWriter whose socket takes a chunk whole only sometimes (seeded)."""

    def __init__(self, seed: int) -> None:
        self.wire = bytearray()
        self._pending = b""
        self._random = random.Random(seed)

    @property
    def has_pending(self) -> bool:
        return bool(self._pending)

    def write_nowait(self, chunk: bytes) -> bool:
        # The stream must finish a pending write before it starts another (a real
        # writer would queue the chunk behind it; this one checks the stream).
        assert not self._pending, "write_nowait() with bytes still pending"
        if self._random.random() < 0.5:
            self.wire += chunk
            return True
        self._pending = chunk
        return False

    async def flush(self) -> None:
        rest, self._pending = self._pending, b""
        with trio.CancelScope(shield=True):
            await trio.sleep(0.001)  # a write that must wait for the socket
        self.wire += rest

    async def write(self, chunk: bytes) -> None:
        assert not self._pending, "write() with bytes still pending"
        if not self.write_nowait(chunk):
            await self.flush()


@pytest.mark.parametrize("seed", range(20))
async def test_direct_writes_keep_every_event_in_order_whatever_interrupts_them(
    autojump_clock: trio.testing.MockClock, seed: int
) -> None:
    # Publishes write straight to the connection while the stream waits; a short
    # heartbeat keeps interrupting those waits, often at the very moment a publish
    # left part of a write for the stream to finish.
    broker = MemoryBroker()
    writer = FlakyDirectWriter(seed)
    body = EventStreamBody(
        broker,
        "t",
        last_event_id=None,
        heartbeat=0.01,
        min_write_interval=0,
        prelude=PRELUDE,
        prelude_events=0,
    )
    schedule = random.Random(seed)
    async with body, trio.open_nursery() as nursery:
        writer.wire += body.first_chunk()
        nursery.start_soon(body.stream_to, writer)
        await trio.testing.wait_all_tasks_blocked()
        for i in range(300):
            await trio.sleep(schedule.choice([0, 0.005, 0.01]))
            await broker.publish("t", event(str(i)))
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    data = bytes(writer.wire).replace(b": heartbeat\n", b"")
    assert data == PRELUDE + b"".join(event(str(i)).encode() for i in range(300))
