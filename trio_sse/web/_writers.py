"""Where a stream's write loop puts its chunks: the writers, and how a server offers one.

* :class:`ChunkWriter`: what every writer does (write a chunk, waiting as the
  connection requires, never losing one to cancellation).
* :class:`DirectChunkWriter`: one that can also write at once from any task, which
  lets publishes deliver straight to the connection (see ``Subscription.set_sink``).
* :class:`AsgiChunkWriter`: one ASGI ``http.response.body`` message per chunk; works
  under any ASGI server.
* :class:`BoundedChunkWriter`: one that keeps at most a given number of bytes
  waiting for a client that does not read, and can abort its response (HTTP/2,
  where the server's own writes never wait).
* :data:`CHUNK_WRITER_EXTENSION`: the scope extension under which a server offers a
  better one (``trio_sse.serve()`` offers a direct socket writer for HTTP/1.1 and a
  bounded writer for HTTP/2).
"""

from __future__ import annotations

from typing import Final, Protocol, cast, runtime_checkable

import trio
from hypercorn.typing import ASGISendCallable, HTTPResponseBodyEvent

__all__ = [
    "ASGI_WRITE_TIMEOUT",
    "CHUNK_WRITER_EXTENSION",
    "AsgiChunkWriter",
    "BoundedChunkWriter",
    "ChunkWriter",
    "DirectChunkWriter",
    "SlowReaderError",
]


class SlowReaderError(trio.TooSlowError):
    """A writer gave up on a client that did not take its bytes in time.

    The stream ends, counted as ``slow_consumer``; the client resumes from history
    with ``Last-Event-ID`` when it reconnects.
    """


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


@runtime_checkable
class BoundedChunkWriter(ChunkWriter, Protocol):
    """A :class:`ChunkWriter` for a connection whose server would buffer without bound.

    Over HTTP/2 a server's body writes return at once whatever the client's flow-control
    window, so a client that never opens it would have the server buffer everything.
    Such a writer waits instead while more than :attr:`max_buffer` bytes are unsent,
    and gives up (:class:`SlowReaderError`) when the client makes no progress for as
    long as a stalled HTTP/1.1 connection is given (``TCP_USER_TIMEOUT``).

    Cancellation: a cancelled :meth:`write` keeps its chunk and writes it before the
    next one, so that no chunk is lost or split.
    """

    max_buffer: int
    """Unsent bytes (in the server, for this response) above which a write waits."""

    async def abort(self) -> None:
        """End the response abruptly (HTTP/2: reset the stream), dropping what is unsent.

        For a client dropped as slow: a clean end would wait behind the unsent bytes.
        """


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
            SlowReaderError: The server did not take it within ``ASGI_WRITE_TIMEOUT``.

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
            raise SlowReaderError(f"the server did not take a chunk in {ASGI_WRITE_TIMEOUT} s")
