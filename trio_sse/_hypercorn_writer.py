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

The writer is found by following Hypercorn's ASGI ``send`` to its connection
(``HTTPStream`` -> ``H11Protocol`` -> ``TCPServer``), each step checked by type: on any
other version, protocol (HTTP/2) or stream (TLS) none is offered, and streams use plain
ASGI sends. ``tests/test_write_path.py`` checks that it is offered under serve().
"""

from __future__ import annotations

import os
from typing import Any, Final, cast

import trio
from hypercorn.events import RawData
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol.http_stream import HTTPStream
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.typing import (
    ASGIFramework,
    ASGIReceiveCallable,
    ASGISendCallable,
    Scope,
)

from .web import CHUNK_WRITER_EXTENSION

__all__ = ["H11SocketWriter", "offer_socket_writers"]

_CRLF: Final = b"\r\n"


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


def _socket_writer(send: ASGISendCallable) -> H11SocketWriter | None:
    stream = getattr(send, "__self__", None)
    if not isinstance(stream, HTTPStream):
        return None
    protocol = getattr(stream.send, "__self__", None)
    if not isinstance(protocol, H11Protocol):
        return None
    connection = getattr(protocol.send, "__self__", None)
    if not isinstance(connection, TCPServer) or hasattr(connection.stream, "transport_stream"):
        return None  # not Hypercorn's trio worker, or TLS (the bytes must be encrypted)
    return H11SocketWriter(connection)


def offer_socket_writers(app: ASGIFramework) -> ASGIFramework:
    """Wrap ``app`` so that each plain HTTP/1.1 ``GET`` offers an :class:`H11SocketWriter`.

    The writer goes into ``scope["extensions"]`` under
    :data:`~trio_sse.web.CHUNK_WRITER_EXTENSION`; apps that do not know it ignore it.
    Wrap the app that Hypercorn calls directly: the writer is found from its ``send``.
    """

    async def wrapped(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        # HTTP/1.0 bodies are not chunked, and HEAD responses have none.
        if scope["type"] == "http" and scope["http_version"] == "1.1" and scope["method"] == "GET":
            writer = _socket_writer(send)
            if writer is not None:
                # Into the request's own dict (Hypercorn makes one per request): a copy
                # would cost every open stream a dict more. Hypercorn's types say each
                # extension is a dict; ASGI says any object.
                extensions = cast(dict[str, Any], scope.setdefault("extensions", {}))
                extensions[CHUNK_WRITER_EXTENSION] = writer
        await app(scope, receive, send)

    return wrapped
