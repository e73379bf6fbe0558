"""The in-memory broker: one process, zero setup, bounded replay history per topic."""

from __future__ import annotations

import collections
import time
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from types import TracebackType
from typing import Final, NamedTuple

import trio

from .._errors import BrokerClosedError, BrokerUnavailableError
from ..protocol import ServerSentEvent
from ._fanout import LocalFanout
from ._interface import BrokerStatistics, reset_event, validate_topic
from ._subscription import DEFAULT_QUEUE_SIZE, CloseReason, Subscription

__all__ = ["DEFAULT_HISTORY", "DEFAULT_MAX_TOPICS", "MemoryBroker"]

# Enough to cover a reconnect (3 s by default) at a few hundred events per second,
# while a full topic holds only a thousand shared frames.
DEFAULT_HISTORY: Final = 1000

# Topics keep their history after their last subscriber leaves, so without a cap a
# client publishing to made-up names would grow the process without bound.
DEFAULT_MAX_TOPICS: Final = 10_000


class _Entry(NamedTuple):
    seq: int  # position in the topic, consecutive, for O(1) replay slicing
    id: str
    frame: bytes


class _TopicHistory:
    """The last ``size`` events of one topic, findable by id."""

    __slots__ = ("_entries", "_position")

    def __init__(self, size: int) -> None:
        self._entries: collections.deque[_Entry] = collections.deque(maxlen=size)
        self._position: dict[str, int] = {}

    def append(self, event_id: str, frame: bytes) -> None:
        entries = self._entries
        seq = entries[-1].seq + 1 if entries else 0
        if entries.maxlen == 0:
            return
        if len(entries) == entries.maxlen:
            oldest = entries[0]
            # A reused id may point at a newer entry; only forget it if it is this one.
            if self._position.get(oldest.id) == oldest.seq:
                del self._position[oldest.id]
        entries.append(_Entry(seq, event_id, frame))
        self._position[event_id] = seq

    def after(self, event_id: str) -> list[bytes] | None:
        """The frames after ``event_id``, or ``None`` if that id is not retained."""
        seq = self._position.get(event_id)
        if seq is None:
            return None
        entries = self._entries
        start = seq - entries[0].seq + 1
        return [entries[i].frame for i in range(start, len(entries))]

    @property
    def newest_id(self) -> str | None:
        return self._entries[-1].id if self._entries else None


