"""One SSE stream on a raw Trio socket, and the three ways to drop it.

A load tester holding 10,000 streams cannot afford a full HTTP client per stream:
each connection here is a socket, a small buffer, a body de-framer and a
:class:`~trio_sse.protocol.Decoder`. Dropping is done the ways real clients vanish:

* **FIN**: an orderly close, as a browser tab closing;
* **RST**: an abortive close (``SO_LINGER`` 0), as a crashed process or a NAT reset;
* **stall**: stop reading and keep the socket open, as a frozen client or a dead
  network path; the server sees nothing at all until its writes back up.
"""

from __future__ import annotations

import contextlib
import enum
import socket
import struct
from dataclasses import dataclass
from typing import Any, Final

import trio

from ..errors import ProtocolError
from ..protocol import Decoder, MessageEvent
from ._http import Exchange, ResponseHead, Target

__all__ = [
    "RECEIVE_SIZE",
    "Address",
    "DropMethod",
    "ErrorKind",
    "StreamConnection",
    "StreamFailureError",
    "read_head",
    "receive_some",
    "resolve",
    "send_all",
]

# One read takes whatever the kernel has queued up to this; a burst of events to a
# connection that fell behind is read in few calls, and the buffer is freed at once.
RECEIVE_SIZE: Final = 65536

# The load tester's events are small; a peer sending a runaway line must not let one
# connection of 10,000 grow to the decoder's 1 Mi-character default.
MAX_EVENT_SIZE: Final = 256 * 1024


class DropMethod(enum.Enum):
    """How a churned connection is dropped."""

    FIN = "fin"
    RST = "rst"
    STALL = "stall"


class ErrorKind(enum.Enum):
    """What went wrong, as the report counts it; the value is the report's key."""

    CONNECT = "connect"
    TIMEOUT = "timeout"
    STATUS = "status"
    CONTENT_TYPE = "content_type"
    PROTOCOL = "protocol"
    RESET = "reset"
    CLOSED = "closed"  # the server closed the connection
    ENDED = "ended"  # the server ended the response
    # Before the response head: an overflowing accept queue, told apart from streams
    # that break later.
    RESET_BEFORE_HEAD = "reset_before_head"
    CLOSED_BEFORE_HEAD = "closed_before_head"
    # A publish's failure, by the same causes.
    PUBLISH_CONNECT = "publish_connect"
    PUBLISH_TIMEOUT = "publish_timeout"
    PUBLISH_STATUS = "publish_status"
    PUBLISH_PROTOCOL = "publish_protocol"
    PUBLISH_RESET = "publish_reset"
    PUBLISH_CLOSED = "publish_closed"
    PUBLISH_ENDED = "publish_ended"
    PUBLISH_RESET_BEFORE_HEAD = "publish_reset_before_head"
    PUBLISH_CLOSED_BEFORE_HEAD = "publish_closed_before_head"

    @property
    def is_publish(self) -> bool:
        """Whether a publish failed (not a stream)."""
        return self.value.startswith("publish_")

    def before_head(self) -> ErrorKind:
        """The same failure, before the response head (``reset`` and ``closed`` only)."""
        return _BEFORE_HEAD.get(self, self)

    def of_publish(self) -> ErrorKind:
        """The same failure, of a publish."""
        return self if self.is_publish else ErrorKind("publish_" + self.value)


_BEFORE_HEAD: Final = {
    ErrorKind.RESET: ErrorKind.RESET_BEFORE_HEAD,
    ErrorKind.CLOSED: ErrorKind.CLOSED_BEFORE_HEAD,
}


