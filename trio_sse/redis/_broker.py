"""The Redis Streams broker: topics shared by every process and host that use one Redis.

Each topic is a Redis stream. A publish is one Lua script (see ``_scripts``): the
idempotency check, the topic cap, the ``XADD`` and the trim to ``history`` entries,
``history_bytes`` bytes and ``history_ttl`` seconds, atomically. The stream id Redis
assigns is the event id, so ``Last-Event-ID`` means the same on every worker. In each
process, one reader task per topic with local subscribers blocks in ``XREAD`` and fans
what it reads out to those subscribers through
:class:`~trio_sse.broker.LocalFanout`, exactly as the memory broker does from
``publish()``. No subscriber ever holds a Redis connection of its own.

The hand-over from replay to live, without a gap or a duplicate, rests on one
invariant: a reader's ``position`` is the id of the last entry it fanned out, and
it changes only in the same synchronous step as that fan-out. A subscriber is
registered in the same step as it reads ``position``, so it gets every entry after
``position`` live, and ``XRANGE (last_event_id, position]`` is the rest: read page by
page (:class:`_StreamReplay`), each only when the stream asks for it.

Trimming may remove an entry before a lagging reader has read it (a burst of large
events while its connection was being re-established). Each entry names the one
added before it, so the reader notices and sends its subscribers a reset notice
rather than skipping the entry silently.
"""

from __future__ import annotations

import binascii
import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from typing import Final, NamedTuple

import coredis
import trio
from coredis.commands import Script
from coredis.exceptions import RedisError, ReplicationError, ResponseError
from coredis.response.types import StreamEntry

from ..broker import (
    DEFAULT_HISTORY_BYTES,
    DEFAULT_HISTORY_TTL,
    DEFAULT_PRESENCE_LIMIT,
    DEFAULT_PRESENCE_TTL,
    DEFAULT_REPLICA_TIMEOUT,
    MAX_REPLICA_TIMEOUT,
    BackplaneStatistics,
    BrokerStatistics,
    CloseReason,
    LocalFanout,
    Presence,
    Subscription,
    reset_event,
    validate_backlog,
    validate_idempotency_key,
    validate_limit,
    validate_subject,
    validate_topic,
    validate_topics,
)
from ..errors import BrokerClosedError, BrokerUnavailableError, InvalidEventError
from ..protocol import ServerSentEvent
from . import _scripts
from ._clients import RedisClients
from ._entries import entry_frame, entry_from_reply, fields_of, previous_id
from ._ids import ZERO_ID, StreamId, format_stream_id, parse_stream_id, publishable_id
from ._presence import PresenceSync

__all__ = [
    "DEFAULT_HISTORY_BYTES",
    "DEFAULT_HISTORY_TTL",
    "DEFAULT_KEY_PREFIX",
    "DEFAULT_MAX_TOPICS",
    "DEFAULT_REPLICA_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "MAX_REPLICA_TIMEOUT",
    "RedisBroker",
]

logger = logging.getLogger("trio_sse.redis")

# Topic names are already safe in a key ([A-Za-z0-9._~-]); the prefix keeps them
# apart from the application's own keys in a shared database. A topic's keys are
# <prefix>{<topic>}...: the braces are a Redis Cluster hash tag, so they share a slot
# and one script can use them all.
DEFAULT_KEY_PREFIX: Final = "trio_sse:topic:"

# Redis answers in well under a millisecond on a LAN; five seconds without an answer
# means it is down or stuck, and a publisher is better told so than left waiting.
DEFAULT_TIMEOUT: Final = 5.0

# History per topic, besides its count, is bounded as in memory (the defaults are the
# memory broker's): the bytes of its events' fields (the newest event is kept whatever
# its size), and its age. A topic with no publish for history_ttl disappears from Redis.

# Redis Cluster's hash slots: a key's slot is the CRC-16 (XMODEM, which crc_hqx is) of
# its hash tag, modulo this.
_CLUSTER_SLOTS: Final = 16384

# Each topic with local subscribers has its own reader and so its own blocked Redis
# connection. Redis allows 10,000 clients by default, shared by every worker.
DEFAULT_MAX_TOPICS: Final = 1000

# A blocked XREAD returns at least this often (milliseconds), so that a Redis that
# vanished without closing the connection is noticed by the socket deadline below.
_BLOCK_MS: Final = 10_000


def longest_call(command_timeout: float, replica_timeout: float) -> float:
    """The longest one broker call holds a client: a blocked read, or a publish's wait
    for replicas, each with the command timeout on top (their deadlines)."""
    return max(_BLOCK_MS / 1000, replica_timeout) + command_timeout


# Entries per XREAD: bounds the time one fan-out round runs without a checkpoint.
_READ_COUNT: Final = 256

# Ids each reader remembers having fanned out, to find where to read on when Redis
# lost some of them.
_RECENT_IDS: Final = 64

# Reconnect back-off: the first retry is quick (a restart takes about a second),
# later ones settle at a rate that costs Redis nothing while it recovers.
_RETRY_MIN: Final = 0.05
_RETRY_MAX: Final = 1.0

# While Redis is down, the log says so once, then again at most this often: an
# operator sees the outage go on without a line per topic per retry.
_OUTAGE_REMINDER: Final = 30.0

