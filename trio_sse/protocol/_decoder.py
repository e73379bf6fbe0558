"""The incremental decoder: bytes of an event stream in, dispatched events out.

Implements WHATWG HTML, "Server-sent events", 9.2.5 (parsing an event stream) and
9.2.6 (interpreting an event stream) exactly, whatever the chunking of the input.
The rules, in the order the bytes meet them:

* The stream is UTF-8, decoded incrementally: a character split across chunks
  decodes as one, and each maximal invalid subsequence becomes one U+FFFD, as the
  Encoding standard's "UTF-8 decode" does. One leading U+FEFF (a BOM) is dropped; a
  second one is text (the start of the first field name).
* Lines end at CRLF, LF or CR, and at nothing else: U+2028, U+0085, VT and FF are
  text. A CR at the end of a chunk ends its line at once; if the next chunk opens
  with LF, that LF is the rest of the CRLF, not an empty line.
* An empty line dispatches the event. A line that starts with ``:`` is a comment.
  Any other line is a field: the name runs up to the first ``:``, the value follows
  it minus one leading space (U+0020), if present; a line without ``:`` is a field
  name with an empty value.
* Field names are case-sensitive; only four mean anything. ``event`` sets the event
  type; ``data`` appends its value and an LF to the data; ``id`` sets the last event
  ID buffer unless the value contains NUL (an empty value resets it); ``retry`` sets
  the reconnection time if the value is one or more ASCII digits. Others are ignored.
* Dispatch: the last event ID buffer becomes the last event ID (even if nothing is
  dispatched; the buffer itself is kept for later events). If the data is empty the
  event is dropped; otherwise one trailing LF is removed and a :class:`MessageEvent`
  is emitted, of type ``message`` unless an ``event`` field said otherwise. Either
  way the data and the event type are reset.
* End of stream (:meth:`Decoder.close`): an event without its final empty line is
  discarded, including a last line without a line terminator.
* Size limit: the characters (code points, not bytes) of the current line plus the
  data the event has accumulated so far (each ``data`` value plus its LF) may not
  exceed ``max_event_size``; beyond it :class:`~trio_sse.EventTooLargeError`.

Whose fault: :class:`~trio_sse.ProtocolError` (and its subclass
``EventTooLargeError``) means the peer sent a stream we refuse; ``RuntimeError``
means we misused the decoder (``feed`` after ``close`` or after an error). After a
protocol error the decoder is unusable, like h11 after one: a stream cannot be
resynchronised once a line was cut.

Pure code: no I/O, no clock, no async.
"""

from __future__ import annotations

import codecs
import enum
import re
from dataclasses import dataclass
from typing import Final, NoReturn

from ..errors import EventTooLargeError

__all__ = ["DEFAULT_MAX_EVENT_SIZE", "Decoder", "MessageEvent"]

# 1 Mi characters: far above real events (JSON payloads are typically < 64 KiB), yet
# one hostile stream can pin at most a few MiB (a str of 1 Mi code points takes 1-4
# MiB). Clients holding thousands of connections (the load tester) should lower it.
DEFAULT_MAX_EVENT_SIZE: Final = 1024 * 1024

# "Lines must be separated by either a U+000D CARRIAGE RETURN U+000A LINE FEED
# (CRLF) character pair, a single U+000A LINE FEED (LF) character, or a single
# U+000D CARRIAGE RETURN (CR) character." CRLF is tried first so it counts once.
_LINE_BREAK: Final = re.compile(r"\r\n|\r|\n")
# "The UTF-8 decode algorithm strips one leading UTF-8 Byte Order Mark (BOM), if any."
_BOM: Final = "\ufeff"
# Pieces of an unterminated line are joined once this many pile up: keeps the
# per-piece overhead of a peer trickling one byte per chunk bounded, while each
# join copies the line at most once per this many chunks.
_MAX_LINE_PIECES: Final = 1024
# Python converts decimal strings to int in quadratic time and refuses more than
# sys.get_int_max_str_digits() digits (640 at the lowest setting). No reconnection
# time needs 10**640 ms, so longer values (leading zeros aside) are ignored.
_MAX_RETRY_DIGITS: Final = 640


@dataclass(frozen=True, slots=True)
class MessageEvent:
    """One dispatched event, as a browser's ``EventSource`` would deliver it.

    Attributes:
        type: The event type: the last ``event`` field's value, or ``"message"``.
        data: The ``data`` field values joined with LF ("" for a bare ``data`` line).
        last_event_id: The last event ID at dispatch: the most recent ``id`` seen on
            the stream, not necessarily one set in this event ("" if none).
    """

    type: str
    data: str
    last_event_id: str


class _State(enum.Enum):
    OPEN = enum.auto()
    CLOSED = enum.auto()
    FAILED = enum.auto()


