"""Where a stream's write loop puts its chunks: the writers, and how a server offers one.

* :class:`ChunkWriter`: what every writer does (write a chunk, waiting as the
  connection requires, never losing one to cancellation).
* :class:`DirectChunkWriter`: one that can also write at once from any task, which
  lets publishes deliver straight to the connection (see ``Subscription.set_sink``).
* :class:`AsgiChunkWriter`: one ASGI ``http.response.body`` message per chunk; works
  under any ASGI server.
* :data:`CHUNK_WRITER_EXTENSION`: the scope extension under which a server offers a
  better one (``trio_sse.serve()`` offers a direct socket writer for HTTP/1.1).
"""

from __future__ import annotations

from typing import Final, Protocol, cast, runtime_checkable

import trio
from hypercorn.typing import ASGISendCallable, HTTPResponseBodyEvent

__all__ = [
    "ASGI_WRITE_TIMEOUT",
    "CHUNK_WRITER_EXTENSION",
    "AsgiChunkWriter",
    "ChunkWriter",
    "DirectChunkWriter",
]


class ChunkWriter(Protocol):
    """Where a stream's write loop puts its chunks: one HTTP response body."""

    async def write(self, chunk: bytes) -> None:
        """Write ``chunk`` as the next part of the body; return once the server took it.

        Backpressure: waits while the client does not read (the server's socket write
        blocks), so a stream never runs ahead of its connection.

        Cancellation: never loses or splits a chunk. A write either completes or, if it
        cannot (the connection broke, or a bounded wait ran out), raises; an outside
        cancellation takes effect only after it.
        """


@runtime_checkable
class DirectChunkWriter(ChunkWriter, Protocol):
    """A :class:`ChunkWriter` that can also write at once, from any task, without waiting.

    With one, a stream lets publishes write to it directly while it waits for events
    (see :meth:`~trio_sse.broker.Subscription.set_sink`): no task switch per delivery.
    """

    @property
    def has_pending(self) -> bool:
        """Whether :meth:`write_nowait` kept bytes that :meth:`flush` must write."""

    def write_nowait(self, chunk: bytes) -> bool:
        """Write ``chunk`` as far as the connection takes it now; keep the rest.

        Never blocks, checkpoints or raises: a broken connection is found out by
        :meth:`flush`. While bytes are pending it writes nothing and keeps ``chunk``
        after them, so that the order holds.

        Returns:
            Whether all of it was written; if not, call :meth:`flush` next.
        """

    async def flush(self) -> None:
        """Write what :meth:`write_nowait` kept, waiting as :meth:`write` does."""


CHUNK_WRITER_EXTENSION: Final = "trio_sse.chunk_writer"
"""The scope extension under which a server offers a :class:`ChunkWriter` for the
response's body, usable once the response's first body chunk has been sent."""


# A chunk the server has not taken in this long is given up on, and the stream ends:
# the server's own bounds (TCP_USER_TIMEOUT, 30 s under serve()) normally end such a
# write first.
ASGI_WRITE_TIMEOUT: Final = 60.0


class AsgiChunkWriter:
    """Writes each chunk as one ASGI ``http.response.body`` message."""

    __slots__ = ("_send",)

    def __init__(self, send: ASGISendCallable) -> None:
        self._send = send

    async def write(self, chunk: bytes) -> None:
        """Send ``chunk``; see :meth:`ChunkWriter.write`.

        Raises:
            trio.TooSlowError: The server did not take it within ``ASGI_WRITE_TIMEOUT``.

        Cancellation: shielded, with that bound: a message cancelled halfway through the
        server's send could leave the body with part of a chunk.
        """
        message = cast(
            HTTPResponseBodyEvent,
            {"type": "http.response.body", "body": chunk, "more_body": True},
        )
        with trio.move_on_after(ASGI_WRITE_TIMEOUT, shield=True) as scope:
            await self._send(message)
        if scope.cancelled_caught:
            raise trio.TooSlowError(f"the server did not take a chunk in {ASGI_WRITE_TIMEOUT} s")
