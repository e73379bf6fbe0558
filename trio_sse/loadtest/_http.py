"""HTTP/1.1 for the load tester, on h11: requests out, response heads and bodies in.

Pure code, like the protocol layer: bytes in, parsed values out, no sockets. h11 does
the framing (RFC 9112 6.3: ``Transfer-Encoding: chunked``, what Hypercorn sends for a
stream; ``Content-Length``; or a body that runs to the end of the connection); this
module wraps one request-response cycle in :class:`Exchange`.

A peer that breaks the framing gets :class:`~trio_sse.ProtocolError` (its fault); a
URL we cannot use gets ``ValueError`` (the user's).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

import h11

from ..errors import ProtocolError

__all__ = [
    "MAX_HEAD_SIZE",
    "Exchange",
    "ResponseHead",
    "Target",
    "parse_url",
]

# h11's default for the same job; a real response head is a few hundred bytes, and
# 10,000 connections each buffering a hostile endless head must stay affordable.
MAX_HEAD_SIZE: Final = 16 * 1024


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


class Exchange:
    """One request and its response, framed by h11.

    Send :meth:`request`'s bytes, then :meth:`feed` what the socket returns (``b""``
    at its end) until :attr:`head` is set, and on for the body until :attr:`is_done`.
    """

    __slots__ = ("_conn", "head", "is_done")

    def __init__(self) -> None:
        self._conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_SIZE)
        self.head: ResponseHead | None = None
        self.is_done = False

    def request(
        self,
        method: str,
        target: Target,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes | None = None,
    ) -> bytes:
        """Encode the request (keep-alive, the default in 1.1)."""
        fields = [("Host", target.authority), *headers]
        if body is not None:
            fields.append(("Content-Length", str(len(body))))
        data = self._conn.send(h11.Request(method=method, target=target.path, headers=fields))
        if body:
            data += self._conn.send(h11.Data(data=body))
        data += self._conn.send(h11.EndOfMessage())
        return data

    def feed(self, data: bytes) -> bytes:
        """Take bytes from the server (``b""``: it closed); return the body bytes they complete.

        Bytes after the end of the response are ignored.

        Raises:
            ProtocolError: A malformed response, a head over :data:`MAX_HEAD_SIZE`, or
                the connection closed before the response's end.
        """
        if self.is_done:
            return b""
        try:
            self._conn.receive_data(data)
        except RuntimeError:  # data after the end of the connection
            return b""
        out = bytearray()
        while not self.is_done:
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise ProtocolError(str(exc)) from None
            if event is h11.NEED_DATA or event is h11.PAUSED:
                break
            if isinstance(event, h11.Response):
                self.head = ResponseHead(
                    event.status_code,
                    event.reason.decode("latin-1"),
                    _joined(event.headers),
                )
            elif isinstance(event, h11.Data):
                out += event.data
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                self.is_done = True
        return bytes(out)

    @property
    def is_reusable(self) -> bool:
        """Whether the connection may carry another request (keep-alive, response done)."""
        return self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE


def _joined(headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Lower-case names; repeated fields joined with ", " (RFC 9110 5.3)."""
    out: dict[str, str] = {}
    for name, value in headers:
        key, text = name.decode("latin-1"), value.decode("latin-1")
        out[key] = f"{out[key]}, {text}" if key in out else text
    return out
