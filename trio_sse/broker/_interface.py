"""The contract every broker meets, and the pieces all brokers share.

A broker maps topics to subscribers. ``MemoryBroker`` keeps everything in one
process; a Redis-backed broker satisfies the same :class:`Broker` protocol so that
the web layer never knows which one it talks to.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Final, Protocol

from ..errors import InvalidEventError, InvalidTopicError
from ..protocol import ServerSentEvent
from ._presence import DEFAULT_PRESENCE_LIMIT, Presence
from ._subscription import Subscription

__all__ = [
    "DEFAULT_REPLICA_TIMEOUT",
    "MAX_BACKLOG",
    "MAX_EVENT_ID_LENGTH",
    "MAX_IDEMPOTENCY_KEY_LENGTH",
    "MAX_REPLICA_TIMEOUT",
    "RESET_EVENT_TYPE",
    "BackplaneStatistics",
    "Broker",
    "BrokerStatistics",
    "reset_event",
    "validate_backlog",
    "validate_idempotency_key",
    "validate_topic",
    "validate_topics",
]

# Unreserved URL characters only, so a topic is safe in a path, a Redis key and a
# log line without escaping; 128 is ample for names like "orders.eu-west.42".
_TOPIC: Final = re.compile(r"[A-Za-z0-9._~-]{1,128}")

# An id travels back in every reconnect's Last-Event-ID header: a long one makes each
# reconnect of its readers costly, and past the server's header limit (16 KiB) fail
# with 431, which a browser's EventSource does not retry.
MAX_EVENT_ID_LENGTH: Final = 256

# Newest events a subscription may ask for first (a page's "recent messages"): each
# is held in memory for the stream until written.
MAX_BACKLOG: Final = 1000

# Long enough for a UUID or a hash in any usual encoding, with room for a prefix.
MAX_IDEMPOTENCY_KEY_LENGTH: Final = 128

# Visible ASCII only: the key travels in a header and may be logged and stored in Redis.
_IDEMPOTENCY_KEY: Final = re.compile(rf"[\x21-\x7e]{{1,{MAX_IDEMPOTENCY_KEY_LENGTH}}}")

RESET_EVENT_TYPE: Final = "reset"

# A backplane with replicas (Redis): how long a publish waits, by default and at most,
# for the replicas it was asked to wait for (the CLI checks it without the backplane).
DEFAULT_REPLICA_TIMEOUT: Final = 1.0
MAX_REPLICA_TIMEOUT: Final = 60.0
"""The type of the event a subscriber gets when its ``Last-Event-ID`` is not in history.

