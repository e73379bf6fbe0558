"""The event source: one logical stream over many HTTP connections, read in the caller's task.

How it runs (no background task; everything happens inside ``__anext__``):

* ``__anext__`` returns a buffered event if it has one. Otherwise, with no open
  stream, it sleeps until the reconnect time set when the last one ended, then sends
  the GET; with an open stream, it reads one chunk (bounded by ``idle_timeout``),
  feeds it to a fresh :class:`~trio_sse.protocol.Decoder`, and buffers the events.
* A connection that ends, breaks or idles out is closed at once and the next
  attempt is scheduled by :class:`ReconnectPolicy`; ``on_error`` hears of it.
* ``aclose()`` (or leaving the ``async with``) closes the response and, if the
  source made it, the ``httpx.AsyncClient``.
"""

from __future__ import annotations

import enum
import ipaddress
import json
import math
import os
import re
import socket
import urllib.parse
from collections import deque
from collections.abc import AsyncGenerator, Callable, Mapping
from types import TracebackType
from typing import Final, Self

import httpx
import trio

from ..errors import (
    BadResponseError,
    ConnectionLostError,
    ProtocolError,
    RetriesExhaustedError,
    SSEError,
)
from ..protocol import DEFAULT_MAX_EVENT_SIZE, Decoder, MessageEvent
from ._reconnect import ReconnectPolicy

__all__ = ["DEFAULT_RETRY", "EventSource", "ReadyState", "open_event_source"]

# "Each EventSource object [has] a reconnection time, in milliseconds. This must
# initially be an implementation-defined value, probably in the region of a few
# seconds." 3000 ms is what Chromium uses and what servers expect.
DEFAULT_RETRY: Final = 3000
_EVENT_STREAM: Final = "text/event-stream"
# Characters an HTTP field value may not hold (RFC 9110, 5.5: only HTAB, SP, VCHAR
# and obs-text). An SSE id may hold them, but no request can carry them.
_NOT_IN_FIELD_VALUE: Final = re.compile("[\x00-\x08\x0a-\x1f\x7f]")
# The "forbidden domain code points" of the WHATWG URL standard.
_FORBIDDEN_IN_HOST: Final = re.compile("[\x00-\x20#%/:<>?@\\[\\]\\\\^|\x7f]")
# Closing a response is a socket close and a pool update; if that takes longer than
# this under a cancelled scope, drop it rather than hang the caller's cancellation.
_CLOSE_TIMEOUT: Final = 1.0
# A refusal's reason is a line of JSON or text; more than this is a page of HTML or
# an attack, not worth reading, and the message keeps only its first characters.
_MAX_REFUSAL_BODY: Final = 4096
_MAX_REASON: Final = 200
# How deep to look through an exception's causes for the OSError behind it.
_MAX_CAUSES: Final = 8


class ReadyState(enum.Enum):
    """The state of an event source, as ``EventSource.readyState`` in browsers."""

    CONNECTING = 0
    """Waiting to (re)connect, or waiting for the response headers."""
    OPEN = 1
    """A 200 ``text/event-stream`` response is being read."""
    CLOSED = 2
    """Stopped for good (closed, a 204, a fatal error, or retries exhausted)."""


class _Stream:
    """One response being read, with its own decoder, seeded with the source's last
    event ID (see :meth:`EventSource.__anext__` for why)."""

    __slots__ = ("chunks", "decoder", "response")

    def __init__(self, response: httpx.Response, *, last_event_id: str, max_event_size: int):
        self.response = response
        # aiter_bytes, not aiter_raw: it undoes Content-Encoding (gzip) if a proxy added it.
        self.chunks = response.aiter_bytes()
        self.decoder = Decoder(last_event_id=last_event_id, max_event_size=max_event_size)

    async def aclose(self) -> None:
        chunks = self.chunks
        if isinstance(chunks, AsyncGenerator):
            await chunks.aclose()
        await self.response.aclose()


