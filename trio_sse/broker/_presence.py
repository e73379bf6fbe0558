"""Presence: who has a stream open on a topic, kept by the broker that serves the streams.

A subscription made with a ``subject`` (the ``sub`` of the stream's token) makes that
subject present on its topic while it lasts; one made without counts as a stream
only. :class:`PresenceBook` is this process's share, pure bookkeeping with no I/O: a
broker that spans processes (Redis) publishes each process's book and merges them.

With presence events on, a topic's own stream carries ``event: join`` when a subject
becomes present and ``event: leave`` when its last stream closes, one pair however
many streams (tabs, workers) the subject has open at once.
"""

from __future__ import annotations

import collections
import enum
import json
from dataclasses import dataclass
from typing import Final

from trio_sse.protocol import ServerSentEvent

__all__ = [
    "DEFAULT_PRESENCE_LIMIT",
    "DEFAULT_PRESENCE_TTL",
    "MAX_PRESENCE_LIMIT",
    "MAX_SUBJECT_LENGTH",
    "Presence",
    "PresenceBook",
    "PresenceChange",
    "presence_event",
    "validate_limit",
    "validate_subject",
]

# A token's ``sub`` is an identifier, not a document: this keeps a presence listing
# of MAX_PRESENCE_LIMIT subjects under 256 KiB, and one stream's share of memory small.
MAX_SUBJECT_LENGTH: Final = 256
# How long a process's presence outlives its last refresh, in a broker that spans
# processes: the bound on how long a crashed process's streams still count. Each
# process refreshes every third of it.
DEFAULT_PRESENCE_TTL: Final = 15.0
# Subjects listed by default, and at most, in one presence answer; the count is exact.
DEFAULT_PRESENCE_LIMIT: Final = 100
MAX_PRESENCE_LIMIT: Final = 1000


class PresenceChange(enum.Enum):
    """What a presence event says happened; its value is the event type."""

    JOIN = "join"
    LEAVE = "leave"


@dataclass(frozen=True, slots=True)
class Presence:
    """Who is on a topic now.

    Attributes:
        topic: The topic.
        streams: Streams open on it (with a subject or without).
        subjects: Distinct subjects present, sorted, at most the limit asked for.
        subject_count: Distinct subjects present, all of them.
    """

    topic: str
    streams: int
    subjects: tuple[str, ...]
    subject_count: int

    def to_json(self) -> dict[str, object]:
        """The body of ``GET /presence/<topic>``."""
        return {
            "topic": self.topic,
            "streams": self.streams,
            "subs": list(self.subjects),
            "sub_count": self.subject_count,
            "truncated": len(self.subjects) < self.subject_count,
        }


def validate_subject(subject: str | None) -> str | None:
    """Return ``subject`` if a broker can record it; raise ``ValueError`` if not."""
    if subject is None:
        return None
    if not isinstance(subject, str) or not 0 < len(subject) <= MAX_SUBJECT_LENGTH:
        raise ValueError(
            f"a presence subject is a string of 1 to {MAX_SUBJECT_LENGTH} characters, "
            f"got {subject!r:.60}"
        )
    return subject


def validate_limit(limit: int) -> int:
    """Return ``limit`` if it is a listing size a broker answers; raise ``ValueError`` if not."""
    if not 0 <= limit <= MAX_PRESENCE_LIMIT:
        raise ValueError(f"limit must be 0 to {MAX_PRESENCE_LIMIT}, got {limit}")
    return limit


def presence_event(change: PresenceChange, subject: str) -> ServerSentEvent:
    """The event a topic carries when ``subject`` joins or leaves it."""
    return ServerSentEvent(
        json.dumps({"sub": subject}, ensure_ascii=False, separators=(",", ":")),
        event=change.value,
    )


class _Topic:
    __slots__ = ("streams", "subjects")

    def __init__(self) -> None:
        self.streams = 0
        self.subjects: collections.Counter[str] = collections.Counter()


class PresenceBook:
    """This process's open streams per topic and the subjects they belong to.

    Its size follows the open streams: a topic leaves the book with its last stream.
    """

    __slots__ = ("_topics",)

    def __init__(self) -> None:
        self._topics: dict[str, _Topic] = {}

    def enter(self, topic: str, subject: str | None) -> bool:
        """Count a stream opened on ``topic``; True if ``subject`` was not present here."""
        state = self._topics.get(topic)
        if state is None:
            state = self._topics[topic] = _Topic()
        state.streams += 1
        if subject is None:
            return False
        state.subjects[subject] += 1
        return state.subjects[subject] == 1

    def leave(self, topic: str, subject: str | None) -> bool:
        """Count a stream closed on ``topic``; True if it was ``subject``'s last one here."""
        state = self._topics[topic]
        state.streams -= 1
        left = False
        if subject is not None:
            state.subjects[subject] -= 1
            if state.subjects[subject] == 0:
                del state.subjects[subject]
                left = True
        if state.streams == 0:
            del self._topics[topic]
        return left

    def topics(self) -> list[str]:
        """The topics with a stream open here."""
        return list(self._topics)

    def streams(self, topic: str) -> int:
        """Streams open here on ``topic``."""
        state = self._topics.get(topic)
        return 0 if state is None else state.streams

    def subjects(self, topic: str) -> set[str]:
        """Subjects present here on ``topic``."""
        state = self._topics.get(topic)
        return set() if state is None else set(state.subjects)

    def snapshot(self, topic: str, limit: int) -> Presence:
        """Presence on ``topic`` as this process alone sees it."""
        subjects = self.subjects(topic)
        return Presence(
            topic=topic,
            streams=self.streams(topic),
            subjects=tuple(sorted(subjects)[:limit]),
            subject_count=len(subjects),
        )