class Decoder:
    """A spec-exact, incremental event stream parser for one stream.

    Feed it the response body in chunks of any size; each call returns the events
    that the chunk completed. Call :meth:`close` at the end of the stream.

    Args:
        max_event_size: The most characters the current line plus the event's data
            so far may hold (see the module docs); guards memory against a peer that
            never ends a line or an event.

    Raises:
        ValueError: ``max_event_size`` is not a positive int.
    """

    __slots__ = (
        "_after_cr",
        "_at_start",
        "_data",
        "_data_size",
        "_event_type",
        "_id_buffer",
        "_last_event_id",
        "_line_pieces",
        "_line_size",
        "_max_event_size",
        "_pending_error",
        "_retry",
        "_state",
        "_utf8",
    )

    def __init__(
        self, *, last_event_id: str = "", max_event_size: int = DEFAULT_MAX_EVENT_SIZE
    ) -> None:
        if not isinstance(last_event_id, str) or any(c in last_event_id for c in "\r\n\x00"):
            # No stream could have set such an id: id lines end at CR or LF, and an
            # id containing NUL is ignored.
            raise ValueError(f"last_event_id may not contain CR, LF or NUL: {last_event_id!r}")
        if (
            isinstance(max_event_size, bool)
            or not isinstance(max_event_size, int)
            or max_event_size < 1
        ):
            raise ValueError(f"max_event_size must be a positive int, not {max_event_size!r}")
        self._max_event_size = max_event_size
        # "Streams must be decoded using the UTF-8 decode algorithm." Python's
        # "replace" emits one U+FFFD per maximal invalid subpart, as that does.
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._state = _State.OPEN
        self._pending_error: EventTooLargeError | None = None
        self._at_start = True  # no character decoded yet: a BOM may still come
        self._after_cr = False  # the last character decoded was a CR ending a line
        # The unterminated line, in pieces: joining on every chunk would be quadratic.
        self._line_pieces: list[str] = []
        self._line_size = 0
        # "When a stream is parsed, a data buffer, an event type buffer, and a last
        # event ID buffer must be associated with it. They must be initialized to
        # the empty string." The data buffer is kept as its lines, without the LFs.
        self._data: list[str] = []
        self._data_size = 0  # len() of the spec's data buffer, LFs included
        self._event_type = ""
        # A reconnecting client seeds both with the id it sent as Last-Event-ID, as
        # browsers do. Read literally, the spec starts each stream's buffer empty, so
        # any blank line before the stream's first id (after a comment, say) would
        # reset the client's id to "" and lose its place for the next reconnect.
        self._id_buffer = last_event_id
        self._last_event_id = last_event_id
        self._retry: int | None = None

    @property
    def last_event_id(self) -> str:
        """The spec's "last event ID string", which is what to send as ``Last-Event-ID``.

        It takes the last ``id`` field's value at each empty line, even one that
        dispatches nothing (an ``id``-only block), and is "" until then. An ``id``
        in an event that never ended does not count.
        """
        return self._last_event_id

    @property
    def retry(self) -> int | None:
        """The latest valid reconnection time in milliseconds, or None if none yet.

        Unlike ``id``, a ``retry`` line takes effect as soon as the line ends, even
        if its event is never dispatched.
        """
        return self._retry

    def feed(self, data: bytes) -> list[MessageEvent]:
        """Decode the next chunk of the stream.

        Args:
            data: The next bytes of the response body, split anywhere. ``b""`` is
                allowed and does nothing (use :meth:`close` for the end of stream).

        Returns:
            The events that this chunk completed, in stream order (often none).

        Raises:
            EventTooLargeError: A line plus its event's data went over
                ``max_event_size``. If the same chunk completed events before the
                offending line, they are returned first and the error is raised by
                the next call to :meth:`feed` or :meth:`close`. The decoder is then
                unusable.
            RuntimeError: The decoder was closed, or already raised an error.
        """
        if self._state is not _State.OPEN:
            self._refuse()
        text = self._utf8.decode(data)
        if not text:
            return []
        if self._at_start:
            self._at_start = False
            if text[0] == _BOM:
                text = text[1:]
        elif self._after_cr:
            self._after_cr = False
            if text[0] == "\n":
                # The LF half of a CRLF whose CR ended the previous chunk: that
                # line has already ended, so this is no empty line.
                text = text[1:]
        if not text:
            return []
        self._after_cr = text[-1] == "\r"

        # Most streams use LF only; str.split is several times faster than the regex.
        lines = _LINE_BREAK.split(text) if "\r" in text else text.split("\n")
        tail = lines.pop()  # the unterminated rest: "" if text ends with a break
        events: list[MessageEvent] = []
        if lines:
            if self._line_pieces:
                self._line_pieces.append(lines[0])
                lines[0] = "".join(self._line_pieces)
                self._line_pieces.clear()
                self._line_size = 0
            error = self._interpret(lines, events)
            if error is not None:
                return self._fail(error, events)
        if tail:
            return self._keep_unterminated(tail, events)
        return events

    def close(self) -> None:
        """End the stream: discard the unterminated event, if any.

        "Once the end of the file is reached, any pending data must be discarded.
        (If the file ends in the middle of an event, before the final empty line,
        the incomplete event is not dispatched.)" ``last_event_id`` and ``retry``
        keep their values. Closing twice, or after an error, does nothing.

        Raises:
            EventTooLargeError: The last :meth:`feed` detected an oversized event
                after returning the events before it (see :meth:`feed`).
        """
        self._raise_pending()
        if self._state is _State.OPEN:
            self._state = _State.CLOSED
            self._discard_buffers()

    def _keep_unterminated(self, tail: str, events: list[MessageEvent]) -> list[MessageEvent]:
        """Hold the start of a line until its end arrives; return ``events``."""
        pieces = self._line_pieces
        pieces.append(tail)
        self._line_size += len(tail)
        size = self._line_size + self._data_size
        if size > self._max_event_size:
            return self._fail(self._too_large(size), events)
        if len(pieces) >= _MAX_LINE_PIECES:
            pieces[:] = ["".join(pieces)]
        return events

    def _refuse(self) -> NoReturn:
        # Only called when not OPEN; a pending error comes with the FAILED state.
        self._raise_pending()
        if self._state is _State.CLOSED:
            raise RuntimeError("Decoder.feed() called after close()")
        raise RuntimeError(
            "Decoder.feed() called after a ProtocolError; "
            "the stream cannot be resynchronised, reconnect instead"
        )

    def _raise_pending(self) -> None:
        error = self._pending_error
        if error is not None:
            self._pending_error = None
            raise error

    def _too_large(self, size: int) -> EventTooLargeError:
        return EventTooLargeError(
            f"event exceeds max_event_size={self._max_event_size} characters "
            f"(current line plus event data so far: {size} characters)"
        )

    def _fail(self, error: EventTooLargeError, events: list[MessageEvent]) -> list[MessageEvent]:
        self._state = _State.FAILED
        self._discard_buffers()
        if not events:
            raise error
        # Events completed before the offending line are valid and already counted
        # in last_event_id; losing them would make a reconnect skip them.
        self._pending_error = error
        return events

    def _discard_buffers(self) -> None:
        self._line_pieces.clear()
        self._line_size = 0
        self._data.clear()
        self._data_size = 0
        self._event_type = ""

    def _interpret(self, lines: list[str], events: list[MessageEvent]) -> EventTooLargeError | None:
        """Apply 9.2.6 to complete lines; return an error instead of raising it."""
        # The buffers live in locals for the loop (the hot path of the decoder) and
        # are written back at the end; on error _fail() discards them anyway.
        limit = self._max_event_size
        data = self._data
        data_size = self._data_size
        event_type = self._event_type
        id_buffer = self._id_buffer
        for line in lines:
            size = len(line) + data_size
            if size > limit:
                return self._too_large(size)
            if not line:
                # "If the line is empty (a blank line): Dispatch the event."
                # "Set the last event ID string of the event source to the value of
                # the last event ID buffer."
                self._last_event_id = id_buffer
                # "If the data buffer is an empty string, set the data buffer and
                # the event type buffer to the empty string and return."
                if data:
                    # "If the data buffer's last character is a U+000A LINE FEED
                    # (LF) character, then remove the last character": joining the
                    # lines with LF does exactly that.
                    events.append(MessageEvent(event_type or "message", "\n".join(data), id_buffer))
                    data.clear()
                    data_size = 0
                event_type = ""
                continue
            colon = line.find(":")
            if colon == 0:
                # "If the line starts with a U+003A COLON character (:): Ignore the line."
                continue
            if colon < 0:
                # "Process the field using the steps described below, using the
                # whole line as the field name, and the empty string as the field value."
                name = line
                value = ""
            else:
                # "Collect the characters on the line before the first U+003A COLON
                # character (:), and let field name be that string. Collect the
                # characters on the line after the first U+003A COLON character (:),
                # and let value be that string. If value starts with a U+0020 SPACE
                # character, remove it from value."
                name = line[:colon]
                value = (
                    line[colon + 2 :] if line[colon + 1 : colon + 2] == " " else line[colon + 1 :]
                )
            if name == "data":
                # "Append the field value to the data buffer, then append a single
                # U+000A LINE FEED (LF) character to the data buffer."
                data.append(value)
                data_size += len(value) + 1
            elif name == "event":
                # "Set the event type buffer to the field value."
                event_type = value
            elif name == "id" and "\x00" not in value:
                # "If the field value does not contain U+0000 NULL, then set the last
                # event ID buffer to the field value. Otherwise, ignore the field."
                id_buffer = value
            elif name == "retry":
                retry = _parse_retry(value)
                if retry is not None:
                    self._retry = retry
            # "Otherwise: The field is ignored."
        self._data_size = data_size
        self._event_type = event_type
        self._id_buffer = id_buffer
        return None


def _parse_retry(value: str) -> int | None:
    # "If the field value consists of only ASCII digits, then interpret the field
    # value as an integer in base ten, and set the event stream's reconnection time
    # to that integer. Otherwise, ignore the field." str.isdigit alone would accept
    # other scripts' digits and superscripts; "" is not a number.
    if not (value.isascii() and value.isdigit()):
        return None
    significant = value.lstrip("0")
    if len(significant) > _MAX_RETRY_DIGITS:
        return None
    return int(significant) if significant else 0
