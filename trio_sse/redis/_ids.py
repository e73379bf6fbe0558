"""Redis stream ids: ``"<milliseconds>-<sequence>"``, ordered as pairs of integers.

As strings they sort wrongly (``"9-0" > "10-0"``), so every comparison goes through
:func:`parse_stream_id`.
"""

from __future__ import annotations

import re
from typing import Final

from ..broker import MAX_EVENT_ID_LENGTH
from ..errors import InvalidEventError

__all__ = [
    "MAX_PUBLISHED_ID",
    "ZERO_ID",
    "StreamId",
    "format_stream_id",
    "parse_stream_id",
    "publishable_id",
]

StreamId = tuple[int, int]

# Both parts are unsigned 64-bit integers in Redis: at most 20 digits each. ASCII
# digits only: ``\d`` would take other scripts' digits, which Redis refuses.
_STREAM_ID: Final = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
# A publisher may also give the milliseconds alone, as Redis allows: "<ms>" is "<ms>-0".
_PUBLISHED_ID: Final = re.compile(r"([0-9]{1,20})(?:-([0-9]{1,20}))?")
_MAX: Final = 2**64 - 1

ZERO_ID: Final[StreamId] = (0, 0)
"""The position before the first entry of any stream."""

MAX_PUBLISHED_ID: Final[StreamId] = (_MAX - 1, _MAX)
"""The largest id a publisher may choose. Every id after it has the largest
milliseconds part, so at least 2**64 more events fit: a topic never runs out of ids
(after the largest possible one, Redis refuses every publish)."""


def parse_stream_id(text: str) -> StreamId | None:
    """Return ``text`` as a comparable ``(ms, seq)`` pair, or ``None`` if it is not one."""
    match = _STREAM_ID.fullmatch(text)
    if match is None:
        return None
    ms, seq = int(match[1]), int(match[2])
    if ms > _MAX or seq > _MAX:
        return None
    return ms, seq


def format_stream_id(stream_id: StreamId) -> str:
    return f"{stream_id[0]}-{stream_id[1]}"


def publishable_id(text: str) -> str:
    """The id Redis is given for an event published with id ``text``, in canonical form.

    Checked here, before Redis sees it, so that a bad id is the publisher's error
    (400) and never a failure of the backplane; whether it is above the topic's
    newest id only Redis knows.

    Raises:
        InvalidEventError: ``text`` is not ``<ms>-<seq>`` or ``<ms>`` in ASCII digits,
            is longer than ``MAX_EVENT_ID_LENGTH``, is ``0-0``, or is above
            :data:`MAX_PUBLISHED_ID`.
    """
    if len(text) > MAX_EVENT_ID_LENGTH:
        raise InvalidEventError(
            f"an event id is at most {MAX_EVENT_ID_LENGTH} characters, got {len(text)}"
        )
    match = _PUBLISHED_ID.fullmatch(text)
    stream_id = (int(match[1]), int(match[2] or 0)) if match is not None else None
    if stream_id is None or not ZERO_ID < stream_id <= MAX_PUBLISHED_ID:
        raise InvalidEventError(
            "with the Redis broker an event id must be a Redis stream id, <ms>-<seq> or "
            "<ms> in ASCII digits, above 0-0 and at most "
            f"{format_stream_id(MAX_PUBLISHED_ID)} (so that later ids fit), "
            f"like 1732400000000-0, got {text!r:.80}"
        )
    return format_stream_id(stream_id)
