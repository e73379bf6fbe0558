"""Streams of several topics (``GET /events?topic=a&topic=b``): their URL, each event's topic.

On such a stream the server names each event's topic in its type: ``<topic>`` for an
event published without a type, ``<topic>:<type>`` otherwise (a topic name never
holds ``:``). Its id is the stream's compound position, which the client sends back
as ``Last-Event-ID`` like any other id: nothing to do on this side.

Pure code: the client's layer, which knows nothing of the server's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final
from urllib.parse import urlencode, urlsplit, urlunsplit

__all__ = ["split_event_type", "topics_url"]

_DEFAULT_TYPE: Final = "message"


def topics_url(base_url: str, topics: Sequence[str], *, path: str = "/events") -> str:
    """The URL of one stream of ``topics`` on the server at ``base_url``.

    ``base_url`` is the server's root (``http://host:8000``) or any URL on it; its
    path and query are replaced.

    Raises:
        ValueError: No topics, or a topic given twice (the server refuses both).
    """
    if not topics:
        raise ValueError("give at least one topic")
    if len(set(topics)) != len(topics):
        raise ValueError(f"a topic is given twice in {list(topics)!r:.200}")
    parts = urlsplit(base_url)
    query = urlencode([("topic", topic) for topic in topics])
    return urlunsplit((parts.scheme, parts.netloc, path, query, ""))


def split_event_type(event_type: str) -> tuple[str, str]:
    """``(topic, type)`` of an event of a several-topic stream, from its ``type``.

    ``"news"`` gives ``("news", "message")``; ``"news:reset"`` gives ``("news", "reset")``.
    """
    topic, colon, kind = event_type.partition(":")
    return topic, kind if colon else _DEFAULT_TYPE
