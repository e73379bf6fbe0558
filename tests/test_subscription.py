"""A subscription's bounds in bytes, pieces of backlog, and replay read on demand (unit tests)."""

from __future__ import annotations

import trio
import trio.testing

from trio_sse.broker import CloseReason, Subscription


def frame(size: int, tag: int = 0) -> bytes:
    return b"%d:" % tag + b"x" * (size - len(b"%d:" % tag))


class ListReplay:
    """A replay source over a list, read in pieces; counts reads, can be made to block."""

    def __init__(self, frames: list[bytes]) -> None:
        self.frames = frames
        self.reads = 0
        self.gate: trio.Event | None = None

    async def read(self, max_bytes: int) -> list[bytes]:
        self.reads += 1
        if self.gate is not None:
            await self.gate.wait()
        await trio.lowlevel.checkpoint()
        taken: list[bytes] = []
        size = 0
        while self.frames and size < max_bytes:
            taken.append(self.frames.pop(0))
            size += len(taken[-1])
        return taken


async def test_a_subscriber_over_its_byte_capacity_is_slow() -> None:
    sub = Subscription("t", queue_size=100, backlog=[])
    sub.limit_bytes(1000)
    assert sub.offer(frame(400, 1))
    assert sub.offer(frame(400, 2))
    assert sub.queued_bytes == 800
    assert not sub.offer(frame(400, 3))
    assert sub.close_reason is CloseReason.SLOW_CONSUMER
    assert sub.queued == 0
    assert sub.queued_bytes == 0


async def test_one_frame_larger_than_the_capacity_is_still_queued_alone() -> None:
    sub = Subscription("t", queue_size=100, backlog=[])
    sub.limit_bytes(1000)
    assert sub.offer(frame(5000))
    assert sub.close_reason is None
    assert not sub.offer(frame(10))


async def test_live_frames_are_taken_in_pieces_and_bytes_are_accounted() -> None:
    sub = Subscription("t", queue_size=100, backlog=[])
    frames = [frame(300, i) for i in range(10)]
    for f in frames:
        sub.offer(f)
    assert sub.receive_batch_nowait(max_bytes=1000) == frames[:4]  # stops at >= 1000
    assert sub.queued_bytes == 6 * 300
    assert sub.receive_batch_nowait(max_bytes=1000) == frames[4:8]
    assert sub.receive_batch_nowait() == frames[8:]
    assert sub.queued_bytes == 0


async def test_a_backlog_is_taken_in_pieces_before_any_live_frame() -> None:
    backlog = [frame(500, i) for i in range(5)]
    sub = Subscription("t", queue_size=100, backlog=list(backlog))
    live = frame(10, 99)
    sub.offer(live)
    assert sub.receive_batch_nowait(max_bytes=1000) == backlog[:2]
    assert sub.receive_batch_nowait(max_bytes=1000) == backlog[2:4]
    # The last of the backlog, then live frames within what is left of the piece.
    assert sub.receive_batch_nowait(max_bytes=1000) == [backlog[4], live]


async def test_a_waiting_reader_is_woken_at_half_its_byte_capacity() -> None:
    sub = Subscription("t", queue_size=100, backlog=[])
    sub.limit_bytes(1000)
    woken = False

    async def wait() -> None:
        nonlocal woken
        await sub.wait_queued(50)
        woken = True

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        await trio.testing.wait_all_tasks_blocked()
        sub.offer(frame(400))
        await trio.testing.wait_all_tasks_blocked()
        assert not woken
        sub.offer(frame(100))
        await trio.testing.wait_all_tasks_blocked()
        assert woken


async def test_replay_comes_between_the_backlog_and_live_frames() -> None:
    notice = b"event: reset\n\n"
    replay = ListReplay([frame(400, i) for i in range(6)])
    sub = Subscription("t", queue_size=100, backlog=[notice], replay=replay)
    live = frame(10, 99)
    sub.offer(live)
    assert sub.replay_pending
    received = []
    with trio.fail_after(5):
        while live not in received:
            received += await sub.receive_batch()
    assert received[0] == notice
    assert received[-1] == live
    assert len(received) == 8
    assert not sub.replay_pending
    # Read in pieces of REPLAY_PIECE (64 KiB): all six in one read, then the empty one.
    assert replay.reads == 2


async def test_a_cancelled_replay_read_loses_nothing() -> None:
    replay = ListReplay([frame(100, i) for i in range(3)])
    sub = Subscription("t", queue_size=100, backlog=[], replay=replay)
    replay.gate = trio.Event()
    with trio.move_on_after(0.01):
        await sub.receive_replay(1000)
    assert sub.replay_pending
    replay.gate.set()
    assert len(await sub.receive_replay(1000)) == 3
    assert await sub.receive_replay(1000) == []
    assert not sub.replay_pending


async def test_a_direct_sink_is_not_used_while_a_replay_is_pending() -> None:
    replay = ListReplay([frame(100)])
    sub = Subscription("t", queue_size=100, backlog=[], replay=replay)
    offered: list[bytes] = []

    def sink(data: bytes, offered_at: float) -> object:
        offered.append(data)
        raise AssertionError("a live frame must not overtake the replay")

    sub.set_sink(sink)  # type: ignore[arg-type]
    assert sub.offer(frame(10, 7))
    assert offered == []
    assert sub.queued == 1


async def test_closing_drops_a_pending_replay() -> None:
    sub = Subscription("t", queue_size=100, backlog=[], replay=ListReplay([frame(100)]))
    sub.close(CloseReason.SHUTDOWN)
    assert not sub.replay_pending
    with trio.fail_after(5):
        try:
            await sub.receive_batch()
        except trio.EndOfChannel:
            pass
        else:
            raise AssertionError("expected the end of the channel")
