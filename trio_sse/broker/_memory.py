"""The in-memory broker: one process, zero setup, bounded replay history per topic.

Rules it enforces (each one a bound or an ordering promise):

* A topic's history is the newest contiguous run of its events: at most ``history``
  events, ``history_bytes`` bytes and ``history_ttl`` seconds old. All topics together
  hold at most ``history_total_bytes``; past that, the oldest events go first,
  whatever their topic. An event is counted as its encoded frame plus
  :data:`ENTRY_OVERHEAD` (and its idempotency key, if any).
* A topic with no subscribers and nothing retained is forgotten. At ``max_topics``, a
  new topic replaces the topic without subscribers that published least recently; it
  is refused only when every topic held has subscribers.
* Ids are decimal integers that increase per topic. A publisher-chosen id must be
  above the topic's newest (see :class:`MemoryBroker`).
* Expiry is lazy (on publish, subscribe and statistics), with an amortised O(1) cost
  per publish: no task, no timer, no scan of all topics.
"""

from __future__ import annotations

import bisect
import collections
import time
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from types import TracebackType
from typing import Final

import trio

from ..errors import BrokerClosedError, BrokerUnavailableError, InvalidEventError
from ..protocol import ServerSentEvent
from ._fanout import LocalFanout
from ._interface import (
    BrokerStatistics,
    reset_event,
    validate_backlog,
    validate_idempotency_key,
    validate_topic,
    validate_topics,
)
from ._presence import (
    DEFAULT_PRESENCE_LIMIT,
    Presence,
    PresenceBook,
    PresenceChange,
    presence_event,
    validate_limit,
    validate_subject,
)
from ._subscription import DEFAULT_QUEUE_SIZE, CloseReason, Subscription

__all__ = [
    "DEFAULT_HISTORY",
    "DEFAULT_HISTORY_BYTES",
    "DEFAULT_HISTORY_TOTAL_BYTES",
    "DEFAULT_HISTORY_TTL",
    "DEFAULT_MAX_TOPICS",
    "ENTRY_OVERHEAD",
    "MAX_CHOSEN_ID",
    "MemoryBroker",
]

# Enough to cover a reconnect (3 s by default) at a few hundred events per second,
# while a full topic holds only a thousand shared frames.
DEFAULT_HISTORY: Final = 1000

# 1000 events of 4 KiB, or 64 of the largest body the app takes (64 KiB): a topic of
# big events cannot cost 64 MiB on its own.
DEFAULT_HISTORY_BYTES: Final = 4 * 1024 * 1024

# Replay is for reconnects, which take seconds; an hour also covers a laptop that
# slept through a meeting, and lets a quiet topic's history go.
DEFAULT_HISTORY_TTL: Final = 3600.0

# Well under the memory of a small container (256 MiB), whatever the number of topics.
DEFAULT_HISTORY_TOTAL_BYTES: Final = 64 * 1024 * 1024

# Topics cost memory even when their history is small; with idle ones forgotten, this
# caps topics that have subscribers or history at once.
DEFAULT_MAX_TOPICS: Final = 10_000

# What a retained event costs besides its frame's bytes: the bytes object's header,
# its entry, its id, its slots in the topic's list and in the process-wide order
# (276 B measured with tracemalloc on CPython 3.11), rounded up. So that many tiny
# events cannot hold far more memory than the byte bounds say.
ENTRY_OVERHEAD: Final = 320

# An idempotency key costs its characters plus this (its str object and dict slot:
# 69 B measured), rounded up.
_KEY_OVERHEAD: Final = 96

# The largest id a publisher may choose: the largest integer a JavaScript number holds
# exactly (a page may parse ids), and far from the length limit of ids.
MAX_CHOSEN_ID: Final = 2**53 - 1

# Longer than any id this broker issues or accepts: not worth parsing.
_MAX_ID_DIGITS: Final = 20


def _parse_id(text: str) -> int | None:
    """The number ``text`` spells in this broker's id form, or ``None``.

    The form is plain decimal: ASCII digits, no sign, no leading zero, so each number
    has one spelling and ids compare equal as strings exactly when they do as numbers.
    """
    if (
        not text
        or len(text) > _MAX_ID_DIGITS
        or not (text.isascii() and text.isdigit())
        or (text[0] == "0" and text != "0")
    ):
        return None
    return int(text)