def _is_event_stream(content_type: str | None) -> bool:
    # "if res's Content-Type is not `text/event-stream`, then fail the connection"
    # compares the MIME type's essence: parameters (charset) are allowed, and MIME
    # types are ASCII case-insensitive.
    if content_type is None:
        return False
    return content_type.split(";", 1)[0].strip().lower() == _EVENT_STREAM


def _os_error_in(exc: BaseException) -> OSError | None:
    """The OSError behind ``exc`` (its causes, the first of an exception group), if any."""
    found: BaseException | None = exc
    for _ in range(_MAX_CAUSES):
        if found is None:
            return None
        if isinstance(found, OSError) and found.errno is not None:
            return found
        if isinstance(found, BaseExceptionGroup):
            found = found.exceptions[0]
        else:
            found = found.__cause__ or found.__context__
    return None


def _describe_error(exc: BaseException) -> str:
    """``exc``, a network error, as a phrase for people: "connection refused".

    httpx's own text is often a summary ("all attempts to connect to ... failed") or
    empty; the operating system's words for the error behind it say what happened.
    """
    cause = _os_error_in(exc)
    if isinstance(cause, socket.gaierror):
        return f"cannot resolve the host name ({cause.strerror})"
    if cause is not None and cause.errno is not None and cause.errno > 0:
        text = os.strerror(cause.errno)
    elif isinstance(exc, httpx.TimeoutException):
        text = "timed out"
    else:
        # "[Errno 104] Connection reset by peer": the number means nothing to a reader.
        text = re.sub(r"^\[Errno -?\d+\]\s*", "", str(exc))
    if not text:
        # "ReadError" -> "read error"
        text = re.sub(r"(?<!^)(?=[A-Z])", " ", type(exc).__name__)
    return text[:1].lower() + text[1:]


def _printable(text: str) -> str:
    """``text`` on one line, without what a terminal would act on (escapes, controls)."""
    line = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return line if len(line) <= _MAX_REASON else line[: _MAX_REASON - 3] + "..."


async def _small_body(response: httpx.Response) -> bytes | None:
    """The body, if it has at most ``_MAX_REFUSAL_BODY`` bytes and arrives within
    ``_CLOSE_TIMEOUT`` s; else ``None``. The caller closes the response."""
    body = bytearray()
    chunks = response.aiter_bytes()
    try:
        with trio.move_on_after(_CLOSE_TIMEOUT):
            async for chunk in chunks:
                body += chunk
                if len(body) > _MAX_REFUSAL_BODY:
                    break
            else:
                return bytes(body)
    except httpx.RequestError:
        pass
    finally:
        if isinstance(chunks, AsyncGenerator):
            with trio.move_on_after(_CLOSE_TIMEOUT, shield=True):
                await chunks.aclose()
    return None