class StreamFailureError(Exception):
    """Why a connection attempt or an open stream failed.

    Attributes:
        kind: What the report counts it as.
    """

    def __init__(self, kind: ErrorKind, message: str, *, is_before_response: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        # Nothing of a response came back: a request on a reused connection that the
        # server had closed while idle can be sent again on a new one.
        self.is_before_response = is_before_response


@dataclass(frozen=True, slots=True)
class Address:
    """A resolved server address."""

    family: socket.AddressFamily
    sockaddr: tuple[Any, ...]


async def resolve(target: Target) -> Address:
    """Look the host up once, so that 10,000 connects do not ask the resolver 10,000 times.

    Raises:
        OSError: The host cannot be resolved.
    """
    infos = await trio.socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    family, _, _, _, sockaddr = infos[0]
    return Address(family, sockaddr)


class StreamConnection:
    """An open SSE response: read events with :meth:`receive`, then drop it one way or another.

    Attributes:
        decoder: The stream's decoder; its ``last_event_id`` is what a resume sends.
        has_body: Whether any body bytes arrived yet (the server has subscribed us).
        is_ended: The server ended the response (the terminating chunk, or the end of a
            ``Content-Length`` body); :meth:`receive` raises :class:`StreamFailureError`
            (:attr:`ErrorKind.ENDED`) next.
    """

    __slots__ = ("_exchange", "_pending", "_sock", "decoder", "has_body", "is_ended")

    def __init__(
        self, sock: trio.socket.SocketType, exchange: Exchange, pending: bytes, decoder: Decoder
    ) -> None:
        self._sock = sock
        self._exchange = exchange
        self._pending = pending
        self.decoder = decoder
        self.has_body = False
        self.is_ended = False

    @classmethod
    async def open(
        cls,
        address: Address,
        target: Target,
        *,
        last_event_id: str = "",
        source: tuple[str | int, ...] | None = None,
    ) -> StreamConnection:
        """Connect, send ``GET`` (with ``Last-Event-ID`` if given) and read the response head.

        The caller bounds the time (a cancel scope); on any failure the socket is closed.
        ``source``: bind to this local address first (``(host, 0)``: any port).

        Raises:
            StreamFailureError: ``connect``, ``status`` (not 200), ``content_type`` (not
                ``text/event-stream``), ``protocol``, ``reset`` or ``closed``.
        """
        sock = trio.socket.socket(address.family, socket.SOCK_STREAM)
        try:
            try:
                if source is not None:
                    await bind_source(sock, source)
                await sock.connect(address.sockaddr)
            except OSError as exc:
                raise StreamFailureError(
                    ErrorKind.CONNECT, f"connect failed: {exc.strerror or exc}"
                ) from None
            headers = [("Accept", "text/event-stream"), ("Cache-Control", "no-cache")]
            if last_event_id:
                headers.append(("Last-Event-ID", last_event_id))
            exchange = Exchange()
            try:
                await send_all(sock, exchange.request("GET", target, headers=headers))
                head, pending = await read_head(sock, exchange)
            except StreamFailureError as exc:
                # Tells an overflowing accept queue (reset or closed before any
                # answer) apart from streams that break later.
                exc.kind = exc.kind.before_head()
                raise
            if head.status != 200:
                reason = f" {head.reason}" if head.reason else ""
                raise StreamFailureError(
                    ErrorKind.STATUS, f"GET {target.path} answered {head.status}{reason}"
                )
            if head.content_type != "text/event-stream":
                raise StreamFailureError(
                    ErrorKind.CONTENT_TYPE,
                    f"Content-Type is {head.content_type!r}, not text/event-stream",
                )
            decoder = Decoder(last_event_id=last_event_id, max_event_size=MAX_EVENT_SIZE)
            return cls(sock, exchange, pending, decoder)
        except BaseException:
            sock.close()
            raise

    async def receive(self) -> list[MessageEvent]:
        """Wait for the next bytes and return the events they complete (maybe none).

        Raises:
            StreamFailureError: ``ended``, ``closed``, ``reset`` or ``protocol``.
        """
        if self.is_ended:
            raise StreamFailureError(ErrorKind.ENDED, "the server ended the response")
        if self._pending:
            body, self._pending = self._pending, b""
        else:
            data = await receive_some(self._sock)
            try:
                body = self._exchange.feed(data)
            except ProtocolError as exc:
                if not data:
                    raise StreamFailureError(
                        ErrorKind.CLOSED, "the server closed the connection mid-response"
                    ) from None
                raise StreamFailureError(ErrorKind.PROTOCOL, str(exc)) from None
            if not data:
                # A body framed by the connection's end has ended; any other was cut.
                raise StreamFailureError(ErrorKind.ENDED, "the server closed the stream")
        try:
            events = self.decoder.feed(body) if body else []
        except ProtocolError as exc:
            raise StreamFailureError(ErrorKind.PROTOCOL, str(exc)) from None
        self.has_body = self.has_body or bool(body)
        self.is_ended = self._exchange.is_done
        return events

    def close_fin(self) -> None:
        """Close with FIN (orderly)."""
        # An OSError here means the peer reset it already: closing is all that is left.
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_WR)
        self._sock.close()

    def close_rst(self) -> None:
        """Close with RST: ``SO_LINGER`` with a zero timeout makes ``close`` abort."""
        with contextlib.suppress(OSError):
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._sock.close()

    def detach_socket(self) -> trio.socket.SocketType:
        """Hand the socket over (to hold it, stalled); this object must not be used after."""
        return self._sock


# Linux: a bind to port 0 picks the port at connect() instead, so a source address's
# ports are shared by every destination (4-tuples), not reserved one per bind.
_IP_BIND_ADDRESS_NO_PORT: Final = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


async def bind_source(sock: trio.socket.SocketType, source: tuple[str | int, ...]) -> None:
    """Bind ``sock`` to the local address ``source`` (port 0) before it connects.

    Raises:
        OSError: The address is not one of this machine's.
    """
    if sock.family == socket.AF_INET:
        with contextlib.suppress(OSError):  # not Linux: bind picks the port now
            sock.setsockopt(socket.IPPROTO_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
    await sock.bind(source)


async def send_all(sock: trio.socket.SocketType, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            sent = await sock.send(view)
        except OSError as exc:
            raise _failure_of(exc) from None
        view = view[sent:]


async def receive_some(sock: trio.socket.SocketType) -> bytes:
    try:
        return await sock.recv(RECEIVE_SIZE)
    except OSError as exc:
        raise _failure_of(exc) from None


def _failure_of(exc: OSError) -> StreamFailureError:
    if isinstance(exc, ConnectionResetError):
        return StreamFailureError(ErrorKind.RESET, "connection reset by the server")
    return StreamFailureError(ErrorKind.CLOSED, f"socket error: {exc.strerror or exc}")


async def read_head(sock: trio.socket.SocketType, exchange: Exchange) -> tuple[ResponseHead, bytes]:
    """Read up to the response head; return it and the body bytes that came with it.

    Raises:
        StreamFailureError: ``is_before_response`` is set when not a byte came back.
    """
    body = bytearray()
    has_received = False
    try:
        while exchange.head is None:
            data = await receive_some(sock)
            if not data:
                raise StreamFailureError(
                    ErrorKind.CLOSED, "the server closed the connection before the response head"
                )
            has_received = True
            try:
                body += exchange.feed(data)
            except ProtocolError as exc:
                raise StreamFailureError(ErrorKind.PROTOCOL, str(exc)) from None
    except StreamFailureError as exc:
        exc.is_before_response = not has_received
        raise
    return exchange.head, bytes(body)
