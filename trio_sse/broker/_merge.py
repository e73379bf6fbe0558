"""Several topics on one stream: their subscriptions merged, each event tagged and placed.

A stream of several topics reads one :class:`Subscription` per topic (each from the
broker, with that topic's own replay), merged here into one reader's queue. No task:
each topic's subscription forwards its live frames here from the broker's fan-out
(its sink), and its replay is read when the stream asks for the merged replay.

Rules (the HTTP contract of ``GET /events?topic=...``):

* **Which topic.** Every frame is rewritten so that its ``event`` field names its
  topic: ``<topic>`` for an event published without a type, ``<topic>:<type>`` for
  one with a type (``news:reset`` for a reset notice). A browser dispatches on it
  with ``addEventListener``; a topic name never contains ``:``, so splitting at the
  first ``:`` recovers both parts. The data is unchanged.
* **Where the stream is.** The ``id`` of every frame is the stream's compound
  position after it: each topic's last event id, in the order the topics were
  requested, separated by ``,``; ``%`` and ``,`` inside an id are written ``%25`` and
  ``%2C``, and a topic with no position yet is empty. The client sends it back as
  ``Last-Event-ID``, and each topic resumes after its own id: no gap, no duplicate.
  A topic whose history cannot place its id gets its own ``reset`` notice.
* **When it is computed.** A frame's position is computed when the stream takes it
  to write, in the order the client receives frames, never when it is queued: a
  client that keeps the id of the last frame it got resumes exactly after it.

Bounds: the merged queue has the bounds of one subscription (``queue_size`` frames,
and the stream's ``max_buffer`` bytes); past either, the stream is closed as a slow
consumer, as a single-topic one is. Each topic's own subscription holds frames only
while its replay is being read, within ``max_buffer / topics`` bytes.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from functools import partial
from typing import Final

import trio

from ..errors import InvalidEventError
from ._interface import MAX_EVENT_ID_LENGTH
from ._subscription import CloseReason, FrameSink, SinkResult, Subscription

__all__ = ["MAX_COMPOUND_ID_LENGTH", "TopicMerge", "format_position", "parse_position"]

# The longest compound id accepted: 32 topics (the app's default cap) of the longest
# ids the built-in brokers issue (a Redis stream id, 41 characters) take 1.3 KiB; this
# leaves room for ids of other forms, and stays well under the 16 KiB a server takes
# for all of a request's headers (the id comes back in Last-Event-ID).
MAX_COMPOUND_ID_LENGTH: Final = 8 * 1024

_SEPARATOR: Final = ","
_ESCAPED: Final = re.compile(r"%(25|2C)")
_UNESCAPE: Final = {"25": "%", "2C": ","}


def _escape(event_id: str) -> str:
    if "%" in event_id:
        event_id = event_id.replace("%", "%25")
    if "," in event_id:
        event_id = event_id.replace(",", "%2C")
    return event_id


def format_position(positions: Sequence[str | None]) -> str:
    """The compound id of ``positions`` (each topic's last id, ``None`` for none yet)."""
    return _SEPARATOR.join("" if p is None else _escape(p) for p in positions)


def parse_position(compound: str, topics: int) -> list[str | None]:
    """Each topic's last id from a compound id made by :func:`format_position`.

    Raises:
        InvalidEventError: ``compound`` is too long, or does not hold ``topics``
            positions (it was made for another list of topics).
    """
    if len(compound) > MAX_COMPOUND_ID_LENGTH:
        raise InvalidEventError(
            f"Last-Event-ID is {len(compound)} characters; a stream's compound id has at "
            f"most {MAX_COMPOUND_ID_LENGTH}"
        )
    parts = compound.split(_SEPARATOR)
    if len(parts) != topics:
        raise InvalidEventError(
            f"Last-Event-ID {compound[:100]!r} holds {len(parts)} position(s) but the "
            f"stream has {topics} topic(s): it was made for another list of topics (send "
            "none to start afresh)"
        )
    positions: list[str | None] = []
    for part in parts:
        if not part:
            positions.append(None)
            continue
        value = _ESCAPED.sub(lambda m: _UNESCAPE[m.group(1)], part)
        if len(value) > MAX_EVENT_ID_LENGTH:
            raise InvalidEventError(
                f"a position in Last-Event-ID is {len(value)} characters (at most "
                f"{MAX_EVENT_ID_LENGTH})"
            )
        positions.append(value)
    return positions


def _split_frame(frame: bytes) -> tuple[bytes | None, bytes | None, bytes]:
    """A frame's ``event`` and ``id`` values and the rest, as the encoder writes them.

    The encoder (``ServerSentEvent.encode``) writes ``event:`` first, then ``id:``, each
    as ``<name>: <value>\\n``, and every broker's frames come from it.
    """
    event_type = event_id = None
    rest = frame
    if rest.startswith(b"event: "):
        end = rest.index(b"\n")
        event_type, rest = rest[7:end], rest[end + 1 :]
    if rest.startswith(b"id: "):
        end = rest.index(b"\n")
        event_id, rest = rest[4:end], rest[end + 1 :]
    return event_type, event_id, rest


class TopicMerge:
    """The subscriptions of several topics read as one, in the form :class:`Subscription` has.

    The stream reads it exactly as it reads a :class:`Subscription` (the same methods,
    the same cancellation promises); see the module docs for what each frame becomes.

    Args:
        members: One subscription per topic, in the order the topics were requested,
            each from the broker's ``subscribe()`` with that topic's own position.
        positions: Each topic's last id, as the client sent it (``None``: none).
        queue_size: Frames the merged queue holds before the stream counts as slow.
    """

    __slots__ = (
        "_byte_capacity",
        "_cursor",
        "_escaped",
        "_frames",
        "_goal",
        "_is_closed",
        "_members",
        "_names",
        "_queued_bytes",
        "_sink",
        "_waiter",
        "capacity",
        "close_reason",
        "first_queued_at",
        "topic",
    )

    def __init__(
        self, members: Sequence[Subscription], positions: Sequence[str | None], *, queue_size: int
    ) -> None:
        if len(members) != len(positions) or not members:
            raise ValueError("one position per member, and at least one member")
        self._members: Final = tuple(members)
        self.topic: Final = ",".join(m.topic for m in members)
        self._names: Final = tuple(m.topic.encode() for m in members)
        # A topic with no position starts where its subscription began, if the broker
        # says: a resume then replays what it missed, even if it delivered nothing.
        self._escaped: list[str] = [
            _escape(p) if p is not None else "" if m.start_id is None else _escape(m.start_id)
            for m, p in zip(members, positions, strict=True)
        ]
        # Live frames forwarded by the members, each with its member's index; the
        # compound id is added when they are taken.
        self._frames: list[tuple[int, bytes]] = []
        self._queued_bytes = 0
        self._byte_capacity = sys.maxsize
        self.capacity: Final = queue_size
        # Members before this index have finished their replay and forward live.
        self._cursor = 0
        self._is_closed = False
        self.close_reason: CloseReason | None = None
        self._waiter: trio.lowlevel.Task | None = None
        self._goal = 1
        self._sink: FrameSink | None = None
        self.first_queued_at = 0.0
        for index, member in enumerate(self._members):
            member.set_sink(partial(self._forward, index))
            member.set_close_listener(self._member_closed)
            if member.close_reason is not None:
                self._member_closed(member)

    # The reader's side: what EventStreamBody calls.

    def limit_bytes(self, max_bytes: int) -> None:
        """Bound the merged queue at ``max_bytes``, and each member's at its share."""
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self._byte_capacity = max_bytes
        share = max(1, max_bytes // len(self._members))
        for member in self._members:
            member.limit_bytes(share)

    @property
    def replay_pending(self) -> bool:
        """Whether some topic's replay (or its frames queued meanwhile) is still to be read."""
        return self._cursor < len(self._members) and not self._is_closed

    @property
    def queued(self) -> int:
        return len(self._frames)

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    async def receive_replay(self, max_bytes: int) -> list[bytes]:
        """The next piece of the topics' replays, in topic order; ``[]`` once all are done.

        Each topic's replay is followed by the live frames it queued meanwhile; from
        then on that topic forwards its frames to the merged queue.

        Raises:
            BrokerUnavailableError: A topic's replay source did not answer.

        Cancellation: a cancelled call takes no frame (it waits only while it holds none).
        """
        out: list[bytes] = []
        size = 0
        members = self._members
        while self._cursor < len(members) and size < max_bytes and not self._is_closed:
            index = self._cursor
            member = members[index]
            try:
                frames = member.receive_batch_nowait(max_bytes=max_bytes - size)
            except trio.WouldBlock:
                if not member.replay_pending:
                    # Caught up: from now on its frames come through the sink.
                    self._cursor += 1
                    continue
                if out:
                    break  # never wait while holding frames
                frames = await member.receive_replay(max_bytes - size)
                if not frames:
                    continue  # its replay is done: its queued live frames are next
            except trio.EndOfChannel:
                break  # closed: _member_closed has closed the merge
            for frame in frames:
                out.append(self._place(index, frame))
                size += len(frame)
        if not out:
            await trio.lowlevel.checkpoint()
        return out

    def receive_batch_nowait(
        self, max_frames: int = sys.maxsize, max_bytes: int | None = None
    ) -> list[bytes]:
        """The live frames queued, each with its topic and compound id.

        Raises:
            trio.WouldBlock: Nothing queued, or a replay is still to be read first.
            trio.EndOfChannel: Closed, and everything queued before was taken.
        """
        frames = self._frames
        if not frames or self.replay_pending:
            if self._is_closed and not frames:
                raise trio.EndOfChannel
            raise trio.WouldBlock
        count = min(len(frames), max_frames)
        if max_bytes is not None:
            size = 0
            for position in range(count):
                size += len(frames[position][1])
                if size >= max_bytes:
                    count = position + 1
                    break
        taken = frames[:count]
        del frames[:count]
        out = [self._place(index, frame) for index, frame in taken]
        self._queued_bytes -= sum(len(frame) for _, frame in taken)
        return out

    async def wait_queued(self, count: int) -> None:
        """As :meth:`Subscription.wait_queued`."""
        await trio.lowlevel.checkpoint_if_cancelled()
        count = min(count, self.capacity)
        if (
            len(self._frames) >= count
            or self._is_closed
            or self.replay_pending
            or 2 * self._queued_bytes >= self._byte_capacity
        ):
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        if self._waiter is not None:
            raise trio.BusyResourceError("another task is already waiting on this stream")
        self._goal = count
        self._waiter = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(self._abort_wait)

    def set_sink(self, sink: FrameSink | None) -> None:
        """As :meth:`Subscription.set_sink`: frames go to ``sink`` while nothing is queued."""
        self._sink = sink

    # The members' side: called from the broker's fan-out, synchronously.

    def _forward(self, index: int, frame: bytes, offered_at: float) -> SinkResult:
        """A member's sink: take its live frame (never declined: the member stays empty)."""
        if self._is_closed:
            return SinkResult.WRITTEN  # dropped: the stream is ending
        frames = self._frames
        sink = self._sink
        if sink is not None and not frames and not self.replay_pending:
            # Placed now, since it is written now (or queued first in line, if declined).
            result = sink(self._place(index, frame, commit=False), offered_at)
            if result is not SinkResult.DECLINED:
                self._place(index, frame)
                if result is SinkResult.PENDING:
                    self._sink = None
                    self._wake()
                return SinkResult.WRITTEN
        size = len(frame)
        if len(frames) >= self.capacity or (
            frames and self._queued_bytes + size > self._byte_capacity
        ):
            self._close(CloseReason.SLOW_CONSUMER)
            frames.clear()
            self._queued_bytes = 0
            # The member that overflowed closes as slow: the broker counts the stream
            # dropped once, as it does a single topic's.
            return SinkResult.DROPPED
        if not frames:
            self.first_queued_at = offered_at
        frames.append((index, frame))
        self._queued_bytes += size
        if self._waiter is not None and (
            len(frames) >= self._goal or 2 * self._queued_bytes >= self._byte_capacity
        ):
            self._wake()
        return SinkResult.WRITTEN

    def _member_closed(self, member: Subscription) -> None:
        reason = member.close_reason or CloseReason.SHUTDOWN
        if reason is CloseReason.SLOW_CONSUMER:
            # As a slow single-topic stream: nothing queued is written; the client
            # resumes from the last compound id it got.
            self._frames.clear()
            self._queued_bytes = 0
        self._close(reason)

    def _close(self, reason: CloseReason) -> None:
        if self.close_reason is None:
            self.close_reason = reason
        self._is_closed = True
        self._wake()

    def _abort_wait(self, _: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
        self._waiter = None
        return trio.lowlevel.Abort.SUCCEEDED

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            trio.lowlevel.reschedule(waiter)

    def _place(self, index: int, frame: bytes, *, commit: bool = True) -> bytes:
        """``frame`` with its topic in ``event`` and the compound position after it in ``id``."""
        event_type, event_id, rest = _split_frame(frame)
        name = self._names[index]
        tag = name if event_type is None else name + b":" + event_type
        escaped = self._escaped
        if event_id is not None:
            own = _escape(event_id.decode())
            if commit:
                escaped[index] = own
            else:
                escaped = [*escaped]
                escaped[index] = own
        compound = _SEPARATOR.join(escaped)
        if not compound.strip(_SEPARATOR):
            # No position at all: an empty id would reset the client's last event id.
            return b"event: " + tag + b"\n" + rest
        return b"event: " + tag + b"\nid: " + compound.encode() + b"\n" + rest
