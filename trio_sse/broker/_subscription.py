"""One subscriber's end of a topic: a bounded channel of encoded frames.

A broker fans each published event out as one shared ``bytes`` frame (encoded once)
into every subscriber's channel without waiting, so a publisher never waits for a
subscriber. When a subscriber's channel is full, the broker closes that one
subscription (:attr:`CloseReason.SLOW_CONSUMER`) and discards what it had queued:
its stream ends after the write in progress, and the client comes back with
``Last-Event-ID`` and is replayed from history. Everyone else is unaffected.

Backpressure: the queue holds at most ``queue_size`` frames. Frames are shared with
the topic's history and with every other subscriber, so a full queue costs one
pointer per frame per subscriber, and the bytes of at most ``queue_size`` distinct
frames in all.

The channel has Trio's memory-channel semantics (bounded, ``*_nowait`` twins that
raise ``trio.WouldBlock``, ``trio.EndOfChannel`` once closed and drained), built on a
``list`` and trio's lowest-level wake-up: it is used once per delivery per
subscriber, where ``MemorySendChannel.send_nowait`` alone took 12 % of a delivery's
CPU in a profile of the server (it carries KeyboardInterrupt protection and
multi-producer bookkeeping that a channel with one writer and one reader does not need).
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Callable
from typing import Final, Protocol

import trio

__all__ = [
    "DEFAULT_QUEUE_SIZE",
    "REPLAY_PIECE",
    "CloseReason",
    "FrameSink",
    "ReplaySource",
    "SinkResult",
    "Subscription",
]

# Past this many queued frames a subscriber is slow rather than momentarily busy: a
# coalesced write drains the whole queue at once, so a reader that keeps up never
# gets near it, and one that cannot is cheaper to replay from history (1000 deep by
# default) after a reconnect than to buffer for.
DEFAULT_QUEUE_SIZE: Final = 256

# How much of a replay is read (and written) at once: a stale reconnect costs this
# much memory at a time, not its whole history.
REPLAY_PIECE: Final = 64 * 1024


class CloseReason(enum.Enum):
    """Why a broker ended a subscription from its side."""

    SLOW_CONSUMER = "slow_consumer"
    """The subscriber's queue was full; it must reconnect and resume from history."""

    SHUTDOWN = "shutdown"
    """The broker was closed, normally because the server is shutting down."""


class SinkResult(enum.Enum):
    """What a :data:`FrameSink` did with a frame it was offered."""

    WRITTEN = "written"
    """Delivered in full; the reader stays parked."""

    PENDING = "pending"
    """Taken, but the reader must run to finish delivering it, so it is woken."""

    DECLINED = "declined"
    """Not taken; the frame is queued as usual, and the reader woken."""

    DROPPED = "dropped"
    """Not taken, and none will be; the reader fell too far behind (a stream of several
    topics past its own bound). The subscription closes as a slow consumer, and the
    broker counts it dropped."""


FrameSink = Callable[[bytes, float], SinkResult]
"""Takes ``(frame, offered_at)`` while the reader is parked with nothing queued; see
:meth:`Subscription.set_sink`."""


def _take(frames: list[bytes], count: int, max_bytes: int | None) -> list[bytes]:
    """Remove and return the first ``count`` frames, or fewer once ``max_bytes`` is reached."""
    if max_bytes is not None:
        size = 0
        for index in range(count):
            size += len(frames[index])
            if size >= max_bytes:
                count = index + 1
                break
    taken = frames[:count]
    del frames[:count]
    return taken


class ReplaySource(Protocol):
    """Replayed frames that a broker reads on demand, piece by piece (see ``Subscription``).

    For a broker whose history lives elsewhere (Redis): a stale reconnect then costs
    one piece at a time, not the whole history at once.
    """

    async def read(self, max_bytes: int) -> list[bytes]:
        """The next frames of the replay, oldest first; ``[]`` once it is complete.

        Returns at least one frame while any remain, and stops adding frames once they
        add up to ``max_bytes`` or more (so a frame larger than that comes alone).

        Raises:
            BrokerUnavailableError: The store did not answer; the stream ends and its
                client resumes later from the last id it got.
        """
        ...