class _Entry:
    __slots__ = ("frame", "id", "key", "published_at", "size")

    def __init__(self, event_id: int, frame: bytes, key: str | None, published_at: float) -> None:
        self.id = event_id
        self.frame = frame
        self.key = key
        self.published_at = published_at
        self.size = len(frame) + ENTRY_OVERHEAD
        if key is not None:
            self.size += len(key) + _KEY_OVERHEAD


class _Topic:
    """One topic's retained events, oldest first, and what is known before them."""

    __slots__ = ("entries", "floor", "head", "keys", "name", "origin", "size")

    def __init__(self, name: str, origin: int) -> None:
        self.name = name
        # Every event of this topic above this id is retained or counted in `floor`
        # (the broker's loss mark when the topic was made); before it, it knows nothing.
        self.origin = origin
        # entries[head:] are retained; a list with a moving head, so that eviction is
        # O(1) (amortised) and finding an id is a binary search.
        self.entries: list[_Entry] = []
        self.head = 0
        self.size = 0
        # Every event of this topic with an id above `floor` is retained; before it,
        # some may be gone. None until the topic's first event.
        self.floor: int | None = None
        # Idempotency keys of retained events; a key leaves with its event.
        self.keys: dict[str, _Entry] = {}

    def __len__(self) -> int:
        return len(self.entries) - self.head

    @property
    def newest(self) -> int | None:
        """The highest id the topic has had, as far as it knows (retained or not)."""
        return self.entries[-1].id if len(self) else self.floor

    def after(self, event_id: int) -> list[bytes]:
        entries = self.entries
        start = bisect.bisect_right(entries, event_id, lo=self.head, key=_id_of)
        return [entries[i].frame for i in range(start, len(entries))]


def _id_of(entry: _Entry) -> int:
    return entry.id


