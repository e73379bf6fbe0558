"""How an event is stored in a Redis stream entry, and read back.

An entry holds the event's fields (``data``, and ``event`` and ``retry`` when set);
its id is the stream id, which becomes the event's ``id``. Reading re-validates, so
an entry some other program wrote to our key is skipped instead of corrupting
streams.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from coredis.response.types import StreamEntry

from ..protocol import ServerSentEvent
from ._ids import StreamId, parse_stream_id

__all__ = ["entry_frame", "entry_from_reply", "fields_of", "previous_id"]

logger = logging.getLogger("trio_sse.redis")


def entry_frame(entry: StreamEntry) -> tuple[StreamId, bytes | None]:
    """The id and the encoded event of one stream entry (``None`` if it is not ours)."""
    raw_id = entry.identifier
    text_id = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
    stream_id = parse_stream_id(text_id)
    assert stream_id is not None, f"Redis returned a malformed stream id {text_id!r}"
    fields: Mapping[bytes, bytes] = entry.field_values  # type: ignore[assignment]
    try:
        retry = fields.get(b"retry")
        event = fields.get(b"event")
        frame = ServerSentEvent(
            fields[b"data"].decode(),
            event=event.decode() if event is not None else None,
            id=text_id,
            retry=int(retry) if retry is not None else None,
        ).encode()
    except (KeyError, ValueError):  # InvalidEventError and UnicodeDecodeError too
        # Someone else wrote to our key; skip the entry rather than stop the topic.
        logger.warning("skipped stream entry %s: not a trio_sse event", text_id)
        return stream_id, None
    return stream_id, frame


def previous_id(entry: StreamEntry) -> StreamId | None:
    """The id of the entry that came before ``entry`` when it was added (its ``p``), if known."""
    fields: Mapping[bytes, bytes] = entry.field_values  # type: ignore[assignment]
    previous = fields.get(b"p")
    return parse_stream_id(previous.decode("ascii", "replace")) if previous is not None else None


def entry_from_reply(reply: Sequence[Any]) -> StreamEntry:
    """A stream entry as a Lua script returns it: ``[id, [field, value, ...]]``."""
    identifier, flat = reply
    values = OrderedDict(zip(flat[::2], flat[1::2], strict=True))
    return StreamEntry(identifier=identifier, field_values=values)


def fields_of(event: ServerSentEvent) -> dict[str, str]:
    fields = {"data": event.data}
    if event.event is not None:
        fields["event"] = event.event
    if event.retry is not None:
        fields["retry"] = str(event.retry)
    return fields