class MemoryBroker:
    """A :class:`~trio_sse.broker.Broker` that lives in this process's memory.

    Event ids it assigns are decimal integers that increase by one per publish,
    across all topics. The counter starts from the wall clock in microseconds, so a
    restarted server never hands out an id that a client saw from the previous run
    (unless more than a million events per second were published for the whole of
    that run, or the clock went back): a stale ``Last-Event-ID`` gets a ``reset``
    notice rather than a wrong replay.

    Args:
        history: Events retained per topic for ``Last-Event-ID`` replay. 0 disables replay.
        queue_size: Frames a subscriber may have queued before it is dropped as slow.
        max_topics: Topics (with history or subscribers) held at once; a publish or
            subscribe that would add one more raises ``BrokerUnavailableError``.
            Memory is bounded by about ``max_topics * history`` frames.
    """

    def __init__(
        self,
        *,
        history: int = DEFAULT_HISTORY,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        max_topics: int = DEFAULT_MAX_TOPICS,
    ) -> None:
        if history < 0:
            raise ValueError(f"history must be >= 0, got {history}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if max_topics < 1:
            raise ValueError(f"max_topics must be >= 1, got {max_topics}")
        self._max_topics = max_topics
        self._history_size = history
        self._queue_size = queue_size
        self._histories: dict[str, _TopicHistory] = {}
        self._fanout = LocalFanout()
        self._last_id = time.time_ns() // 1000
        self._published = 0
        self._is_closed = False

    @property
    def is_closed(self) -> bool:
        return self._is_closed

    async def publish(
        self, topic: str, event: ServerSentEvent, *, idempotency_key: str | None = None
    ) -> str:
        """Publish ``event``; see :meth:`trio_sse.broker.Broker.publish`.

        Cancellation: the one checkpoint comes first, so a cancelled publish
        publishes nothing, and one that passed it completes in full.
        """
        if idempotency_key is not None:  # issue 12: being built on its own branch
            raise NotImplementedError("idempotent publishing is not built yet")
        validate_topic(topic)
        await trio.lowlevel.checkpoint()
        if self._is_closed:
            raise BrokerClosedError("the broker is closed")
        event_id = event.id
        if event_id is None:
            self._last_id += 1
            event_id = str(self._last_id)
            event = replace(event, id=event_id)
        history = self._histories.get(topic)
        if history is None:
            self._check_new_topic(topic)
            history = self._histories[topic] = _TopicHistory(self._history_size)
        frame = event.encode()
        history.append(event_id, frame)
        self._published += 1
        self._fanout.deliver(topic, frame)
        return event_id

    def subscribe(
        self, topic: str, *, last_event_id: str | None = None
    ) -> AbstractAsyncContextManager[Subscription]:
        """Subscribe to ``topic``; see :meth:`trio_sse.broker.Broker.subscribe`."""
        # A class, not an @asynccontextmanager: a suspended generator frame per open
        # stream cost 0.8 KiB.
        return _Subscribed(self, topic, last_event_id)

    async def _subscribe(self, topic: str, last_event_id: str | None) -> Subscription:
        validate_topic(topic)
        await trio.lowlevel.checkpoint()
        if self._is_closed:
            raise BrokerClosedError("the broker is closed")
        if topic not in self._histories:
            self._check_new_topic(topic)
        # From here to add() nothing checkpoints, so no publish can slip between the
        # replay snapshot and the registration: no gap and no duplicate.
        backlog: list[bytes] = []
        if last_event_id is not None:
            history = self._histories.get(topic)
            replay = history.after(last_event_id) if history is not None else None
            if replay is None:
                newest = history.newest_id if history is not None else None
                backlog = [reset_event(last_event_id, resume_id=newest).encode()]
            else:
                backlog = replay
        subscription = Subscription(topic, queue_size=self._queue_size, backlog=backlog)
        self._fanout.add(subscription)
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        self._fanout.remove(subscription)

    def _check_new_topic(self, topic: str) -> None:
        # Called only for a topic without history; it may still have subscribers.
        if topic in self._fanout.topics():
            return
        if len(self._histories.keys() | self._fanout.topics()) >= self._max_topics:
            raise BrokerUnavailableError(
                f"this process already holds {self._max_topics} topics (max_topics)"
            )

    def statistics(self) -> BrokerStatistics:
        """Return a snapshot of the counters; see :class:`~trio_sse.broker.BrokerStatistics`."""
        fanout = self._fanout
        return BrokerStatistics(
            subscribers=fanout.subscriber_count,
            subscribers_per_topic=fanout.per_topic(),
            topics=len(self._histories.keys() | fanout.topics()),
            published=self._published,
            delivered=fanout.delivered,
            dropped=fanout.dropped,
        )

    async def ping(self) -> None:
        """Raise :class:`BrokerClosedError` once closed; memory is always there otherwise."""
        await trio.lowlevel.checkpoint()
        if self._is_closed:
            raise BrokerClosedError("the broker is closed")

    async def aclose(self) -> None:
        """End every subscription (reason ``SHUTDOWN``) and refuse new work. Idempotent."""
        self._is_closed = True
        self._fanout.close_all(CloseReason.SHUTDOWN)
        await trio.lowlevel.checkpoint()


class _Subscribed:
    """The context of :meth:`MemoryBroker.subscribe`: subscribed inside, never after."""

    __slots__ = ("_broker", "_last_event_id", "_subscription", "_topic")

    def __init__(self, broker: MemoryBroker, topic: str, last_event_id: str | None) -> None:
        self._broker = broker
        self._topic = topic
        self._last_event_id = last_event_id
        self._subscription: Subscription | None = None

    async def __aenter__(self) -> Subscription:
        if self._subscription is not None:
            raise RuntimeError("this subscribe() context is already in use")
        self._subscription = await self._broker._subscribe(self._topic, self._last_event_id)
        return self._subscription

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # No checkpoint: leaving must unsubscribe even inside a cancelled scope.
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            self._broker._unsubscribe(subscription)
