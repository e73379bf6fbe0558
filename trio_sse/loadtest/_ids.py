"""Judging a server's own events (``--no-publish``): sequence numbers from ids, times from data.

With nothing published by the load tester, loss and order are judged from each
event's ``id``, which must count up by one per event on the stream's topic:

* a decimal integer: ``42``;
* or an integer at the end, after a fixed prefix: ``news-42``, ``evt:42``, ``a/b/42``
  (the digits after the last character that is not a digit).

An event with no id or another form (a UUID, a timestamp) counts as foreign: it
proves nothing about loss. Ids that skip numbers look like lost events.

Latency needs the time the server sent the event, in its data: give
``--timestamp-path`` (a JSON path into the data, e.g. ``ts`` or ``meta.sent``); the
value there is either

* a number since the Unix epoch, its unit told by its size: seconds (below 10^11,
  fractions allowed), milliseconds (below 10^14), microseconds (below 10^17), else
  nanoseconds;
* or an ISO 8601 string with a UTC offset: ``2026-11-30T16:53:42.123Z``,
  ``2026-11-30T17:53:42+01:00`` (without an offset, UTC is assumed).

Latency is then this machine's wall clock at arrival minus that time: on another
machine it is only as good as the two clocks' agreement.

Pure code.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Final

from ._sources import read_json_path

__all__ = ["parse_seq", "parse_timestamp"]

_TRAILING_DIGITS: Final = re.compile(r"(?:.*\D)?(\d{1,18})")


def parse_seq(event_id: str) -> int | None:
    """The sequence number in an event id (see the module docs), or ``None``."""
    match = _TRAILING_DIGITS.fullmatch(event_id)
    return int(match[1]) if match is not None else None


def parse_timestamp(data: str, path: str) -> float | None:
    """The send time (Unix seconds) at ``path`` in the JSON ``data``, or ``None``."""
    try:
        value = read_json_path(json.loads(data), path)
    except ValueError:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _epoch_seconds(value)
    if isinstance(value, str):
        return _iso_seconds(value)
    return None


def _epoch_seconds(value: float) -> float:
    # The unit is told by the size: 10^11 s is the year 5138, 10^11 ms is 1973.
    for limit, scale in ((1e11, 1.0), (1e14, 1e-3), (1e17, 1e-6)):
        if abs(value) < limit:
            return float(value) * scale
    return float(value) * 1e-9


def _iso_seconds(value: str) -> float | None:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
