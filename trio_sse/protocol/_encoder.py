"""Events and their wire encoding (WHATWG HTML, "Server-sent events", section 9.2).

Rules this file enforces, so that no value can change the framing of a stream:

* ``event`` and ``id`` may not contain CR or LF: the spec ends a line at either, so
  a newline would start a new field of the attacker's choosing. ``id`` may not
  contain NUL either: "If the field value does not contain U+0000 NULL, then set
  the last event ID buffer to the field value" -- a browser would ignore it.
* ``retry`` is a non-negative ``int``: the spec only honours values that "consist
  of only ASCII digits".
* ``data`` may hold any text; it is split at CRLF, CR and LF (and only those) into
  one ``data:`` line each, which a decoder joins back with LF.
* Text must be encodable as UTF-8 (no lone surrogates).
* Only events end with a blank line; comments and a lone ``retry:`` do not. A blank
  line dispatches, and the spec's dispatch first copies the stream's "last event ID
  buffer" into the client's last event ID. That buffer starts empty on every new
  stream, so a blank line sent after a reconnect but before the first event would
  wipe the id a strictly conforming client needs for its next reconnect.

Invalid values raise :class:`~trio_sse.InvalidEventError` at construction. They are
never stripped or rewritten: silently "fixing" an id hides an injection attempt.

Pure code: no I/O, no clock, no async.
"""

from __future__ import annotations

import re
from dataclasses import KW_ONLY, dataclass, field
from typing import Final

from ..errors import InvalidEventError

__all__ = ["ServerSentEvent", "encode_comment", "encode_retry"]

# "Lines must be separated by either a U+000D CARRIAGE RETURN U+000A LINE FEED
# (CRLF) character pair, a single U+000A LINE FEED (LF) character, or a single
# U+000D CARRIAGE RETURN (CR) character."
_LINE_BREAK: Final = re.compile(r"\r\n|\r|\n")
_CR_OR_LF: Final = re.compile(r"[\r\n]")
_CR_LF_OR_NUL: Final = re.compile(r"[\r\n\x00]")
# Lone surrogates survive in Python str (e.g. from JSON "\ud800") but not in UTF-8.
_SURROGATE: Final = re.compile(r"[\ud800-\udfff]")


def _check_text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidEventError(f"{name} must be a str, not {type(value).__name__}")
    if not value.isascii() and _SURROGATE.search(value):
        raise InvalidEventError(f"{name} contains a lone surrogate and cannot be sent as UTF-8")
    return value


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One event, validated at construction and encoded at most once.

    Args:
        data: The payload. Any text; line breaks become separate ``data:`` lines.
        event: The event type. ``None`` means the client's default, ``message``.
        id: The event id, which the client echoes as ``Last-Event-ID`` on reconnect.
        retry: The reconnection delay, in milliseconds, that the client should use.

    Raises:
        InvalidEventError: A field would corrupt the framing (see the module docs).
            It is also a ``ValueError``.
    """

    data: str
    _: KW_ONLY
    event: str | None = None
    id: str | None = None
    retry: int | None = None
    # The cached wire form; object.__setattr__ fills it in, since the class is frozen.
    _wire: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_text("data", self.data)
        if self.event is not None and _CR_OR_LF.search(_check_text("event", self.event)):
            raise InvalidEventError(f"event must not contain CR or LF: {self.event!r}")
        if self.id is not None and _CR_LF_OR_NUL.search(_check_text("id", self.id)):
            raise InvalidEventError(f"id must not contain CR, LF or NUL: {self.id!r}")
        if self.retry is not None and (
            isinstance(self.retry, bool) or not isinstance(self.retry, int) or self.retry < 0
        ):
            raise InvalidEventError(f"retry must be a non-negative int, not {self.retry!r}")

    def encode(self) -> bytes:
        """Return the event's UTF-8 wire form, ending with the blank line that dispatches it.

        The result is computed once and cached, so every subscriber shares one
        ``bytes`` object.
        """
        wire = self._wire
        if wire is None:
            wire = self._encode()
            object.__setattr__(self, "_wire", wire)
        return wire

    def _encode(self) -> bytes:
        parts: list[str] = []
        if self.event is not None:
            parts.append(f"event: {self.event}\n")
        if self.id is not None:
            parts.append(f"id: {self.id}\n")
        if self.retry is not None:
            parts.append(f"retry: {self.retry}\n")
        data = self.data
        if "\n" in data or "\r" in data:
            parts.extend(f"data: {line}\n" for line in _LINE_BREAK.split(data))
        else:
            parts.append(f"data: {data}\n")
        parts.append("\n")
        return "".join(parts).encode()


def encode_comment(text: str = "") -> bytes:
    """Encode a comment, which every client ignores: the heartbeat of idle streams.

    Line breaks in ``text`` start new comment lines, so a comment can never become
    a field. No blank line follows (see the module docs): send comments between
    events, never inside one.
    """
    _check_text("comment", text)
    lines = _LINE_BREAK.split(text)
    return "".join(f": {line}\n" if line else ":\n" for line in lines).encode()


def encode_retry(milliseconds: int) -> bytes:
    """Encode a lone ``retry:`` field: the reconnection delay, without an event.

    The client applies it when the line is parsed; no blank line follows (see the
    module docs), so send it between events, never inside one.
    """
    if isinstance(milliseconds, bool) or not isinstance(milliseconds, int) or milliseconds < 0:
        raise InvalidEventError(f"retry must be a non-negative int, not {milliseconds!r}")
    return f"retry: {milliseconds}\n".encode()