class MemoryBroker:
    """A :class:`~trio_sse.broker.Broker` that lives in this process's memory.

    Event ids are decimal integers. Those it assigns increase by one per publish,
    across all topics (a :meth:`publish_many` is one publish: its topics share the
    id, and so the encoded frame). The counter starts from the wall clock in microseconds, so a
    restarted server never hands out an id that a client saw from the previous run
    (unless more than a million events per second were published for the whole of
    that run, or the clock went back).

    A publisher may choose an event's id: a decimal integer from 1 to
    :data:`MAX_CHOSEN_ID`, without sign or leading zero, above the newest id of its
    topic (so ids increase per topic, as readers resuming with ``Last-Event-ID``
    need). The counter then moves past it, so later assigned ids stay above it.
    Anything else raises :class:`InvalidEventError`. The broker can check only
    against what it still holds: a publisher that keeps its own sequence keeps it
    increasing across restarts and quiet periods.

    Resuming: a ``Last-Event-ID`` at or above the topic's horizon (the last id it
    forgot, or just below its first; for a topic made after the id with no event
    forgotten since, the broker's loss mark when it was made) gets exactly the
    retained events above it. A subscription made without an id has a ``start_id``
    (the newest id issued then), which resumes that way. One
    below the horizon (its events expired, or it comes from before a restart) gets a
    ``reset`` notice, then every retained event of the topic: ids increase across
    restarts, so they all came after it. Any other id (not a number, or one never
    issued) gets a ``reset`` notice, then live events.

    Args:
        history: Events retained per topic for ``Last-Event-ID`` replay and for
            idempotency keys. 0 disables both.
        history_bytes: Bytes retained per topic (frames plus :data:`ENTRY_OVERHEAD`
            each); an event larger than this is delivered but not retained.
        history_ttl: Seconds an event is retained.
        history_total_bytes: Bytes retained in all topics together; past it the
            oldest events of any topic go first.
        queue_size: Frames a subscriber may have queued before it is dropped as slow.
        max_topics: Topics (with history or subscribers) held at once. A new one
            replaces the topic without subscribers that published least recently; if
            every topic has subscribers it is refused with ``BrokerUnavailableError``.
        presence_events: Publish ``join`` and ``leave`` events on a topic as subjects
            come and go (see :mod:`trio_sse.broker` presence). They are events like
            any other: retained, with ids, so a resuming client misses none.
    """

    def __init__(
        self,
        *,
        history: int = DEFAULT_HISTORY,
        history_bytes: int = DEFAULT_HISTORY_BYTES,
        history_ttl: float = DEFAULT_HISTORY_TTL,
        history_total_bytes: int = DEFAULT_HISTORY_TOTAL_BYTES,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        max_topics: int = DEFAULT_MAX_TOPICS,
        presence_events: bool = False,
    ) -> None:
        if history < 0:
            raise ValueError(f"history must be >= 0, got {history}")
        if history_bytes < 0:
            raise ValueError(f"history_bytes must be >= 0, got {history_bytes}")
        if not history_ttl > 0:
            raise ValueError(f"history_ttl must be > 0 seconds, got {history_ttl}")
        if history_total_bytes < 0:
            raise ValueError(f"history_total_bytes must be >= 0, got {history_total_bytes}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if max_topics < 1:
            raise ValueError(f"max_topics must be >= 1, got {max_topics}")
        self._max_topics = max_topics
        self._history_size = history
        self._history_bytes = history_bytes
        self._history_ttl = history_ttl
        self._history_total_bytes = history_total_bytes
        self._queue_size = queue_size
        self._topics: dict[str, _Topic] = {}
        # Every retained event of every topic, oldest first: the order of expiry and
        # of the process-wide byte bound. An OrderedDict, since events also leave
        # from the middle (their topic's own bounds), in O(1).
        self._retained: collections.OrderedDict[_Entry, _Topic] = collections.OrderedDict()
        self._retained_bytes = 0
        # Topics without subscribers, least recently published first: the ones a new
        # topic may replace at max_topics.
        self._unwatched: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._fanout = LocalFanout()
        self._last_id = time.time_ns() // 1000
        # The highest id of an event that may have been forgotten with its topic
        # (dropped, or never retained): a topic made later knows every event of its
        # own above it. Events from before this run are all forgotten.
        self._lost = self._last_id
        self._published = 0
        self._presence = PresenceBook()
        self._presence_events = presence_events
        self._is_closed = False

    @property
    def is_closed(self) -> bool:
        return self._is_closed

    async def publish(
        self, topic: str, event: ServerSentEvent, *, idempotency_key: str | None = None
    ) -> str:
        """Publish ``event``; see :meth:`trio_sse.broker.Broker.publish`.

        Raises:
            InvalidEventError: ``event.id`` is not an id this broker accepts (see the
                class's rules), or ``idempotency_key`` is malformed.
            BrokerUnavailableError: ``topic`` is new and every one of the
                ``max_topics`` topics held has subscribers.

        Cancellation: the one checkpoint comes first, so a cancelled publish
        publishes nothing, and one that passed it completes in full.
        """
        validate_topic(topic)
        if idempotency_key is not None:
            validate_idempotency_key(idempotency_key)
        chosen = None if event.id is None else self._check_id_form(event.id)
        await trio.lowlevel.checkpoint()
        if self._is_closed:
            raise BrokerClosedError("the broker is closed")
        return self._publish_now(topic, event, idempotency_key, chosen)

    def _publish_now(
        self, topic: str, event: ServerSentEvent, idempotency_key: str | None, chosen: int | None
    ) -> str:
        """Publish, checked; never checkpoints (a presence event goes out this way
        from inside subscribe and unsubscribe)."""
        now = trio.current_time()
        self._expire(now)
        state = self._topics.get(topic)
        if idempotency_key is not None and state is not None:
            earlier = state.keys.get(idempotency_key)
            if earlier is not None:
                return str(earlier.id)
        event_id = self._next_id(topic, state, chosen)
        if chosen is None:
            event = replace(event, id=str(event_id))
        frame = event.encode()
        state = self._keep(topic, _Entry(event_id, frame, idempotency_key, now))
        self._published += 1
        self._fanout.deliver(topic, frame)
        if state is not None:
            self._check_watched(state)
        return str(event_id)

    async def publish_many(
        self,
        topics: Sequence[str],
        event: ServerSentEvent,
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, str]:
        """Publish ``event`` to each of ``topics``; see :meth:`trio_sse.broker.Broker.publish_many`.

        All or nothing: every check (names, the key, a chosen id against each topic's
        newest, room for the new topics under ``max_topics``) comes before the first
        write, and the writes never checkpoint or fail. The topics that get the event
        share one id (a chosen one, or one assigned), so one frame serves them all.

        Raises:
            InvalidTopicError: ``topics`` is empty, lists a topic twice or holds a bad
                name.
            InvalidEventError: ``event.id`` is not an id this broker accepts, or not
                above the newest id of one of the topics; or ``idempotency_key`` is
                malformed.
            BrokerUnavailableError: The new topics do not fit under ``max_topics``
                (topics with subscribers, and the batch's own, are never replaced).

        Cancellation: as :meth:`publish`, all of the batch or none of it.
        """
        names = validate_topics(topics)
        if idempotency_key is not None:
            validate_idempotency_key(idempotency_key)
        chosen = None if event.id is None else self._check_id_form(event.id)
        await trio.lowlevel.checkpoint()
        if self._is_closed:
            raise BrokerClosedError("the broker is closed")
        now = trio.current_time()
        self._expire(now)
        # Checks only, nothing written: a refusal leaves everything as it was.
        ids: dict[str, str] = {}
        fresh: list[str] = []
        for topic in names:
            state = self._topics.get(topic)
            if idempotency_key is not None and state is not None:
                earlier = state.keys.get(idempotency_key)
                if earlier is not None:
                    ids[topic] = str(earlier.id)
                    continue
            if chosen is not None:
                self._check_above(topic, state, chosen)
            fresh.append(topic)
        if fresh:
            if chosen is None:
                self._last_id += 1
                event_id = self._last_id
                event = replace(event, id=str(event_id))
            else:
                event_id = chosen
                self._last_id = max(self._last_id, chosen)
            frame = event.encode()
            if self._is_retainable(_Entry(event_id, frame, idempotency_key, now)):
                self._check_room(fresh)
            self._store_many(fresh, event_id, frame, idempotency_key, now)
            for topic in fresh:
                ids[topic] = str(event_id)
        return {topic: ids[topic] for topic in names}

    def _check_room(self, topics: list[str]) -> None:
        """Refuse unless the new ones of ``topics`` fit under ``max_topics``, counting
        the topics without subscribers (outside ``topics``) that may be replaced."""
        batch = set(topics)
        needed = sum(1 for topic in topics if topic not in self._topics)
        needed -= self._max_topics - len(self._topics)
        if needed <= 0:
            return
        for name in self._unwatched:
            if (
                name not in batch
                and name in self._topics
                and not self._fanout.has_subscribers(name)
            ):
                needed -= 1
                if needed == 0:
                    return
        raise BrokerUnavailableError(
            f"this process already holds {self._max_topics} topics with subscribers "
            "(max_topics): no room for the batch's new topics"
        )

    def _store_many(
        self, topics: list[str], event_id: int, frame: bytes, key: str | None, now: float
    ) -> None:
        """Retain and deliver one frame on each topic, checked already: no checkpoint,
        no refusal."""
        # None of the batch may make room for another of it (see _check_room).
        for topic in topics:
            self._unwatched.pop(topic, None)
        for topic in topics:
            self._keep(topic, _Entry(event_id, frame, key, now))
            self._fanout.deliver(topic, frame)
        self._published += len(topics)
        for topic in topics:
            state = self._topics.get(topic)
            if state is not None:
                self._check_watched(state)

    def _keep(self, topic: str, entry: _Entry) -> _Topic | None:
        """Retain ``entry`` in ``topic``'s history, or record that it was not; the topic's
        state afterwards (``None`` if it has none). Checked already: never refuses."""
        state = self._topics.get(topic)
        if self._is_retainable(entry):
            if state is None:
                state = self._new_topic(topic)
            self._retain(state, entry)
        elif state is not None:
            # Not retained, so nothing before it may be: history stays contiguous.
            self._forget_all(state)
            state.floor = entry.id
        else:
            # A topic made later must not claim to know this event.
            self._lost = entry.id
        return state

    def _next_id(self, topic: str, state: _Topic | None, chosen: int | None) -> int:
        if chosen is None:
            self._last_id += 1
            return self._last_id
        self._check_above(topic, state, chosen)
        # Later assigned ids stay above it.
        self._last_id = max(self._last_id, chosen)
        return chosen

    @staticmethod
    def _check_above(topic: str, state: _Topic | None, chosen: int) -> None:
        newest = None if state is None else state.newest
        if newest is not None and chosen <= newest:
            raise InvalidEventError(
                f"event id {chosen} is not above {newest}, the newest id of topic "
                f"{topic!r}: ids must increase per topic (leave the id out to get one)"
            )

    def _check_watched(self, state: _Topic) -> None:
        """After its subscribers changed: list the topic as unwatched, or forget it."""
        if self._fanout.has_subscribers(state.name):
            return
        if len(state):
            self._unwatched[state.name] = None
            self._unwatched.move_to_end(state.name)
        else:
            self._drop(state)

    def _check_id_form(self, event_id: str) -> int:
        number = _parse_id(event_id)
        if number is None or not 1 <= number <= MAX_CHOSEN_ID:
            raise InvalidEventError(
                f"an event id must be a decimal integer from 1 to {MAX_CHOSEN_ID} "
                f"(no sign, no leading zero), got {event_id!r:.80}; leave it out to get one"
            )
        return number

    def _is_retainable(self, entry: _Entry) -> bool:
        return (
            self._history_size > 0
            and entry.size <= self._history_bytes
            and entry.size <= self._history_total_bytes
        )

    def _retain(self, state: _Topic, entry: _Entry) -> None:
        if state.floor is None:
            # Nothing of this topic came between its origin and this first event.
            state.floor = min(entry.id - 1, state.origin)
        state.entries.append(entry)
        state.size += entry.size
        if entry.key is not None:
            state.keys[entry.key] = entry
        self._retained[entry] = state
        self._retained_bytes += entry.size
        while len(state) > self._history_size or state.size > self._history_bytes:
            self._forget_oldest(state)
        # The new entry fits the total on its own, so this stops before reaching it.
        while self._retained_bytes > self._history_total_bytes:
            owner = next(iter(self._retained.values()))
            self._forget_oldest(owner)
            if not len(owner) and not self._fanout.has_subscribers(owner.name):
                self._drop(owner)

    def _forget_oldest(self, state: _Topic) -> None:
        entry = state.entries[state.head]
        state.head += 1
        state.size -= entry.size
        state.floor = entry.id
        if entry.key is not None and state.keys.get(entry.key) is entry:
            del state.keys[entry.key]
        del self._retained[entry]
        self._retained_bytes -= entry.size
        if state.head == len(state.entries):
            state.entries.clear()
            state.head = 0
        elif state.head >= 64 and state.head * 2 >= len(state.entries):
            # Compact once half the list is dead: O(1) amortised per eviction.
            del state.entries[: state.head]
            state.head = 0

    def _forget_all(self, state: _Topic) -> None:
        while len(state):
            self._forget_oldest(state)

    def _expire(self, now: float) -> None:
        """Forget events older than ``history_ttl``: O(1) per event forgotten."""
        cutoff = now - self._history_ttl
        retained = self._retained
        while retained:
            oldest, owner = next(iter(retained.items()))
            if oldest.published_at > cutoff:
                return
            self._forget_oldest(owner)
            if not len(owner) and not self._fanout.has_subscribers(owner.name):
                self._drop(owner)

    def _new_topic(self, topic: str) -> _Topic:
        if len(self._topics) >= self._max_topics:
            self._make_room()
        state = self._topics[topic] = _Topic(topic, self._lost)
        return state

    def _make_room(self) -> None:
        while self._unwatched:
            name, _ = self._unwatched.popitem(last=False)
            state = self._topics.get(name)
            if state is not None and not self._fanout.has_subscribers(name):
                self._forget_all(state)
                self._drop(state)
                return
        raise BrokerUnavailableError(
            f"this process already holds {self._max_topics} topics with subscribers (max_topics)"
        )

    def _drop(self, state: _Topic) -> None:
        self._forget_all(state)
        if state.floor is not None:
            self._lost = max(self._lost, state.floor)
        self._unwatched.pop(state.name, None)
        if self._topics.get(state.name) is state:
            del self._topics[state.name]

    def subscribe(
        self,
        topic: str,
        *,
        last_event_id: str | None = None,
        subject: str | None = None,
        backlog: int = 0,
    ) -> AbstractAsyncContextManager[Subscription]:
        """Subscribe to ``topic``; see :meth:`trio_sse.broker.Broker.subscribe`.

        Raises:
            BrokerUnavailableError: ``topic`` is new and every one of the
                ``max_topics`` topics held has subscribers.
        """
        validate_subject(subject)
        validate_backlog(backlog)
        # A class, not an @asynccontextmanager: a suspended generator frame per open
        # stream cost 0.8 KiB.
        return _Subscribed(self, topic, last_event_id, subject, backlog)

    async def _subscribe(
        self, topic: str, last_event_id: str | None, subject: str | None, backlog: int
    ) -> Subscription:
        validate_topic(topic)
        await trio.lowlevel.checkpoint()
        if self._is_closed:
            raise BrokerClosedError("the broker is closed")
        self._expire(trio.current_time())
        state = self._topics.get(topic)
        if state is None:
            state = self._new_topic(topic)
        # From here to add() nothing checkpoints, so no publish can slip between the
        # replay snapshot and the registration: no gap and no duplicate.
        if last_event_id is None:
            # Every event published to the topic from now on has an id above this.
            entries = state.entries
            start = max(state.head, len(entries) - backlog)
            subscription = Subscription(
                topic,
                queue_size=self._queue_size,
                backlog=[entries[i].frame for i in range(start, len(entries))],
                start_id=str(self._last_id),
            )
        else:
            replay = self._replay(state, last_event_id)
            subscription = Subscription(topic, queue_size=self._queue_size, backlog=replay)
        self._fanout.add(subscription)
        self._unwatched.pop(topic, None)
        if self._presence.enter(topic, subject) and self._presence_events:
            assert subject is not None
            # After add(): the subject's own stream carries its join too.
            self._publish_now(topic, presence_event(PresenceChange.JOIN, subject), None, None)
        return subscription

    def _replay(self, state: _Topic, last_event_id: str) -> list[bytes]:
        """The frames a subscriber resuming after ``last_event_id`` gets first."""
        asked = _parse_id(last_event_id)
        if asked is None or asked > self._last_id:
            # Not an id this broker issued: nothing can be placed after it.
            newest = state.newest
            resume = None if newest is None else str(newest)
            return [reset_event(last_event_id, resume_id=resume).encode()]
        if state.floor is not None and asked >= state.floor:
            return state.after(asked)
        if state.floor is None and asked >= state.origin and self._history_size > 0:
            # The topic has had no event since the id. (With history off, a resume is
            # always told it may have missed something, as before.)
            return []
        # Some events after it may be gone (expired, or before a restart); those
        # retained all came after it, since ids increase across restarts.
        resume = None if state.floor is None or not len(state) else str(state.floor)
        notice = reset_event(last_event_id, resume_id=resume).encode()
        return [notice, *state.after(asked)]

    def _unsubscribe(self, subscription: Subscription, subject: str | None) -> None:
        topic = subscription.topic
        self._fanout.remove(subscription)
        if self._presence.leave(topic, subject) and self._presence_events and not self._is_closed:
            assert subject is not None
            self._publish_now(topic, presence_event(PresenceChange.LEAVE, subject), None, None)
        state = self._topics.get(topic)
        if state is not None:
            self._check_watched(state)

    async def presence(self, topic: str, *, limit: int = DEFAULT_PRESENCE_LIMIT) -> Presence:
        """Who is on ``topic``; see :meth:`trio_sse.broker.Broker.presence`."""
        validate_topic(topic)
        validate_limit(limit)
        await trio.lowlevel.checkpoint()
        if self._is_closed:
            raise BrokerClosedError("the broker is closed")
        return self._presence.snapshot(topic, limit)

    def statistics(self) -> BrokerStatistics:
        """Return a snapshot of the counters; see :class:`~trio_sse.broker.BrokerStatistics`.

        Inside a Trio run, expired history is forgotten first.
        """
        try:
            now = trio.current_time()
        except RuntimeError:  # outside trio.run: nothing to compare ages with
            pass
        else:
            self._expire(now)
        fanout = self._fanout
        return BrokerStatistics(
            subscribers=fanout.subscriber_count,
            subscribers_per_topic=fanout.per_topic(),
            topics=len(self._topics),
            published=self._published,
            delivered=fanout.delivered,
            dropped=fanout.dropped,
            retained_bytes=self._retained_bytes,
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

    __slots__ = ("_backlog", "_broker", "_last_event_id", "_subject", "_subscription", "_topic")

    def __init__(
        self,
        broker: MemoryBroker,
        topic: str,
        last_event_id: str | None,
        subject: str | None,
        backlog: int,
    ) -> None:
        self._broker = broker
        self._topic = topic
        self._last_event_id = last_event_id
        self._subject = subject
        self._backlog = backlog
        self._subscription: Subscription | None = None

    async def __aenter__(self) -> Subscription:
        if self._subscription is not None:
            raise RuntimeError("this subscribe() context is already in use")
        self._subscription = await self._broker._subscribe(
            self._topic, self._last_event_id, self._subject, self._backlog
        )
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
            self._broker._unsubscribe(subscription, self._subject)