Its data is JSON: ``{"last_event_id": <the id the client sent>, "reason": <text>}``.
It tells the client that it may have missed events and should reload whatever state
it derives from the stream. The retained events that the broker knows came after the
client's id follow it, if any (the memory broker's, after a restart or an expiry),
then live events.
"""


def validate_topic(topic: str) -> str:
    """Return ``topic`` unchanged if it is a valid topic name.

    Raises:
        InvalidTopicError: ``topic`` is not 1 to 128 characters of ``[A-Za-z0-9._~-]``.
    """
    if not isinstance(topic, str) or _TOPIC.fullmatch(topic) is None:
        raise InvalidTopicError(
            f"topic must be 1 to 128 characters from [A-Za-z0-9._~-], got {topic!r:.140}"
        )
    return topic


def validate_topics(topics: Sequence[str]) -> list[str]:
    """Return ``topics`` as a list if it names one or more valid topics, each once.

    Every name is checked before any is used: a batch publish refuses the whole batch
    for one bad name.

    Raises:
        InvalidTopicError: ``topics`` is empty, names a topic twice, or holds a bad
            name (the message gives its position, ``topics[i]``).
    """
    if isinstance(topics, str):
        raise InvalidTopicError(f"topics must be a list of topic names, got {topics!r:.140}")
    names = list(topics)
    if not names:
        raise InvalidTopicError("topics must list at least one topic")
    seen: set[str] = set()
    for index, topic in enumerate(names):
        try:
            validate_topic(topic)
        except InvalidTopicError as exc:
            raise InvalidTopicError(f"topics[{index}]: {exc}") from None
        if topic in seen:
            # Rejected rather than merged: each topic gets the event once, and the
            # answer has one id per topic.
            raise InvalidTopicError(f"topic {topic!r} is listed twice in topics")
        seen.add(topic)
    return names


def validate_idempotency_key(key: str) -> str:
    """Return ``key`` unchanged if it may be used as an idempotency key.

    Raises:
        InvalidEventError: ``key`` is not 1 to 128 visible ASCII characters.
    """
    if not isinstance(key, str) or _IDEMPOTENCY_KEY.fullmatch(key) is None:
        raise InvalidEventError(
            f"an idempotency key must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} visible ASCII "
            f"characters, got {key!r:.160}"
        )
    return key


def validate_backlog(backlog: int) -> int:
    """Return ``backlog`` if it is a count :meth:`Broker.subscribe` takes; raise ``ValueError``."""
    if not 0 <= backlog <= MAX_BACKLOG:
        raise ValueError(f"backlog must be 0 to {MAX_BACKLOG} events, got {backlog}")
    return backlog


def reset_event(last_event_id: str, *, resume_id: str | None) -> ServerSentEvent:
    """Build the :data:`RESET_EVENT_TYPE` notice for an id that history cannot place.

    Args:
        last_event_id: The id the client asked to resume after.
        resume_id: Sent as the notice's own id: where a reconnect after the notice
            resumes without a second notice. The newest id in history when no
            replayed event follows the notice; when some do, an id just before them,
            so that a reconnect after the notice alone gets them again.
    """
    body = {"last_event_id": last_event_id, "reason": "last event id is not in history"}
    return ServerSentEvent(
        json.dumps(body, separators=(",", ":")), event=RESET_EVENT_TYPE, id=resume_id
    )


@dataclass(frozen=True, slots=True)
class BackplaneStatistics:
    """The state of a broker's link to a shared store, as last observed.

    Attributes:
        kind: The store, e.g. ``"redis"``.
        is_connected: Whether the last command (publish, read or ping) got an answer.
        readers: Reader tasks running in this process (one per topic with local
            subscribers).
        reconnects: Times a reader got its link back after losing it.
        last_error: The last failure seen, or ``None`` if there was none.
    """

    kind: str
    is_connected: bool
    readers: int
    reconnects: int
    last_error: str | None


@dataclass(frozen=True, slots=True)
class BrokerStatistics:
    """An immutable snapshot of a broker's counters, from :meth:`Broker.statistics`.

    Attributes:
        subscribers: Open subscriptions, in all topics.
        subscribers_per_topic: Open subscriptions by topic (topics with none are left out).
        topics: Topics that have subscribers or retained history.
        published: Events accepted by ``publish()``.
        delivered: Frames queued to subscribers (one per event per subscriber).
        dropped: Subscriptions closed because their queue was full.
        retained_bytes: Bytes of replay history held in this process, or ``None`` for
            a broker whose history lives elsewhere.
        backplane: The link to a shared store, or ``None`` for a broker without one.
    """

    subscribers: int
    subscribers_per_topic: Mapping[str, int]
    topics: int
    published: int
    delivered: int
    dropped: int
    backplane: BackplaneStatistics | None = None
    retained_bytes: int | None = None


class Broker(Protocol):
    """What the web layer needs from a broker."""

    async def publish(
        self, topic: str, event: ServerSentEvent, *, idempotency_key: str | None = None
    ) -> str:
        """Publish ``event`` to every subscriber of ``topic`` and to its history.

        Assigns an id when ``event.id`` is ``None``. Never waits for a subscriber:
        one whose queue is full is disconnected instead.

        With ``idempotency_key``: if an earlier publish to ``topic`` used the same key
        and its event is still in history, nothing is published and that event's id is
        returned. A publisher that got no answer (an error, a timeout, a broken
        connection) retries with the same key and cannot publish twice.

        Returns:
            The event's id. Ids a broker assigns increase with every publish to a
            topic; compare them with the broker's own order, not as strings (a
            Redis stream id is ``"<ms>-<seq>"``).

        Raises:
            InvalidTopicError: Bad topic name. Nothing is published.
            InvalidEventError: ``event.id`` is one this broker cannot store (ids
                must increase per topic and be at most ``MAX_EVENT_ID_LENGTH``
                characters), or ``idempotency_key`` is malformed (see
                :func:`validate_idempotency_key`). Nothing is published.
            BrokerClosedError: The broker is closed. Nothing is published.
            BrokerUnavailableError: The backing store is down. Nothing is published.
        """
        ...

    async def publish_many(
        self,
        topics: Sequence[str],
        event: ServerSentEvent,
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, str]:
        """Publish ``event`` once to each of ``topics``, all or nothing.

        Every topic is checked (its name, and whatever the broker can check before
        writing: an ``event.id`` it cannot take, a topic it has no room for) before
        any is published; a refusal publishes nothing. The event is encoded once for
        all topics. How atomic the writes themselves are depends on the broker (a
        Redis Cluster writes slot by slot: see its docs).

        With ``idempotency_key``, each topic behaves as :meth:`publish` does with it:
        a topic whose history still holds an event published with that key gets
        nothing new and answers that event's id. So a retried batch answers the same
        ids and publishes nothing twice.

        Returns:
            Each topic's event id, in the order of ``topics``. Ids may differ from
            topic to topic (each follows its topic's order).

        Raises:
            InvalidTopicError: ``topics`` is empty, lists a topic twice or holds a bad
                name. Nothing is published.
            InvalidEventError: As :meth:`publish`, for any of the topics. Nothing is
                published.
            BrokerClosedError: The broker is closed. Nothing is published.
            BrokerUnavailableError: As :meth:`publish`. Nothing is published, except
                where the broker's docs say otherwise (the message says so).
        """
        ...

    def subscribe(
        self,
        topic: str,
        *,
        last_event_id: str | None = None,
        subject: str | None = None,
        backlog: int = 0,
    ) -> AbstractAsyncContextManager[Subscription]:
        """Subscribe to ``topic`` for as long as the context is open.

        With ``last_event_id``, every retained event after it is replayed first,
        then live events follow with no gap and no duplicate. If history cannot
        place the id, a :data:`RESET_EVENT_TYPE` event comes first, then whatever
        retained events the broker knows came after the id. Without it, the newest
        ``backlog`` retained events come first (oldest first; fewer if history holds
        fewer), then live events, again with no gap and no duplicate.

        The subscription counts as a stream on the topic in :meth:`presence`, and
        ``subject`` (a token's ``sub``: see
        :func:`~trio_sse.broker.validate_subject`), if given, is present there while
        it lasts. A broker with presence events on publishes ``join`` when a subject
        is first present and ``leave`` when its last subscription ends.

        Leaving the context by any path (return, error, cancellation) unsubscribes.

        Raises:
            ValueError: ``subject`` or ``backlog`` is out of range.
            InvalidTopicError: Bad topic name.
            BrokerClosedError: The broker is closed.
            BrokerUnavailableError: The backing store is needed to place
                ``last_event_id`` (or to start reading the topic) and does not answer.
        """
        ...

    async def presence(self, topic: str, *, limit: int = DEFAULT_PRESENCE_LIMIT) -> Presence:
        """Who is on ``topic`` now: its open streams and the distinct subjects present.

        A broker that spans processes counts them all; one whose process died drops
        out within the bound its docs state.

        Args:
            topic: The topic.
            limit: Subjects listed, at most (0 to :data:`MAX_PRESENCE_LIMIT`); the
                count covers them all.

        Raises:
            InvalidTopicError: Bad topic name.
            ValueError: ``limit`` out of range.
            BrokerClosedError: The broker is closed.
            BrokerUnavailableError: The backing store does not answer.
        """
        ...

    def statistics(self) -> BrokerStatistics:
        """Return a snapshot of the broker's counters."""
        ...

    async def ping(self) -> None:
        """Check that the broker can take a publish now (a readiness probe).

        Raises:
            BrokerClosedError: The broker is closed.
            BrokerUnavailableError: The backing store does not answer.
        """
        ...

    @property
    def is_closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        ...

    async def aclose(self) -> None:
        """Close the broker: end every subscription cleanly and refuse new work.

        Each open stream gets the frames already queued for it, then ends with
        :attr:`CloseReason.SHUTDOWN`. Idempotent.
        """
        ...