async def _refusal_reason(response: httpx.Response) -> str | None:
    """The reason a server gave for a refusal: its JSON ``error``, or a short text body."""
    media_type = (response.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
    is_json = media_type == "application/json" or media_type.endswith("+json")
    body = await _small_body(response) if is_json or media_type == "text/plain" else None
    if body is None:
        return None
    text: object = body.decode("utf-8", errors="replace")
    if is_json:
        try:
            text = json.loads(body).get("error")
        except (ValueError, AttributeError):  # not JSON, or not an object
            text = None
    return (_printable(text) or None) if isinstance(text, str) else None


def _check_url(url: str | httpx.URL) -> httpx.URL:
    """Parse ``url``, refusing what a browser's URL parser refuses in an http(s) URL.

    httpx would percent-encode a bad host (``http://a b/``) or keep an impossible
    port, and every attempt would then fail as a network error, retried forever;
    an EventSource with such a URL throws at once, and so does this.
    """
    text = str(url)
    try:
        parsed = httpx.URL(text)
        split = urllib.parse.urlsplit(text)
        split.port  # noqa: B018 - raises ValueError out of 0-65535
    except (httpx.InvalidURL, ValueError) as exc:
        raise ValueError(f"invalid url {text!r}: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise ValueError(f"url must be http:// or https://, got {text!r}")
    host = split.netloc.rpartition("@")[2]
    if host.startswith("["):
        literal, bracket, port = host[1:].partition("]")
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            bracket = ""
        if not bracket or (port and not port.startswith(":")):
            raise ValueError(f"invalid url {text!r}: bad IPv6 address {host!r}")
    else:
        name = host.rpartition(":")[0] if ":" in host else host
        if not name or _FORBIDDEN_IN_HOST.search(name):
            raise ValueError(f"invalid url {text!r}: bad host {name!r}")
    return parsed


def _check_last_event_id(value: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"last_event_id must be a str, not {value!r}")
    if _NOT_IN_FIELD_VALUE.search(value):
        # CR and LF would split the request; no header can carry the other controls.
        raise ValueError(
            f"last_event_id may not contain control characters other than tab: {value!r}"
        )
    return value


class EventSource:
    """A reconnecting Server-Sent Events client; make one with :func:`open_event_source`.

    Iterate it with ``async for`` to receive :class:`~trio_sse.protocol.MessageEvent`
    objects; the arguments are those of :func:`open_event_source`.

    Attributes:
        url: The URL every connection and reconnection requests (redirects are
            followed on each, but never remembered).
    """

    def __init__(
        self,
        url: str | httpx.URL,
        *,
        headers: Mapping[str, str] | None = None,
        last_event_id: str | None = None,
        idle_timeout: float | None = None,
        max_retries: int | None = None,
        http_client: httpx.AsyncClient | None = None,
        on_open: Callable[[], object] | None = None,
        on_error: Callable[[SSEError], object] | None = None,
        policy: ReconnectPolicy | None = None,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
    ) -> None:
        self.url: Final = _check_url(url)
        if idle_timeout is not None and not (idle_timeout > 0):
            raise ValueError(f"idle_timeout must be > 0 seconds or None, got {idle_timeout!r}")
        if max_retries is not None and max_retries < 0:
            raise ValueError(f"max_retries must be >= 0 or None, got {max_retries!r}")
        if max_event_size < 1:
            raise ValueError(f"max_event_size must be >= 1, got {max_event_size!r}")
        # "Accept: text/event-stream" and "no-cache" are what the spec's fetch sends;
        # the caller's headers (auth) go on top and may replace them.
        request_headers = httpx.Headers({"Accept": _EVENT_STREAM, "Cache-Control": "no-cache"})
        request_headers.update(headers or {})
        if "last-event-id" in request_headers:
            raise ValueError("pass Last-Event-ID as last_event_id=, not in headers")
        self._headers: Final = list(request_headers.raw)
        self._last_event_id = _check_last_event_id(last_event_id or "")
        self._idle_timeout = math.inf if idle_timeout is None else idle_timeout
        self._max_retries = max_retries
        self._client = http_client
        self._owns_client = http_client is None
        self._on_open = on_open
        self._on_error = on_error
        self._policy = policy if policy is not None else ReconnectPolicy()
        self._max_event_size = max_event_size
        self._ready_state = ReadyState.CONNECTING
        self._retry = DEFAULT_RETRY
        self._stream: _Stream | None = None
        self._events: deque[MessageEvent] = deque()
        self._reconnect_at = -math.inf  # the first attempt does not wait
        self._failures = 0  # attempts in a row that failed before opening
        self._retries = 0  # reconnect attempts since the last stream opened
        self._is_entered = False

    @property
    def ready_state(self) -> ReadyState:
        """Whether the source is connecting, open, or closed for good."""
        return self._ready_state

    @property
    def last_event_id(self) -> str:
        """The last event ID string, sent as ``Last-Event-ID`` on reconnect when not empty."""
        return self._last_event_id

    @property
    def retry(self) -> int:
        """The reconnection time in milliseconds (the server's last ``retry``, else 3000)."""
        return self._retry

    async def __aenter__(self) -> Self:
        if self._is_entered:
            raise RuntimeError("an EventSource can be entered only once")
        self._is_entered = True
        if self._client is None:
            self._client = httpx.AsyncClient()
        await trio.lowlevel.checkpoint()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection (and the httpx client, if the source made it). Idempotent.

        Cancellation: closes even if cancelled (shielded, for at most 1 s).
        """
        self._ready_state = ReadyState.CLOSED
        self._events.clear()
        stream, self._stream = self._stream, None
        client = self._client if self._owns_client else None
        self._client = None if self._owns_client else self._client
        with trio.move_on_after(_CLOSE_TIMEOUT, shield=True):
            if stream is not None:
                await stream.aclose()
            if client is not None:
                await client.aclose()
        await trio.lowlevel.checkpoint()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> MessageEvent:
        """Return the next event, connecting and reconnecting as needed.

        Returns:
            The next event. Its ``last_event_id`` persists across reconnections, as
            in browsers: each stream's decoder starts from the source's last event ID.

        Raises:
            StopAsyncIteration: The server answered 204 No Content, or the source
                was closed.
            BadResponseError: A status other than 200 and 204, or a Content-Type
                other than ``text/event-stream``. For a status, the message ends with
                the server's reason when it gave one: the ``error`` of a JSON body, or
                a ``text/plain`` body (at most 4 KiB read, 200 characters shown).
            RetriesExhaustedError: ``max_retries`` reconnect attempts in a row failed.
            ProtocolError: The stream broke the decoder's limits (e.g.
                :class:`~trio_sse.EventTooLargeError`).
            RuntimeError: Used outside ``async with``.

        Cancellation: no event that was parsed is lost. Cancelling a read drops the
        connection, since bytes in flight may be lost with it; the next call
        reconnects (after the reconnection time) and resumes from ``Last-Event-ID``.
        """
        if not self._is_entered:
            raise RuntimeError("use 'async with open_event_source(...)' before iterating")
        while not self._events:
            if self._ready_state is ReadyState.CLOSED:
                await trio.lowlevel.checkpoint()
                raise StopAsyncIteration
            if self._stream is None:
                await self._connect()
            else:
                await self._receive(self._stream)
        await trio.lowlevel.checkpoint()
        return self._events.popleft()

    async def _connect(self) -> None:
        await trio.sleep_until(self._reconnect_at)
        client = self._client
        assert client is not None
        self._ready_state = ReadyState.CONNECTING
        headers = list(self._headers)
        if self._last_event_id:
            # "If the EventSource object's last event ID string is not the empty
            # string, set `Last-Event-ID`/last event ID string, encoded as UTF-8".
            headers.append((b"Last-Event-ID", self._last_event_id_field()))
        # No read timeout: an event stream may rightly be silent for hours, and
        # idle_timeout is the caller's choice of how long is too long.
        timeout = httpx.Timeout(
            connect=client.timeout.connect,
            read=None,
            write=client.timeout.write,
            pool=client.timeout.pool,
        )
        # Every attempt requests the original URL: "reestablish the connection"
        # fetches the EventSource's request again, whatever a redirect said.
        request = client.build_request("GET", self.url, headers=headers, timeout=timeout)
        response: httpx.Response | None = None
        try:
            with trio.move_on_after(self._idle_timeout):
                response = await client.send(request, stream=True, follow_redirects=True)
        except (httpx.TooManyRedirects, httpx.UnsupportedProtocol) as exc:
            raise self._fail(
                BadResponseError(f"GET {self.url} failed: {_describe_error(exc)}")
            ) from exc
        except httpx.RequestError as exc:
            await self._lose(
                f"could not connect to {self.url}: {_describe_error(exc)}", exc, failed=True
            )
            return
        if response is None:
            await self._lose(
                f"no response headers from {self.url} within idle_timeout", None, failed=True
            )
            return
        await self._open(response)

    def _last_event_id_field(self) -> bytes:
        # A server reads a field value without its leading and trailing spaces and
        # tabs (RFC 9110, 5.5), and h11 refuses to send them: strip them here, which
        # changes nothing the server sees.
        value = self._last_event_id.strip(" \t")
        if _NOT_IN_FIELD_VALUE.search(value):
            # Retrying cannot help: every reconnection would carry the same id.
            raise self._fail(
                ProtocolError(
                    f"{self.url} set the event id {self._last_event_id!r}, which has control "
                    "characters that no Last-Event-ID header can carry; cannot resume"
                )
            )
        return value.encode()

    async def _open(self, response: httpx.Response) -> None:
        status = response.status_code
        content_type = response.headers.get("Content-Type")
        if status == 200 and _is_event_stream(content_type):
            self._stream = _Stream(
                response, last_event_id=self._last_event_id, max_event_size=self._max_event_size
            )
            # "announce the connection": readyState OPEN, then the open event.
            self._ready_state = ReadyState.OPEN
            self._failures = 0
            self._retries = 0
            if self._on_open is not None:
                self._on_open()
            return
        reason: str | None = None
        try:
            if status not in (200, 204):
                # Not what a browser does (it shows nothing), but a person at a
                # terminal wants the server's words: "subscribe needs a bearer token".
                reason = await _refusal_reason(response)
        finally:
            with trio.move_on_after(_CLOSE_TIMEOUT, shield=True):
                await response.aclose()
        if status == 204:
            # HTTP 204 "must cause the user agent to fail the connection": the
            # server's documented way to tell clients to stop reconnecting.
            self._ready_state = ReadyState.CLOSED
            return
        if status != 200:
            # Servers may omit the reason phrase (Hypercorn does); use the standard one.
            phrase = response.reason_phrase or httpx.codes.get_reason_phrase(status)
            message = f"GET {self.url} answered {status} {phrase}".rstrip()
            if reason is not None:
                message += f": {reason}"
        else:
            message = f"GET {self.url} answered Content-Type {content_type!r}, not {_EVENT_STREAM}"
        raise self._fail(BadResponseError(message, status_code=status, content_type=content_type))

    async def _receive(self, stream: _Stream) -> None:
        chunk: bytes | None = None
        error: httpx.RequestError | None = None
        try:
            with trio.move_on_after(self._idle_timeout) as idle:
                try:
                    chunk = await anext(stream.chunks)
                except StopAsyncIteration:
                    pass
                except httpx.RequestError as exc:  # network errors, broken chunking, gzip
                    error = exc
        except BaseException:
            # Cancelled mid-read: bytes may be lost in flight, so this connection
            # cannot go on; reconnect (resuming by Last-Event-ID) on the next call.
            await self._drop(stream)
            self._schedule(failures=0)
            raise
        if idle.cancelled_caught:
            await self._lose(f"no bytes from {self.url} for {self._idle_timeout} s", None)
        elif error is not None:
            await self._lose(f"connection to {self.url} broke: {_describe_error(error)}", error)
        elif chunk is None:
            try:
                stream.decoder.close()
            except ProtocolError as exc:
                await self._drop(stream)
                raise self._fail(exc) from None
            # The server closed the stream cleanly: "When a user agent is to
            # reestablish the connection, [...] fire an event named error".
            await self._lose(f"{self.url} ended the stream", None)
        else:
            try:
                events = stream.decoder.feed(chunk)
            except ProtocolError as exc:
                await self._drop(stream)
                raise self._fail(exc) from None
            self._absorb(stream.decoder, events)

    def _absorb(self, decoder: Decoder, events: list[MessageEvent]) -> None:
        if decoder.retry is not None:
            self._retry = decoder.retry
        self._last_event_id = decoder.last_event_id
        self._events.extend(events)

    async def _drop(self, stream: _Stream) -> None:
        self._stream = None
        with trio.move_on_after(_CLOSE_TIMEOUT, shield=True):
            await stream.aclose()

    def _schedule(self, *, failures: int) -> None:
        self._ready_state = ReadyState.CONNECTING
        delay = self._policy.delay(self._retry / 1000, failures)
        self._reconnect_at = trio.current_time() + delay

    async def _lose(
        self, message: str, cause: BaseException | None, *, failed: bool = False
    ) -> None:
        """Handle a failed attempt (``failed``) or the end of an open stream."""
        if self._stream is not None:
            await self._drop(self._stream)
        lost = ConnectionLostError(message)
        lost.__cause__ = cause
        if failed:
            self._failures += 1
        if self._max_retries is not None and self._retries >= self._max_retries:
            exhausted = RetriesExhaustedError(
                f"gave up on {self.url} after {self._retries} reconnect attempts in a row "
                f"without an open stream: {message}"
            )
            raise self._fail(exhausted) from lost
        self._retries += 1
        # "Set the readyState attribute to CONNECTING. Fire an event named error."
        self._schedule(failures=self._failures)
        if self._on_error is not None:
            self._on_error(lost)

    def _fail(self, error: SSEError) -> SSEError:
        """Close for good ("fail the connection"); return ``error`` for raising."""
        # "set the readyState attribute to CLOSED and fire an event named error".
        self._ready_state = ReadyState.CLOSED
        if self._on_error is not None:
            self._on_error(error)
        return error


def open_event_source(
    url: str | httpx.URL,
    *,
    headers: Mapping[str, str] | None = None,
    last_event_id: str | None = None,
    idle_timeout: float | None = None,
    max_retries: int | None = None,
    http_client: httpx.AsyncClient | None = None,
    on_open: Callable[[], object] | None = None,
    on_error: Callable[[SSEError], object] | None = None,
    policy: ReconnectPolicy | None = None,
    max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
) -> EventSource:
    """Open an event source on ``url``: ``async with open_event_source(url) as source:``.

    Nothing is sent until the first ``async for`` step; each step returns the next
    :class:`~trio_sse.protocol.MessageEvent`, reconnecting as a browser's
    ``EventSource`` does (WHATWG HTML 9.2) with back-off after failed attempts.

    Args:
        url: An ``http://`` or ``https://`` URL. Redirects are followed, but every
            reconnection starts again from this URL.
        headers: Extra request headers, e.g. ``Authorization``. They may replace the
            default ``Accept`` and ``Cache-Control``, not ``Last-Event-ID``.
        last_event_id: Resume after this id: sent as ``Last-Event-ID`` on the first
            request too.
        idle_timeout: Seconds without a single byte (heartbeat comments count)
            after which a connection, or the wait for its headers, is deemed dead
            and replaced. ``None`` (the default, as in browsers) waits forever; a few
            times the server's heartbeat interval is a good value.
        max_retries: Give up after this many reconnect attempts in a row without an
            open stream (0: never reconnect). ``None`` retries forever.
        http_client: The ``httpx.AsyncClient`` to send with (proxies, TLS, auth,
            transports); the source does not close it. Its read timeout is not used
            (see ``idle_timeout``). By default the source makes and closes its own.
        on_open: Called each time a stream opens (200 with ``text/event-stream``).
        on_error: Called with a :class:`~trio_sse.ConnectionLostError` each time a
            connection fails or ends and a reconnect is scheduled, and with the
            exception about to be raised when the source stops on an error. Use it
            and :attr:`EventSource.ready_state` to show the connection state.
        policy: The reconnect delay rules; :class:`ReconnectPolicy` by default.
        max_event_size: Passed to each stream's :class:`~trio_sse.protocol.Decoder`.

    Returns:
        An :class:`EventSource`, to be used as an async context manager.

    Raises:
        ValueError: A bad ``url``, a negative ``max_retries``, a non-positive
            ``idle_timeout``, a ``last_event_id`` with control characters, or
            ``Last-Event-ID`` in ``headers``.

    The callbacks run in the iterating task, synchronously: keep them short. An
    exception from one propagates out of the ``async for``.
    """
    return EventSource(
        url,
        headers=headers,
        last_event_id=last_event_id,
        idle_timeout=idle_timeout,
        max_retries=max_retries,
        http_client=http_client,
        on_open=on_open,
        on_error=on_error,
        policy=policy,
        max_event_size=max_event_size,
    )