# What a Redis command raises when Redis is down, stuck or refuses: coredis wraps
# socket errors in its ConnectionError (a RedisError); our deadlines raise TooSlowError.
try:
    # coredis 6.9's cluster pool raises its own QueueFull where a connection attempt
    # failed (it hides the ConnectionError under load, during a failover): Redis is
    # away, as for the others. Private to coredis, hence the fallback.
    from coredis._concurrency import QueueFull as _PoolFullError
except ImportError:  # pragma: no cover - another coredis

    class _PoolFullError(Exception):  # type: ignore[no-redef]
        """Never raised: this coredis has no QueueFull of its own."""


_FAILURES: Final = (RedisError, TimeoutError, OSError, trio.TooSlowError, _PoolFullError)


class _StreamInfo(NamedTuple):
    first_entry: StreamId | None
    last_generated: StreamId


class _TopicReader:
    """The state of one topic's reader task; see the module docs for ``position``."""

    __slots__ = (
        "advanced",
        "cancel_scope",
        "key",
        "position",
        "ready",
        "recent",
        "retry_delay",
        "topic",
        "users",
    )

    def __init__(self, topic: str, key: str) -> None:
        self.topic: Final = topic
        self.key: Final = key
        self.position: StreamId = ZERO_ID
        self.ready = trio.Event()  # set once position holds the stream's newest id
        self.advanced = trio.Event()  # set (and replaced) each time position moves
        self.cancel_scope = trio.CancelScope()
        self.users = 0  # subscribe() contexts that depend on this reader
        self.retry_delay = 0.0  # the back-off after the next failure; 0 while reading
        # The newest ids fanned out (and the start position): what Redis may have lost.
        self.recent: deque[StreamId] = deque(maxlen=_RECENT_IDS)