class Subscription:
    """A subscriber's queue of encoded frames, created by a broker's ``subscribe()``.

    Read it with :meth:`receive_batch`. Only the broker that made it writes to it.
    """

    __slots__ = (
        "_backlog",
        "_byte_capacity",
        "_capacity",
        "_frames",
        "_goal",
        "_is_closed",
        "_is_discarded",
        "_on_close",
        "_queued_bytes",
        "_replay",
        "_sink",
        "_waiter",
        "close_reason",
        "first_queued_at",
        "start_id",
        "topic",
    )

    def __init__(
        self,
        topic: str,
        *,
        queue_size: int,
        backlog: list[bytes],
        replay: ReplaySource | None = None,
        start_id: str | None = None,
    ) -> None:
        self.topic: Final = topic
        # Where a subscription made without last_event_id begins: an id that, given
        # as last_event_id later, replays exactly what was published to the topic
        # after this subscription began. Set by brokers that can tell; a stream of
        # several topics resumes a topic that delivered nothing from it.
        self.start_id = start_id
        self.close_reason: CloseReason | None = None
        # Replayed frames (or a reset notice) are kept apart from the channel so that
        # a replay longer than queue_size does not count as a slow consumer. The
        # backlog comes first, then what `replay` reads, then live frames.
        self._backlog = backlog
        self._replay = replay
        # A list, not a deque: frames leave all at once (one write takes everything
        # queued), and an empty deque costs 0.7 KiB per subscriber to a list's 56 B.
        self._frames: list[bytes] = []
        self._capacity = queue_size
        # Bytes of the live frames queued, and how many make the subscriber slow (see
        # limit_bytes()); no bound until a stream sets one.
        self._queued_bytes = 0
        self._byte_capacity = sys.maxsize
        self._is_closed = False
        self._is_discarded = False
        # The reader parked in wait_queued(), and how many frames it waits for. Woken
        # with trio's lowest-level primitive: this is once per delivery, and a
        # ParkingLot or an Event costs several times more per wake-up.
        self._waiter: trio.lowlevel.Task | None = None
        self._sink: FrameSink | None = None
        # Told once when the broker closes the subscription (see set_close_listener).
        self._on_close: Callable[[Subscription], None] | None = None
        self._goal = 1
        # When the oldest live frame now queued was offered (trio.current_time()): the
        # start of the publish-to-write latency of the next batch. Set only when the
        # queue was empty, so the fan-out loop reads the clock once per batch, not per frame.
        self.first_queued_at = 0.0

    async def receive_batch(self, max_frames: int = DEFAULT_QUEUE_SIZE) -> list[bytes]:
        """Wait for at least one frame, then return every frame already queued.

        The backlog comes first, whole, then the replay (in pieces of about
        ``REPLAY_PIECE`` bytes), then live frames, in publish order.

        Returns:
            One or more encoded frames; write them together (one chunk) so a burst
            costs one write instead of one per event.

        Raises:
            trio.EndOfChannel: The broker closed the subscription and every frame
                queued before that has been returned; see :attr:`close_reason`.
            BrokerUnavailableError: The replay's source did not answer.

        Cancellation: a cancelled call takes no frame.
        """
        while True:
            await self.wait_queued(1)
            try:
                return self.receive_batch_nowait(max_frames)
            except trio.WouldBlock:
                # Only a pending replay makes a wait return with nothing to take.
                frames = await self.receive_replay(REPLAY_PIECE)
                if frames:
                    return frames

    def receive_batch_nowait(
        self, max_frames: int = DEFAULT_QUEUE_SIZE, max_bytes: int | None = None
    ) -> list[bytes]:
        """Like :meth:`receive_batch`, but raise ``trio.WouldBlock`` if nothing is queued.

        Args:
            max_frames: Take at most this many live frames.
            max_bytes: Stop taking frames once they add up to this many bytes or more
                (a frame larger than that comes alone), so that a stream writes a long
                backlog or queue in pieces of bounded size; ``None``: no bound.

        Raises:
            trio.ClosedResourceError: The subscription was discarded (its subscriber left).
        """
        if self._is_discarded:
            raise trio.ClosedResourceError("this subscription was discarded")
        if self._backlog:
            batch = _take(self._backlog, len(self._backlog), max_bytes)
            if self._backlog or self._replay is not None:
                # The rest of the backlog, then the replay, come before live frames.
                return batch
            if max_bytes is not None:
                max_bytes -= sum(map(len, batch))
                if max_bytes <= 0:
                    return batch
        elif self._replay is not None:
            # Live frames wait until the replay before them is read.
            raise trio.WouldBlock
        else:
            batch = []
        frames = self._frames
        count = min(len(frames), max_frames - len(batch))
        if (
            count == len(frames)
            and not batch
            and (max_bytes is None or self._queued_bytes <= max_bytes)
        ):
            # The common case: everything, in one step.
            batch, self._frames = frames, []
            self._queued_bytes = 0
        elif count > 0:
            taken = _take(frames, count, max_bytes)
            self._queued_bytes -= sum(map(len, taken))
            batch += taken
        if not batch:
            if self._is_closed:
                raise trio.EndOfChannel
            raise trio.WouldBlock
        return batch

    @property
    def replay_pending(self) -> bool:
        """Whether a :class:`ReplaySource` still has frames to read, before any live frame.

        While it does, :meth:`receive_batch_nowait` returns only the backlog; read the
        replay with :meth:`receive_replay`.
        """
        return self._replay is not None

    async def receive_replay(self, max_bytes: int) -> list[bytes]:
        """The next piece of the replay (see :meth:`ReplaySource.read`); ``[]`` once done.

        Call it only after the backlog was taken (``receive_batch_nowait``), and only
        while :attr:`replay_pending`.

        Raises:
            BrokerUnavailableError: From the source.
        """
        replay = self._replay
        if replay is None:
            await trio.lowlevel.checkpoint()
            return []
        # A failed read ends the stream; a cancelled one is simply read again.
        frames = await replay.read(max_bytes)
        if not frames and self._replay is replay:
            self._replay = None  # live frames are next
        return frames

    @property
    def queued(self) -> int:
        """Frames waiting to be received (replayed ones included)."""
        return len(self._backlog) + len(self._frames)

    @property
    def capacity(self) -> int:
        """Live frames that may be queued before the subscriber counts as slow."""
        return self._capacity

    @property
    def queued_bytes(self) -> int:
        """Bytes of the live frames queued (the backlog and replay not included)."""
        return self._queued_bytes

    @property
    def byte_capacity(self) -> int:
        """Bytes of live frames that may be queued before the subscriber counts as slow."""
        return self._byte_capacity

    def limit_bytes(self, max_bytes: int) -> None:
        """Count the subscriber as slow once its live frames pass ``max_bytes`` bytes.

        Set by the stream that reads it (its ``max_buffer``): the frames are shared,
        but a reader that stalls holds them after the topic's history let them go. A
        single frame larger than this is still queued when nothing else is.
        A reader waiting for more frames (:meth:`wait_queued`) is also woken once half
        of this is queued.
        """
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self._byte_capacity = max_bytes

    async def wait_queued(self, count: int) -> None:
        """Wait until at least ``count`` frames are queued, or the subscription is closed.

        Returns at once while a replay is pending (:attr:`replay_pending`), and once
        half of :attr:`byte_capacity` is queued, whatever ``count``.

        Takes nothing: follow with :meth:`receive_batch_nowait`. A ``count`` above
        :attr:`capacity` is capped there, since the queue never holds more.

        Cancellation: always a checkpoint; a plain wait, so cancelling it loses nothing.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        count = min(count, self._capacity)
        if (
            self.queued >= count
            or self._is_closed
            or self._replay is not None
            or 2 * self._queued_bytes >= self._byte_capacity
        ):
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        if self._waiter is not None:
            raise trio.BusyResourceError("another task is already waiting on this subscription")
        self._goal = count
        self._waiter = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(self._abort_wait)

    def _abort_wait(self, _: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
        self._waiter = None
        return trio.lowlevel.Abort.SUCCEEDED

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            trio.lowlevel.reschedule(waiter)

    # The methods below are the broker's side.

    def offer(self, frame: bytes, offered_at: float | None = None) -> bool:
        """Deliver or queue ``frame`` without waiting; close the subscription if it is full.

        Args:
            frame: The encoded event.
            offered_at: When the fan-out began (``trio.current_time()``), read once for
                all its subscribers; read here if not given.

        Returns:
            ``True`` if the frame was delivered or queued, ``False`` if the subscription
            is (now) closed and the frame was not delivered.
        """
        if self._is_closed:
            return False
        if offered_at is None:
            offered_at = trio.current_time()
        frames = self._frames
        sink = self._sink
        if sink is not None and not frames and not self._backlog and self._replay is None:
            result = sink(frame, offered_at)
            if result is SinkResult.WRITTEN:
                return True
            if result is SinkResult.PENDING:
                self._sink = None
                self._wake()
                return True
            if result is SinkResult.DROPPED:
                self.close(CloseReason.SLOW_CONSUMER)
                return False
        size = len(frame)
        if len(frames) >= self._capacity or (
            frames and self._queued_bytes + size > self._byte_capacity
        ):
            self.close(CloseReason.SLOW_CONSUMER)
            # A reader this far behind resumes from history when it reconnects. The
            # queue would only be written late to a client that cannot keep up (or
            # is gone, its connection aborted by TCP_USER_TIMEOUT), each subscriber
            # joining up to queue_size frames into one chunk of its own on the way:
            # with 100 stalled readers of 10 KiB events, a transient 100 MiB.
            self._backlog = []
            self._replay = None
            frames.clear()
            self._queued_bytes = 0
            return False
        if not frames:
            self.first_queued_at = offered_at
        frames.append(frame)
        self._queued_bytes += size
        if self._waiter is not None and (
            len(frames) >= self._goal or 2 * self._queued_bytes >= self._byte_capacity
        ):
            self._wake()
        return True

    def set_sink(self, sink: FrameSink | None) -> None:
        """Let ``sink`` take frames directly while the reader is parked with nothing queued.

        For a reader that can deliver a frame synchronously (a socket write that does
        not block): the fan-out then calls ``sink(frame, offered_at)`` in its own task
        instead of queueing the frame and waking the reader, which saves a task switch
        per delivery. What the sink does not take is queued as usual. The reader sets
        it before :meth:`wait_queued` and clears it (``None``) after; it is cleared
        when the sink asks for the reader (:attr:`SinkResult.PENDING`).

        The sink runs inside a publisher's fan-out: it must not block, checkpoint or
        raise.
        """
        self._sink = sink

    def close(self, reason: CloseReason) -> None:
        """End the subscription: the reader gets what is queued, then EndOfChannel.

        (A subscription closed by :meth:`offer` for being slow has nothing queued.)
        """
        if self.close_reason is None:
            self.close_reason = reason
        self._is_closed = True
        self._replay = None  # the client resumes from what it got, on its next connection
        self._wake()
        listener, self._on_close = self._on_close, None
        if listener is not None:
            listener(self)

    def set_close_listener(self, listener: Callable[[Subscription], None] | None) -> None:
        """Call ``listener(self)`` once, when the broker closes this subscription.

        For a reader that does not wait on this subscription itself (a stream of
        several topics, :class:`~trio_sse.broker.TopicMerge`). Like a sink, the
        listener runs inside the broker's call: it must not block, checkpoint or raise.
        """
        self._on_close = listener

    def discard(self) -> None:
        """Release what is queued; the subscriber is gone and nothing more will be read."""
        self._is_closed = self._is_discarded = True
        self._backlog = []
        self._replay = None
        self._frames.clear()
        self._queued_bytes = 0
