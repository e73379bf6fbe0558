"""Just enough HTTP/1.1 for a load tester: requests out, response heads and bodies in.

Pure code, like the protocol layer: bytes in, parsed values out, no sockets. The
load tester speaks to any SSE server, so the response side accepts the three body
framings of RFC 9112 (6.3): ``Transfer-Encoding: chunked`` (what Hypercorn sends for
a stream), ``Content-Length``, and a body that runs to the end of the connection.

A peer that breaks the framing gets :class:`~trio_sse.ProtocolError` (its fault); a
URL we cannot use gets ``ValueError`` (the user's).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from .._errors import ProtocolError

__all__ = [
    "MAX_HEAD_SIZE",
    "BodyReader",
    "ChunkedBody",
    "LengthBody",
    "ResponseHead",
    "Target",
    "UntilCloseBody",
    "body_reader",
    "parse_head",
    "parse_url",
    "request_bytes",
]

# h11's default for the same job; a real response head is a few hundred bytes, and
# 10,000 connections each buffering a hostile endless head must stay affordable.
MAX_HEAD_SIZE: Final = 16 * 1024

# A chunk-size line is hex digits plus optional extensions; nobody needs more.
_MAX_CHUNK_LINE: Final = 1024

_STATUS_LINE: Final = re.compile(rb"HTTP/1\.[01] (\d{3})(?: (.*))?")
_CHUNK_SIZE: Final = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;.*)?")
_CONTENT_LENGTH: Final = re.compile(r"[0-9]{1,18}")


@dataclass(frozen=True, slots=True)
class Target:
    """Where a request goes, from an ``http://`` URL.

    Attributes:
        host: The host to connect to.
        port: The port (80 if the URL gives none).
        path: The request target: path and query, at least ``/``.
        authority: The ``Host`` header value.
    """

    host: str
    port: int
    path: str
    authority: str

    def with_path(self, path: str) -> Target:
        """The same server, another path."""
        return Target(self.host, self.port, path, self.authority)


def parse_url(url: str) -> Target:
    """Parse an ``http://host[:port]/path[?query]`` URL.

    Raises:
        ValueError: Not ``http://`` (TLS is not supported), no host, or a bad port.
    """
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"only http:// URLs are supported, got {url!r}")
    try:
        port = parts.port or 80
    except ValueError:
        raise ValueError(f"invalid port in {url!r}") from None
    if not parts.hostname:
        raise ValueError(f"no host in {url!r}")
    if any(c in url for c in "\r\n\x00 "):
        raise ValueError(f"URL may not contain spaces, CR, LF or NUL: {url!r}")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(parts.hostname, port, path, parts.netloc.rpartition("@")[2])


def request_bytes(
    method: str,
    target: Target,
    *,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes | None = None,
) -> bytes:
    """Encode one HTTP/1.1 request (keep-alive, the default in 1.1)."""
    lines = [f"{method} {target.path} HTTP/1.1", f"Host: {target.authority}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


@dataclass(frozen=True, slots=True)
class ResponseHead:
    """A parsed status line and header section.

    Attributes:
        status: The status code.
        reason: The reason phrase ("" if the server sent none, as Hypercorn does).
        headers: Lower-case names; repeated fields joined with ", " (RFC 9110 5.3).
    """

    status: int
    reason: str
    headers: dict[str, str]

    @property
    def content_type(self) -> str:
        """The media type alone, lower-case: ``text/event-stream`` for a stream."""
        return self.headers.get("content-type", "").partition(";")[0].strip().lower()


def parse_head(buffer: bytearray) -> ResponseHead | None:
    """Take a complete response head off the front of ``buffer``.

    Returns:
        The head, with its bytes (and the blank line) removed from ``buffer``; or
        ``None`` if the head is not complete yet (``buffer`` untouched).

    Raises:
        ProtocolError: A malformed head, or one over :data:`MAX_HEAD_SIZE`.
    """
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > MAX_HEAD_SIZE:
            raise ProtocolError(f"response head over {MAX_HEAD_SIZE} bytes")
        return None
    if end > MAX_HEAD_SIZE:
        raise ProtocolError(f"response head over {MAX_HEAD_SIZE} bytes")
    status_line, *lines = bytes(buffer[:end]).split(b"\r\n")
    del buffer[: end + 4]
    match = _STATUS_LINE.fullmatch(status_line)
    if match is None:
        raise ProtocolError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise ProtocolError(f"malformed header line: {line[:80]!r}")
        key = name.decode("latin-1").lower()
        text = value.strip(b" \t").decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    reason = (match[2] or b"").decode("latin-1")
    return ResponseHead(int(match[1]), reason, headers)


class ChunkedBody:
    """De-chunks a ``Transfer-Encoding: chunked`` body fed in pieces of any size."""

    __slots__ = ("_buffer", "_remaining", "_state", "is_done")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._remaining = 0  # data bytes left in the current chunk
        self._state = "size"  # size | data | data_crlf | trailer
        self.is_done = False

    def feed(self, data: bytes) -> bytes:
        """Return the body bytes that ``data`` completes; bytes after the end are ignored.

        Raises:
            ProtocolError: A malformed chunk size or chunk end.
        """
        buffer = self._buffer
        buffer += data
        out = bytearray()
        while not self.is_done:
            if self._state == "data":
                take = min(self._remaining, len(buffer))
                if take == 0:
                    break
                out += buffer[:take]
                del buffer[:take]
                self._remaining -= take
                if self._remaining:
                    break
                self._state = "data_crlf"
                continue
            if self._state == "data_crlf":
                if len(buffer) < 2:
                    break
                if buffer[:2] != b"\r\n":
                    raise ProtocolError(f"chunk not followed by CRLF: {bytes(buffer[:40])!r}")
                del buffer[:2]
                self._state = "size"
                continue
            line_end = buffer.find(b"\r\n")
            if line_end < 0:
                if len(buffer) > _MAX_CHUNK_LINE:
                    raise ProtocolError("chunk line too long")
                break
            line = bytes(buffer[:line_end])
            del buffer[: line_end + 2]
            if self._state == "size":
                match = _CHUNK_SIZE.fullmatch(line)
                if match is None:
                    raise ProtocolError(f"bad chunk size line: {line[:40]!r}")
                self._remaining = int(match[1], 16)
                self._state = "data" if self._remaining else "trailer"
            elif not line:  # the blank line that ends the (usually empty) trailer
                self.is_done = True
        return bytes(out)


class LengthBody:
    """A body of ``Content-Length`` bytes."""

    __slots__ = ("_remaining", "is_done")

    def __init__(self, length: int) -> None:
        self._remaining = length
        self.is_done = length == 0

    def feed(self, data: bytes) -> bytes:
        """Return the body bytes in ``data``; bytes after the end are ignored."""
        taken = data[: self._remaining]
        self._remaining -= len(taken)
        self.is_done = self._remaining == 0
        return taken


class UntilCloseBody:
    """A body that ends when the server closes the connection (no length, no chunks)."""

    __slots__ = ("is_done",)

    def __init__(self) -> None:
        self.is_done = False

    def feed(self, data: bytes) -> bytes:
        """Return ``data``: all of it is body."""
        return data


BodyReader = ChunkedBody | LengthBody | UntilCloseBody


def body_reader(head: ResponseHead) -> BodyReader:
    """The framing RFC 9112 6.3 gives this response's body.

    Raises:
        ProtocolError: A transfer coding other than chunked, or a bad Content-Length.
    """
    codings = [c.strip().lower() for c in head.headers.get("transfer-encoding", "").split(",")]
    if codings != [""]:
        if codings != ["chunked"]:
            raise ProtocolError(f"unsupported Transfer-Encoding: {', '.join(codings)}")
        return ChunkedBody()
    if "content-length" in head.headers:
        text = head.headers["content-length"]
        if _CONTENT_LENGTH.fullmatch(text) is None:
            raise ProtocolError(f"bad Content-Length: {text[:40]!r}")
        return LengthBody(int(text))
    if head.status in (204, 304) or 100 <= head.status < 200:
        return LengthBody(0)
    return UntilCloseBody()
