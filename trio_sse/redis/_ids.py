"""Redis stream ids: ``"<milliseconds>-<sequence>"``, ordered as pairs of integers.

As strings they sort wrongly (``"9-0" > "10-0"``), so every comparison goes through
:func:`parse_stream_id`.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["ZERO_ID", "StreamId", "format_stream_id", "parse_stream_id"]

StreamId = tuple[int, int]

# Both parts are unsigned 64-bit integers in Redis: at most 20 digits each.
_STREAM_ID: Final = re.compile(r"(\d{1,20})-(\d{1,20})")
_MAX: Final = 2**64 - 1

ZERO_ID: Final[StreamId] = (0, 0)
"""The position before the first entry of any stream."""


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