class _StreamReplay:
    """A subscription's replay, ``(after, until]`` of the topic's stream, read page by page.

    Each :meth:`read` is one script call: it checks that nothing after the last id
    handed out has been trimmed (else the replay ends with a reset notice, resuming
    at ``until``, where live delivery starts) and returns the next page. Nothing is
    read before the stream asks, so a reconnect that does not read costs nothing here.
    """

    __slots__ = ("_after", "_broker", "_key", "_last_event_id", "_until")

    def __init__(
        self, broker: RedisBroker, key: str, last_event_id: str, after: StreamId, until: StreamId
    ) -> None:
        self._broker = broker
        self._key = key
        self._last_event_id = last_event_id  # as the client will know it, for a notice
        self._after = after
        self._until = until

    async def read(self, max_bytes: int) -> list[bytes]:
        """The next frames of the replay; ``[]`` once complete (see ``ReplaySource``)."""
        frames: list[bytes] = []
        while not frames and self._after < self._until:
            first, entries = await self._broker._read_page(
                self._key, self._after, self._until, max_bytes
            )
            # Nothing after `after` was trimmed if the stream still starts at or
            # before it, or if the entry after it names it as its predecessor.
            intact = (first is not None and first <= self._after) or (
                bool(entries) and previous_id(entries[0]) == self._after
            )
            if not intact or not entries:
                # (No entries while `after` is below `until` means they were trimmed.)
                self._after = self._until
                notice = reset_event(self._last_event_id, resume_id=format_stream_id(self._until))
                return [notice.encode()]
            for entry in entries:
                stream_id, frame = entry_frame(entry)
                if frame is not None:
                    frames.append(frame)
                self._after = stream_id
            self._last_event_id = format_stream_id(self._after)
        if not frames:
            await trio.lowlevel.checkpoint()
        return frames


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class RedisBroker:
    """A :class:`~trio_sse.broker.Broker` on Redis Streams; make one with :func:`open_redis_broker`.

    Ids are Redis stream ids (``"1732400000000-0"``). An event published with an id
    of its own keeps it only if that id is a stream id above the topic's newest.

    Guarantees:

    * ``publish()`` returns after Redis acknowledged the write. When it raises
      :class:`~trio_sse.BrokerUnavailableError` because Redis could not be reached,
      nothing was stored; when the connection broke or the timeout expired *after*
      the script was sent (a stuck or paused Redis), the event may be stored and
      delivered all the same (the error says so), and so may a publish cancelled
      after its first checkpoint. A retry with the same ``idempotency_key`` settles
      it: it answers the stored event's id, or publishes it once.
    * While Redis is away, open subscriptions stay open; each reader retries with
      back-off and resumes after the last id it delivered, so no acknowledged event
      is skipped (one trimmed before the reader got to it is announced with a reset
      notice). What Redis itself keeps across a restart depends on its persistence
      settings (see docs/redis.md, "What Redis keeps across a restart").
    * Bounded: per topic, history holds at most ``history`` entries and about
      ``history_bytes`` bytes (the newest entry whatever its size); an entry goes at
      the first publish after it is ``history_ttl`` old, and a topic with no publish
      for ``history_ttl`` is removed from Redis. A publish that would create one
      more than ``max_topics`` topics under the key prefix is refused. A replay
      costs one page (about ``REPLAY_PIECE`` bytes) at a time in this process.
    """

    def __init__(
        self,
        *,
        clients: RedisClients,
        nursery: trio.Nursery,
        where: str,
        history: int,
        history_bytes: int = DEFAULT_HISTORY_BYTES,
        history_ttl: float = DEFAULT_HISTORY_TTL,
        queue_size: int,
        key_prefix: str,
        timeout: float,
        max_topics: int,
        min_replicas: int = 0,
        replica_timeout: float = DEFAULT_REPLICA_TIMEOUT,
        presence_ttl: float = DEFAULT_PRESENCE_TTL,
        presence_events: bool = False,
    ) -> None:
        if "{" in key_prefix or "}" in key_prefix:
            # The first {...} in a key is its hash tag: the prefix's would put every
            # topic in one slot of a cluster.
            raise ValueError(f"key_prefix may not contain braces, got {key_prefix!r}")
        self._clients = clients
        self._nursery = nursery
        self._where = where
        self._history = history
        self._history_bytes = history_bytes
        self._history_ttl_ms = max(1, round(history_ttl * 1000))
        self._publish_script = clients.commands.register_script(_scripts.PUBLISH)
        self._publish_many_script = clients.commands.register_script(_scripts.PUBLISH_MANY)
        self._read_page_script = clients.commands.register_script(_scripts.READ_PAGE)
        self._admit_script = clients.commands.register_script(_scripts.ADMIT)
        # On a cluster, the topic cap is checked before a publish (see _admit): each
        # topic admitted here, with when to count it again (trio clock).
        self._admitted: dict[str, float] = {}
        self._queue_size = queue_size
        self._key_prefix = key_prefix
        self._timeout = timeout
        self._max_topics = max_topics
        self._min_replicas = min_replicas
        self._replica_timeout_ms = max(1, round(replica_timeout * 1000))
        self._fanout = LocalFanout()
        self._readers: dict[str, _TopicReader] = {}
        self._published = 0
        self._is_closed = False
        self._is_withdrawn = False
        self._is_connected = True
        self._reconnects = 0
        self._last_error: str | None = None
        # When the current outage began, and when the log last said so (trio clock).
        self._outage_since: float | None = None
        self._outage_logged_at = 0.0
        self._presence = PresenceSync(
            clients=clients,
            key_of=self._key,
            ttl=presence_ttl,
            timeout=timeout,
            announce=self._announce if presence_events else None,
            on_failure=self._lost,
        )
        # Lives as the readers do, in the nursery that open_redis_broker owns.
        nursery.start_soon(self._presence.run, name="trio_sse.redis-presence")

    @property
    def is_closed(self) -> bool:
        return self._is_closed

    def _key(self, topic: str) -> str:
        return f"{self._key_prefix}{{{topic}}}"

    @property
    def _topics_key(self) -> str:
        # No topic's key: those have braces.
        return self._key_prefix + ":topics"

    # Publishing

    async def publish(
        self, topic: str, event: ServerSentEvent, *, idempotency_key: str | None = None
    ) -> str:
        """Append ``event`` to the topic's stream; see :meth:`trio_sse.broker.Broker.publish`.

        With ``idempotency_key``, the check for an earlier publish with the same key
        and the write are one Lua script, so two publishes with one key never both
        write, even when the first one's answer was lost.

        With ``min_replicas`` N > 0, the script is followed by ``WAIT N`` on the same
        connection, and the publish returns only once N replicas have the event (for
        a repeated ``idempotency_key``: the earlier event), so that it survives the
        master's failure; a repeat waits again.

        Returns:
            The Redis stream id, once Redis has acknowledged the event (or the id of
            the retained event published earlier with ``idempotency_key``).

        Raises:
            InvalidTopicError: Bad topic name.
            InvalidEventError: ``event.id`` is not a stream id (``<ms>-<seq>`` or
                ``<ms>``, ASCII digits, at most ``MAX_PUBLISHED_ID``) above the topic's
                newest, or ``idempotency_key`` is malformed.
            BrokerClosedError: The broker is closed.
            BrokerUnavailableError: Redis did not acknowledge the event in time, or
                refused it; or the topic is new and Redis already holds
                ``max_topics`` topics under this key prefix; or fewer than
                ``min_replicas`` replicas took the event within ``replica_timeout``
                (it is stored on the master; the message says so).

        Cancellation: a publish cancelled at its first checkpoint publishes nothing;
        one cancelled while Redis works on it may or may not be stored (a retry with
        the same ``idempotency_key`` then settles it).
        """
        validate_topic(topic)
        if idempotency_key is not None:
            validate_idempotency_key(idempotency_key)
        identifier = "*" if event.id is None else publishable_id(event.id)
        await trio.lowlevel.checkpoint()
        if self._is_closed:
            raise BrokerClosedError("the broker is closed")
        return await self._append(topic, event, identifier, idempotency_key)

    async def _announce(self, topic: str, event: ServerSentEvent) -> str:
        """Publish a presence event; also while closing, for the leaves it brings."""
        return await self._append(topic, event, "*", None)

    async def _append(
        self, topic: str, event: ServerSentEvent, identifier: str, idempotency_key: str | None
    ) -> str:
        key = self._key(topic)
        arguments: list[str | int] = [
            topic,
            identifier,
            self._history,
            self._history_bytes,
            self._history_ttl_ms,
            self._max_topics,
            idempotency_key or "",
        ]
        for name, value in fields_of(event).items():
            arguments += (name, value)
        keys = [key, f"{key}:meta", f"{key}:keys"]
        if self._clients.is_cluster:
            # The topics' sorted set is in another slot than the topic's keys.
            await self._admit(topic)
        else:
            keys.append(self._topics_key)
        reply, replicas = await self._run_publish(keys, arguments, idempotency_key)
        self._mark_connected()
        assert isinstance(reply, list), f"unexpected reply {reply!r}"
        assert len(reply) == 2, f"unexpected reply {reply!r}"
        status, value = (bytes(part).decode() for part in reply)
        if status == "added":
            self._published += 1
        if status in ("added", "duplicate"):
            if replicas is not None and replicas < self._min_replicas:
                raise self._not_replicated(value, replicas, idempotency_key)
            return value
        if status == "full":
            raise self._full(topic, value)
        if "equal or smaller" in value:
            raise InvalidEventError(
                f"event id {identifier} is not above the newest id of topic {topic!r}; "
                "Redis stream ids must increase"
            )
        raise self._refused("refused the event", ResponseError(value))

    async def _run_publish(
        self,
        keys: list[str],
        arguments: list[str | int],
        idempotency_key: str | None,
        script: Script[bytes] | None = None,
    ) -> tuple[object, int | None]:
        """The publish script's reply, and how many replicas took it (``None``: not asked)."""
        reply: object
        replicas: int | None = None
        commands = self._clients.commands
        script = script if script is not None else self._publish_script
        try:
            if self._min_replicas:
                with trio.fail_after(self._timeout + self._replica_timeout_ms / 1000):
                    reply, replicas = await self._publish_and_wait(keys, arguments, script)
            else:
                with trio.fail_after(self._timeout):
                    reply = await script(keys=keys, args=arguments, client=commands)
        except ReplicationError as exc:
            # (A cluster's WAIT, which says only that too few replicas answered.)
            self._mark_connected()
            raise self._not_replicated(None, None, idempotency_key) from exc
        except ResponseError as exc:
            raise self._refused("refused the publish script", exc) from exc
        except _FAILURES as exc:
            raise self._unavailable(
                "did not acknowledge the event (if the connection broke after sending it, "
                "it may still have been stored: retry with the same idempotency key)",
                exc,
            ) from exc
        return reply, replicas

    async def publish_many(
        self,
        topics: Sequence[str],
        event: ServerSentEvent,
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, str]:
        """Append ``event`` to each topic's stream; see
        :meth:`trio_sse.broker.Broker.publish_many`.

        On one Redis (or a Sentinel's master) the batch is one Lua script: every
        check (each topic's idempotency key, the topic cap for the new topics, an
        ``event.id`` above each topic's newest) before the first write, so it is all
        or nothing, and no other publish comes between its topics. The event's
        fields are sent once, for all topics. With ``min_replicas``, one ``WAIT``
        follows, as for :meth:`publish`.

        On a Redis Cluster a script may only use keys of one hash slot, and each
        topic's keys have a slot of their own (their hash tag is the topic). So the
        batch is one script per slot, slot after slot, each all or nothing:

        * names, the key and the topic cap are checked for every topic first (the
          cap by a script of its own, as for :meth:`publish`);
        * an ``event.id`` of the publisher's is refused (``InvalidEventError``)
          unless all topics share one slot: another slot could refuse it after the
          first stored it, and no retry would mend that;
        * if Redis fails on a later slot, the earlier slots' topics have the event
          already: the error names them, and a retry with the same
          ``idempotency_key`` publishes to the others only.

        Returns:
            Each topic's Redis stream id (ids differ from topic to topic).

        Raises:
            InvalidTopicError: ``topics`` is empty, lists a topic twice or holds a bad
                name.
            InvalidEventError: As :meth:`publish`, for any topic (the message names
                it); or, on a cluster, an ``event.id`` with topics in several slots.
            BrokerClosedError: The broker is closed.
            BrokerUnavailableError: As :meth:`publish`. Nothing is stored unless the
                message says so (a cluster batch that failed after its first slot,
                or too few replicas).
        """
        names = validate_topics(topics)
        if idempotency_key is not None:
            validate_idempotency_key(idempotency_key)
        identifier = "*" if event.id is None else publishable_id(event.id)
        groups = self._slot_groups(names)
        if len(groups) > 1 and event.id is not None:
            raise InvalidEventError(
                "on a Redis Cluster, an event with an id of its own may be published to "
                f"several topics only if their keys are in one slot; these are in {len(groups)} "
                "slots (leave the id out to get one per topic)"
            )
        await trio.lowlevel.checkpoint()
        if self._is_closed:
            raise BrokerClosedError("the broker is closed")
        fields: list[str] = []
        for name, value in fields_of(event).items():
            fields += (name, value)
        if self._clients.is_cluster:
            for topic in names:
                await self._admit(topic)
        ids: dict[str, str] = {}
        for group in groups:
            try:
                ids.update(await self._publish_group(group, identifier, fields, idempotency_key))
            except BrokerUnavailableError as exc:
                if not ids:
                    raise
                retry = (
                    "retry with the same Idempotency-Key to publish to the others once"
                    if idempotency_key is not None
                    else "a retry without an Idempotency-Key publishes to those again"
                )
                raise BrokerUnavailableError(
                    f"{exc}; the event was stored already for topics "
                    f"{', '.join(map(repr, ids))} (one slot of the cluster at a time); {retry}"
                ) from exc
        return {topic: ids[topic] for topic in names}

    def _slot_groups(self, topics: list[str]) -> list[list[str]]:
        """``topics`` split into the groups one script can publish to: all of them,
        but on a cluster one group per hash slot, in the order of first appearance."""
        if not self._clients.is_cluster:
            return [topics]
        groups: dict[int, list[str]] = {}
        for topic in topics:
            slot = binascii.crc_hqx(topic.encode(), 0) % _CLUSTER_SLOTS
            groups.setdefault(slot, []).append(topic)
        return list(groups.values())

    async def _publish_group(
        self, topics: list[str], identifier: str, fields: list[str], idempotency_key: str | None
    ) -> dict[str, str]:
        """Run ``PUBLISH_MANY`` over ``topics`` (keys of one slot on a cluster)."""
        keys: list[str] = []
        for topic in topics:
            key = self._key(topic)
            keys += (key, f"{key}:meta", f"{key}:keys")
        if not self._clients.is_cluster:
            keys.append(self._topics_key)
        arguments: list[str | int] = [
            len(topics),
            identifier,
            self._history,
            self._history_bytes,
            self._history_ttl_ms,
            self._max_topics,
            idempotency_key or "",
            len(fields),
            *fields,
            *topics,
        ]
        reply, replicas = await self._run_publish(
            keys, arguments, idempotency_key, self._publish_many_script
        )
        self._mark_connected()
        assert isinstance(reply, list), f"unexpected reply {reply!r}"
        status, *values = (bytes(part).decode() for part in reply)
        if status == "full":
            (count,) = values
            raise BrokerUnavailableError(
                f"some of the topics are new and Redis at {self._where} already holds "
                f"{count} topics (max_topics); a topic leaves when it has had no publish "
                "for history_ttl"
            )
        if status == "refused":
            topic, error = values
            if "equal or smaller" in error:
                raise InvalidEventError(
                    f"event id {identifier} is not above the newest id of topic {topic!r}; "
                    "Redis stream ids must increase"
                )
            raise self._refused(f"refused the event for topic {topic!r}", ResponseError(error))
        assert status == "ok", f"unexpected reply {reply!r}"
        assert len(values) == 2 * len(topics), f"unexpected reply {reply!r}"
        outcomes = values[::2]
        self._published += outcomes.count("added")
        if replicas is not None and replicas < self._min_replicas:
            raise self._not_replicated(None, replicas, idempotency_key)
        return dict(zip(topics, values[1::2], strict=True))

    def _full(self, topic: str, count: str) -> BrokerUnavailableError:
        return BrokerUnavailableError(
            f"topic {topic!r} is new and Redis at {self._where} already holds {count} "
            "topics (max_topics); a topic leaves when it has had no publish for "
            "history_ttl"
        )

    async def _admit(self, topic: str) -> None:
        """On a cluster: count ``topic`` among the prefix's topics, or refuse it at the cap.

        A cluster runs a script on one slot's keys only, so this is a script of its
        own before the publish's, not part of it. Each process counts a topic again
        every ``history_ttl / 2`` while it publishes to it, which keeps the topic
        counted (it expires ``history_ttl`` after that); the cap is exact but for
        publishes racing to create the last topics.
        """
        now = trio.current_time()
        if self._admitted.get(topic, -math.inf) > now:
            return
        try:
            with trio.fail_after(self._timeout):
                reply: object = await self._admit_script(
                    keys=[self._topics_key],
                    args=[topic, self._history_ttl_ms, self._max_topics],
                    client=self._clients.commands,
                )
        except ResponseError as exc:
            raise self._refused("refused the topic count script", exc) from exc
        except _FAILURES as exc:
            raise self._unavailable(
                "did not answer (counting topics; nothing stored)", exc
            ) from exc
        assert isinstance(reply, list), f"unexpected reply {reply!r}"
        status, value = (bytes(part).decode() for part in reply)
        if status == "full":
            raise self._full(topic, value)
        if len(self._admitted) >= 2 * self._max_topics:
            self._admitted = {name: due for name, due in self._admitted.items() if due > now}
        self._admitted[topic] = now + self._history_ttl_ms / 2000

    async def _publish_and_wait(
        self, keys: list[str], arguments: list[str | int], script: Script[bytes]
    ) -> tuple[object, int]:
        """Run the publish script, then ``WAIT`` on the same connection: its reply, replicas.

        ``WAIT`` counts the replicas that have every write made on its connection
        so far, so both go in one pipeline, which holds one connection (a plain
        command may go out on any connection of the pool). A cluster's client does
        that itself (``ensure_replication``), raising ``ReplicationError`` when too
        few replicas answer.
        """
        commands = self._clients.commands
        if isinstance(commands, coredis.RedisCluster):
            with commands.ensure_replication(self._min_replicas, self._replica_timeout_ms):
                reply: object = await script(keys=keys, args=arguments, client=commands)
            return reply, self._min_replicas
        async with commands.pipeline(transaction=False) as pipeline:
            published: Awaitable[object] = script(keys=keys, args=arguments, client=pipeline)
            waited = pipeline.wait(self._min_replicas, self._replica_timeout_ms)
        return await published, await waited

    def _not_replicated(
        self, event_id: str | None, replicas: int | None, idempotency_key: str | None
    ) -> BrokerUnavailableError:
        retry = (
            "retry with the same Idempotency-Key"
            if idempotency_key is not None
            else "a retry without an Idempotency-Key publishes it again"
        )
        event = "the event" if event_id is None else f"event {event_id}"
        taken = "fewer" if replicas is None else replicas
        return BrokerUnavailableError(
            f"{event} is stored on the master (Redis at {self._where}), acknowledged "
            f"by {taken} of {self._min_replicas} replicas within "
            f"{self._replica_timeout_ms} ms: it may be lost if the master fails; {retry}"
        )

    # Subscribing

    @asynccontextmanager
    async def subscribe(
        self,
        topic: str,
        *,
        last_event_id: str | None = None,
        subject: str | None = None,
        backlog: int = 0,
    ) -> AsyncIterator[Subscription]:
        """Subscribe to ``topic``; see :meth:`trio_sse.broker.Broker.subscribe`.

        Without ``last_event_id``, and with one this process has already delivered,
        this needs Redis only to start the topic's reader; a replay needs it for an
        ``XRANGE``.

        Raises:
            InvalidTopicError: Bad topic name.
            BrokerClosedError: The broker is closed.
            BrokerUnavailableError: Redis is needed and does not answer in time, or
                this process already reads ``max_topics`` topics.
        """
        validate_topic(topic)
        validate_subject(subject)
        validate_backlog(backlog)
        await trio.lowlevel.checkpoint()
        if self._is_closed:
            raise BrokerClosedError("the broker is closed")
        reader = self._acquire_reader(topic)
        subscription: Subscription | None = None
        try:
            with trio.move_on_after(self._timeout):
                await reader.ready.wait()
            if not reader.ready.is_set():
                raise BrokerUnavailableError(
                    f"Redis at {self._where} did not answer in {self._timeout} s "
                    f"(starting to read topic {topic!r}): {self._last_error}"
                )
            subscription = await self._hand_over(reader, last_event_id, backlog)
            self._presence.enter(topic, subject)
            yield subscription
        finally:
            if subscription is not None:
                self._fanout.remove(subscription)
                self._presence.leave(topic, subject)
            self._release_reader(reader)

    async def _hand_over(
        self, reader: _TopicReader, last_event_id: str | None, backlog: int
    ) -> Subscription:
        """Make and register a subscription with its replay, with no gap and no duplicate."""
        topic, queue_size = reader.topic, self._queue_size
        if last_event_id is None:
            frames, since = await self._newest(reader, backlog) if backlog else ([], None)
            # No checkpoint from here to the registration. What the reader fanned out
            # while the backlog was read comes as a replay after it.
            position = reader.position
            replay = None
            if since is not None and since != position:
                replay = _StreamReplay(self, reader.key, format_stream_id(since), since, position)
            # What this reader delivered last: a resume after it misses nothing.
            subscription = Subscription(
                topic,
                queue_size=queue_size,
                backlog=frames,
                replay=replay,
                start_id=format_stream_id(position),
            )
            self._fanout.add(subscription)
            return subscription
        wanted = parse_stream_id(last_event_id)
        if wanted is not None and wanted > reader.position:
            # The client saw an event this reader has not fanned out yet (another
            # worker was ahead), or one Redis no longer knows (it lost data).
            info = await self._stream_info(reader.key)
            if info is None or wanted > info.last_generated:
                wanted = None
            else:
                await self._wait_for_position(reader, wanted)
        # No checkpoint from here to the registration: see the module docs.
        position = reader.position
        if wanted is None:
            resume = format_stream_id(position) if position != ZERO_ID else None
            notice = reset_event(last_event_id, resume_id=resume).encode()
            subscription = Subscription(topic, queue_size=queue_size, backlog=[notice])
        elif wanted == position:
            subscription = Subscription(topic, queue_size=queue_size, backlog=[])
        else:
            replay = _StreamReplay(self, reader.key, last_event_id, wanted, position)
            subscription = Subscription(topic, queue_size=queue_size, backlog=[], replay=replay)
        self._fanout.add(subscription)
        return subscription

    async def _newest(self, reader: _TopicReader, count: int) -> tuple[list[bytes], StreamId]:
        """The frames of the topic's newest ``count`` entries up to the reader's position."""
        position = reader.position
        if position == ZERO_ID:
            return [], position
        try:
            with trio.fail_after(self._timeout):
                entries = await self._clients.commands.xrevrange(
                    reader.key, format_stream_id(position), "-", count=count
                )
        except _FAILURES as exc:
            raise self._unavailable("did not answer the backlog (XREVRANGE)", exc) from exc
        self._mark_connected()
        frames = [frame for _, frame in map(entry_frame, reversed(entries)) if frame is not None]
        return frames, position

    async def presence(self, topic: str, *, limit: int = DEFAULT_PRESENCE_LIMIT) -> Presence:
        """Who is on ``topic`` over every process; see :meth:`trio_sse.broker.Broker.presence`.

        A process's changes reach Redis within about 50 ms; one that stops (a crash)
        drops out within ``presence_ttl`` of its last refresh.
        """
        validate_topic(topic)
        validate_limit(limit)
        await trio.lowlevel.checkpoint()
        if self._is_closed:
            raise BrokerClosedError("the broker is closed")
        try:
            presence = await self._presence.read(topic, limit)
        except ResponseError as exc:
            raise self._refused("refused the presence script", exc) from exc
        except _FAILURES as exc:
            raise self._unavailable("did not answer the presence script", exc) from exc
        self._mark_connected()
        return presence

    async def _wait_for_position(self, reader: _TopicReader, wanted: StreamId) -> None:
        with trio.move_on_after(self._timeout):
            while reader.position < wanted:
                await reader.advanced.wait()
            return
        raise BrokerUnavailableError(
            f"the reader of topic {reader.topic!r} did not reach id "
            f"{format_stream_id(wanted)} within {self._timeout} s: {self._last_error}"
        )

    async def _read_page(
        self, key: str, after: StreamId, until: StreamId, max_bytes: int
    ) -> tuple[StreamId | None, list[StreamEntry]]:
        """The stream's first id, and its entries in ``(after, until]`` up to ``max_bytes``."""
        try:
            with trio.fail_after(self._timeout):
                reply: object = await self._read_page_script(
                    keys=[key],
                    args=[format_stream_id(after), format_stream_id(until), max_bytes],
                    client=self._clients.commands,
                )
        except _FAILURES as exc:
            raise self._unavailable("did not answer the replay (XRANGE)", exc) from exc
        self._mark_connected()
        assert isinstance(reply, list), f"unexpected reply {reply!r}"
        assert reply, "the replay script returned nothing"
        head, *entries = reply
        first = parse_stream_id(bytes(head).decode()) if head else None
        return first, [entry_from_reply(entry) for entry in entries]

    async def _stream_info(self, key: str) -> _StreamInfo | None:
        """The stream's first entry and newest id ever generated; ``None`` if no stream."""
        try:
            info = await self._read_stream_info(key)
        except ResponseError as exc:
            raise self._unavailable(f"refused XINFO ({exc})", exc) from exc
        except _FAILURES as exc:
            raise self._unavailable("did not answer XINFO", exc) from exc
        self._mark_connected()
        return info

    async def _read_stream_info(self, key: str) -> _StreamInfo | None:
        """:meth:`_stream_info`, raising what coredis raises."""
        try:
            with trio.fail_after(self._timeout):
                info = await self._clients.commands.xinfo_stream(key)
        except ResponseError as exc:
            if "no such key" in str(exc):
                return None
            raise
        first = info["first-entry"]
        generated = info["last-generated-id"]
        last = parse_stream_id(generated.decode() if isinstance(generated, bytes) else generated)
        assert last is not None, f"malformed last-generated-id {generated!r}"
        return _StreamInfo(entry_frame(first)[0] if first is not None else None, last)

    # Readers

    def _acquire_reader(self, topic: str) -> _TopicReader:
        reader = self._readers.get(topic)
        if reader is None:
            if len(self._readers) >= self._max_topics:
                raise BrokerUnavailableError(
                    f"this process already reads {self._max_topics} topics (max_topics)"
                )
            reader = self._readers[topic] = _TopicReader(topic, self._key(topic))
            self._nursery.start_soon(self._read_topic, reader, name=f"trio_sse.redis:{topic}")
        reader.users += 1
        return reader

    def _release_reader(self, reader: _TopicReader) -> None:
        reader.users -= 1
        if reader.users == 0:
            reader.cancel_scope.cancel()
            if self._readers.get(reader.topic) is reader:
                del self._readers[reader.topic]

    async def _read_topic(self, reader: _TopicReader) -> None:
        """Fan the topic's new entries out until cancelled; retry whatever Redis does."""
        with reader.cancel_scope:
            while True:
                try:
                    await self._read_until_failure(reader)
                except Exception as exc:
                    # Not only _FAILURES: a reader that raised would end the broker's
                    # nursery, and every stream with it. coredis 6.9's cluster pool can
                    # raise its own QueueFull when a connection attempt is cancelled.
                    self._lost(exc)
                    delay = reader.retry_delay = min(
                        reader.retry_delay * 2 or _RETRY_MIN, _RETRY_MAX
                    )
                    # The outage itself is logged once, by _lost; each topic's retry
                    # is detail, unless the failure is not one Redis being down causes.
                    is_expected = isinstance(exc, _FAILURES)
                    logger.log(
                        logging.DEBUG if is_expected else logging.WARNING,
                        "reading topic %s from Redis at %s failed (%s); retrying in %.2f s",
                        reader.topic,
                        self._where,
                        _describe(exc),
                        delay,
                        exc_info=not is_expected,
                    )
                    await trio.sleep(delay)

    async def _read_until_failure(self, reader: _TopicReader) -> None:
        if not reader.ready.is_set():
            with trio.fail_after(self._timeout):
                newest = await self._clients.commands.xrevrange(reader.key, count=1)
            reader.position = entry_frame(newest[0])[0] if newest else ZERO_ID
            reader.recent.append(reader.position)
            reader.ready.set()
        elif reader.retry_delay:
            await self._check_position(reader)
        key = reader.key.encode()
        while True:
            # The deadline outlasts BLOCK: it fires only if Redis went silent.
            with trio.fail_after(_BLOCK_MS / 1000 + self._timeout):
                reply = await self._clients.readers.xread(
                    {reader.key: format_stream_id(reader.position)},
                    count=_READ_COUNT,
                    block=_BLOCK_MS,
                )
            if reader.retry_delay:
                reader.retry_delay = 0.0
                self._reconnects += 1
                logger.debug(
                    "reading topic %s again after id %s",
                    reader.topic,
                    format_stream_id(reader.position),
                )
            self._mark_connected()
            if reply:
                self._deliver(reader, reply.get(key, ()))

    async def _check_position(self, reader: _TopicReader) -> None:
        """After a failure: read on from what Redis has, if it lost what was delivered.

        A failover to a replica that had not received the newest entries, or a restart
        that lost them, leaves the stream behind this reader's position. Its next ids
        may then be below the position (the new master's clock, an id given by the
        publisher), and an ``XREAD`` after the position would skip them silently.
        """
        info = await self._read_stream_info(reader.key)
        if info is not None and info.last_generated >= reader.position:
            return
        # Everything in the stream is now below the position: entries this reader
        # delivered (the oldest of them), then any published since the loss. Read on
        # after the newest delivered one, which `recent` recognises.
        with trio.fail_after(self._timeout):
            entries = await self._clients.commands.xrevrange(reader.key, count=_RECENT_IDS * 4)
        recent = set(reader.recent)
        resume = ZERO_ID
        for entry in entries:
            stream_id = entry_frame(entry)[0]
            if stream_id in recent or stream_id < reader.recent[0]:
                resume = stream_id
                break
            # Published since: resume before it, unless an older one is ours.
            resume = previous_id(entry) or ZERO_ID
        logger.warning(
            "topic %s: Redis lost the entries up to id %s that this process delivered (a "
            "failover or a restart); reading on after %s",
            reader.topic,
            format_stream_id(reader.position),
            format_stream_id(resume),
        )
        reader.position = resume

    def _deliver(self, reader: _TopicReader, entries: tuple[StreamEntry, ...]) -> None:
        # No checkpoint from here to the end: the position and the fan-out move together.
        deliver = self._fanout.deliver
        topic = reader.topic
        for entry in entries:
            previous = previous_id(entry)
            if previous is not None and previous > reader.position:
                # Trimmed before this reader read it (see the module docs).
                logger.warning(
                    "topic %s: entries after %s were trimmed before this process read them",
                    topic,
                    format_stream_id(reader.position),
                )
                deliver(
                    topic, reset_event(format_stream_id(reader.position), resume_id=None).encode()
                )
            stream_id, frame = entry_frame(entry)
            if frame is not None:
                deliver(topic, frame)
            reader.position = stream_id
            reader.recent.append(stream_id)
        advanced, reader.advanced = reader.advanced, trio.Event()
        advanced.set()

    # Health

    def _mark_connected(self) -> None:
        self._is_connected = True
        if self._outage_since is not None:
            logger.info(
                "Redis at %s answers again: recovered after %.1f s",
                self._where,
                trio.current_time() - self._outage_since,
            )
            self._outage_since = None

    def _lost(self, exc: BaseException) -> None:
        self._is_connected = False
        self._last_error = _describe(exc)
        self._clients.failed()
        # Once per outage and every _OUTAGE_REMINDER s, whatever the number of
        # topics and retries: every reader and publish that fails comes here.
        now = trio.current_time()
        if self._outage_since is None:
            self._outage_since = self._outage_logged_at = now
            logger.warning(
                "lost Redis at %s (%s); open streams wait, publishes fail; retrying",
                self._where,
                self._last_error,
            )
        elif now - self._outage_logged_at >= _OUTAGE_REMINDER:
            self._outage_logged_at = now
            logger.warning(
                "Redis at %s still unreachable after %.0f s (%s); retrying",
                self._where,
                now - self._outage_since,
                self._last_error,
            )

    def _refused(self, what: str, exc: BaseException) -> BrokerUnavailableError:
        # Redis answered: the link is up, whatever it said.
        self._mark_connected()
        self._last_error = _describe(exc)
        return BrokerUnavailableError(f"Redis at {self._where} {what}: {_describe(exc)}")

    def _unavailable(self, what: str, exc: BaseException) -> BrokerUnavailableError:
        self._lost(exc)
        return BrokerUnavailableError(f"Redis at {self._where} {what}: {_describe(exc)}")

    async def ping(self) -> None:
        """Check that Redis answers a ``PING`` within the timeout.

        Raises:
            BrokerClosedError: The broker is closed.
            BrokerUnavailableError: Redis did not answer.
        """
        await trio.lowlevel.checkpoint()
        if self._is_closed:
            raise BrokerClosedError("the broker is closed")
        try:
            with trio.fail_after(self._timeout):
                await self._clients.commands.ping()
        except _FAILURES as exc:
            raise self._unavailable("did not answer PING", exc) from exc
        self._mark_connected()

    def statistics(self) -> BrokerStatistics:
        """Return a snapshot of the counters, with the state of the link to Redis."""
        fanout = self._fanout
        return BrokerStatistics(
            subscribers=fanout.subscriber_count,
            subscribers_per_topic=fanout.per_topic(),
            topics=len(self._readers.keys() | fanout.topics()),
            published=self._published,
            delivered=fanout.delivered,
            dropped=fanout.dropped,
            backplane=BackplaneStatistics(
                kind="redis",
                is_connected=self._is_connected,
                readers=len(self._readers),
                reconnects=self._reconnects,
                last_error=self._last_error,
            ),
        )

    async def aclose(self) -> None:
        """End every subscription (reason ``SHUTDOWN``), refuse new work, and take this
        process out of presence (with the leave events that follow). Idempotent.

        The subscriptions end at once, before the first checkpoint. Leaving presence
        takes a script per topic, bounded by ``command_timeout``; if Redis does not
        answer, the other processes see this one's streams go after ``presence_ttl``.
        Readers stop as their subscribers leave; :func:`open_redis_broker` cancels
        any that are left when its block exits.
        """
        if not self._is_closed:
            self._is_closed = True
            self._fanout.close_all(CloseReason.SHUTDOWN)
        if self._is_withdrawn:
            await trio.lowlevel.checkpoint()
            return
        self._is_withdrawn = True
        with trio.move_on_after(self._timeout):
            try:
                await self._presence.withdraw()
            except Exception as exc:  # noqa: BLE001 (a stop goes on; the ttl clears it)
                logger.warning(
                    "presence: could not withdraw from Redis at %s: %s", self._where, exc
                )
