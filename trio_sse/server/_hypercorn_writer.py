"""The fast path that :func:`trio_sse.serve` offers streams on Hypercorn's trio worker.

Hypercorn writes each ASGI body message through h11 and its connection's
``protocol_send``: the connection's lock (one scheduler pass), then a shielded
``send_all`` on the Trio socket (another pass, and Trio's per-I/O machinery). For an
event stream that is most of what a delivery costs. :class:`H11SocketWriter` does what
that path does for a chunk of an HTTP/1.1 chunked body, without the passes: it frames
the chunk itself and hands it to the kernel with one non-blocking ``writev`` while the
socket takes it. When the socket's buffer is full (a slow reader), or the write fails,
the rest goes through Hypercorn's own ``protocol_send`` after all, so backpressure,
shielding, ``TCP_USER_TIMEOUT`` and disconnect handling stay Hypercorn's.

Over HTTP/2 the problem is the opposite one. Hypercorn's h2 stream buffer lets a body
write return whenever less than 16 KiB is pending, and a stream whose flow-control
window is closed takes nothing, so every write returns at once and a client that never
opens its window has the server buffer all it is sent (+223 MiB for 2 MiB published to
100 such streams). :class:`H2StreamWriter` writes through ASGI as usual but first waits
while more than ``max_buffer`` bytes of its stream are unsent, and resets the stream
when the client makes no progress for as long as a stalled HTTP/1.1 connection is
given (``TCP_USER_TIMEOUT``).

Each writer is found by following Hypercorn's ASGI ``send`` to its connection
(``HTTPStream`` -> ``H11Protocol`` -> ``TCPServer``, or ``HTTPStream`` ->
``H2Protocol``), each step checked by type: on any other version or stream (TLS for
HTTP/1.1) none is offered, and streams use plain ASGI sends.
``tests/test_write_path.py`` checks that they are offered under serve().
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Final, cast

import h2.errors
import h2.exceptions
import trio
from hypercorn.events import RawData
from hypercorn.protocol.h2 import H2Protocol, StreamBuffer
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol.http_stream import HTTPStream
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.typing import (
    ASGIFramework,
    ASGIReceiveCallable,
    ASGISendCallable,
    Scope,
)
from priority.priority import MissingStreamError

from ..web import CHUNK_WRITER_EXTENSION, AsgiChunkWriter, SlowReaderError

__all__ = ["H2StreamWriter", "H11SocketWriter", "offer_socket_writers"]

_CRLF: Final = b"\r\n"

# Bounds the shield around an abort: one RST_STREAM frame and Hypercorn's bookkeeping.
_ABORT_TIMEOUT: Final = 5.0

# Until a stream sets its own (EventStreamBody.max_buffer).
_DEFAULT_MAX_BUFFER: Final = 1024 * 1024


class H11SocketWriter:
    """Writes chunks of one HTTP/1.1 chunked response body straight to its socket.

    Use only after the response's first body message went through Hypercorn (the
    headers go with it), and only from the task that sends the response.
    """

    __slots__ = ("_connection", "_pending", "_socket")

    def __init__(self, connection: TCPServer) -> None:
        self._connection = connection
        self._socket = connection.stream.socket
        self._pending = b""  # framed bytes the socket did not take yet

    @property
    def has_pending(self) -> bool:
        return bool(self._pending)

    def write_nowait(self, chunk: bytes) -> bool:
        """Write ``chunk`` as one HTTP chunk as far as the socket takes it now.

        Never blocks, checkpoints or raises: what the socket does not take (a full
        buffer, a broken connection), or all of it while earlier bytes are pending, is
        kept for :meth:`flush`, whose write through Hypercorn waits or finds out.

        Returns:
            Whether the whole chunk was written.
        """
        head = b"%x\r\n" % len(chunk)
        if self._pending:
            # Never ahead of what is still to be written.
            self._pending = b"".join((self._pending, head, chunk, _CRLF))
            return False
        sent = 0
        # The fd is checked on every write: once Hypercorn has closed the socket, its
        # number may already belong to another connection.
        fd = self._socket.fileno()
        if fd >= 0 and not self._connection.send_lock.locked():
            try:
                sent = os.writev(fd, (head, chunk, _CRLF))
            except OSError:
                sent = 0
            if sent == len(head) + len(chunk) + 2:
                return True
        self._pending = b"".join((head, chunk, _CRLF))[sent:]
        return False

    async def flush(self) -> None:
        """Write what :meth:`write_nowait` kept, through Hypercorn's own write.

        Cancellation: shielded, as Hypercorn shields its socket write (the kernel's
        ``TCP_USER_TIMEOUT`` bounds it), and the shield also covers its lock, which is
        free (only this stream writes during a response): a chunk is never lost to
        cancellation.
        """
        rest, self._pending = self._pending, b""
        if rest:
            with trio.CancelScope(shield=True):
                await self._connection.protocol_send(RawData(data=rest))

    async def write(self, chunk: bytes) -> None:
        """Write ``chunk`` as one HTTP chunk.

        Cancellation: no checkpoint when the kernel takes the whole chunk at once (the
        stream's wait for its next frames is the checkpoint of each round of its loop);
        otherwise as :meth:`flush`. A chunk is never lost to cancellation.
        """
        # Behind any pending bytes, write_nowait() keeps the chunk: one flush writes both.
        if not self.write_nowait(chunk):
            await self.flush()


class H2StreamWriter:
    """Writes one HTTP/2 response body through ASGI, bounded in the bytes left unsent.

    A :class:`~trio_sse.web.BoundedChunkWriter`: before each write it waits while the
    stream's unsent bytes in Hypercorn, plus the chunk, would pass :attr:`max_buffer`
    (until they are all sent: the client read them and opened its window again). A
    client that lets ``stall_timeout`` pass without that has its stream reset
    (``RST_STREAM``, ``CANCEL``) and the write raises :class:`SlowReaderError`.
    """

    __slots__ = (
        "_pending",
        "_protocol",
        "_send",
        "_stall_timeout",
        "_stalled_at",
        "_stream_id",
        "max_buffer",
    )

    def __init__(
        self,
        send: ASGISendCallable,
        protocol: H2Protocol,
        stream_id: int,
        *,
        stall_timeout: float,
    ) -> None:
        self._send = AsgiChunkWriter(send)
        self._protocol = protocol
        self._stream_id = stream_id
        self._stall_timeout = stall_timeout
        self.max_buffer = _DEFAULT_MAX_BUFFER
        self._pending = b""  # a chunk whose write was cancelled while it waited
        self._stalled_at: float | None = None  # when the current wait for room began

    def _buffer(self) -> StreamBuffer | None:
        return self._protocol.stream_buffers.get(self._stream_id)

    def _must_wait(self, size: int) -> bool:
        buffer = self._buffer()
        if buffer is None:
            return False  # the stream is gone: the send finds that out
        unsent = len(buffer.buffer)
        # A chunk larger than the bound still goes, once nothing else is unsent.
        return unsent > 0 and unsent + size > self.max_buffer

    async def write(self, chunk: bytes) -> None:
        """Write ``chunk`` once the client has room for it; see the class.

        Raises:
            SlowReaderError: The client made no progress for ``stall_timeout``; the
                stream was reset.

        Cancellation: a cancelled wait keeps the chunk, which goes out first on the
        next write. Once there is room, the chunk is written as
        :class:`~trio_sse.web.AsgiChunkWriter` writes it (shielded, bounded).
        """
        if self._pending:
            chunk = self._pending + chunk
        self._pending = chunk
        if self._must_wait(len(chunk)):
            if self._stalled_at is None:
                self._stalled_at = trio.current_time()
            with trio.move_on_at(self._stalled_at + self._stall_timeout) as waiting:
                while self._must_wait(len(chunk)):
                    buffer = self._buffer()
                    assert buffer is not None
                    await buffer.drain()
            if waiting.cancelled_caught:
                self._pending = b""
                await self.abort()
                raise SlowReaderError(
                    f"the client read nothing of its HTTP/2 stream in {self._stall_timeout} s"
                )
        self._stalled_at = None
        self._pending = b""
        await self._send.write(chunk)

    async def abort(self) -> None:
        """Reset the stream and drop its unsent bytes.

        Cancellation: shielded, bounded by a few seconds (one frame to write).
        """
        protocol, stream_id = self._protocol, self._stream_id
        self._pending = b""
        with trio.move_on_after(_ABORT_TIMEOUT, shield=True):
            try:
                protocol.connection.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
            except h2.exceptions.ProtocolError:
                return  # already closed, by the client or the connection
            buffer = self._buffer()
            if buffer is not None:
                await buffer.close()
            data = protocol.connection.data_to_send()
            if data:
                await protocol.send(RawData(data=data))
            # Hypercorn's sender forgets the stream the next time it looks at it: it
            # finds the stream reset.
            with contextlib.suppress(MissingStreamError):
                protocol.priority.unblock(stream_id)
            await protocol.has_data.set()


def _socket_writer(
    send: ASGISendCallable, stall_timeout: float
) -> H11SocketWriter | H2StreamWriter | None:
    stream = getattr(send, "__self__", None)
    if not isinstance(stream, HTTPStream):
        return None
    protocol = getattr(stream.send, "__self__", None)
    if isinstance(protocol, H2Protocol):
        return H2StreamWriter(send, protocol, stream.stream_id, stall_timeout=stall_timeout)
    if not isinstance(protocol, H11Protocol):
        return None
    connection = getattr(protocol.send, "__self__", None)
    if not isinstance(connection, TCPServer) or hasattr(connection.stream, "transport_stream"):
        return None  # not Hypercorn's trio worker, or TLS (the bytes must be encrypted)
    return H11SocketWriter(connection)


def offer_socket_writers(app: ASGIFramework, *, stall_timeout: float) -> ASGIFramework:
    """Wrap ``app`` so that each ``GET`` offers the best writer for its connection.

    Plain HTTP/1.1: an :class:`H11SocketWriter`; HTTP/2 (h2c or TLS): an
    :class:`H2StreamWriter` that gives up on a client after ``stall_timeout`` seconds
    without progress. The writer goes into ``scope["extensions"]`` under
    :data:`~trio_sse.web.CHUNK_WRITER_EXTENSION`; apps that do not know it ignore it.
    Wrap the app that Hypercorn calls directly: the writer is found from its ``send``.
    """

    async def wrapped(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        # HTTP/1.0 bodies are not chunked, and HEAD responses have none.
        if (
            scope["type"] == "http"
            and scope["http_version"] in ("1.1", "2")
            and scope["method"] == "GET"
        ):
            writer = _socket_writer(send, stall_timeout)
            if writer is not None:
                # Into the request's own dict (Hypercorn makes one per request): a copy
                # would cost every open stream a dict more. Hypercorn's types say each
                # extension is a dict; ASGI says any object.
                extensions = cast(dict[str, Any], scope.setdefault("extensions", {}))
                extensions[CHUNK_WRITER_EXTENSION] = writer
        await app(scope, receive, send)

    return wrapped
