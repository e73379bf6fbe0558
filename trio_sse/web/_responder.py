"""Who sends a stream's response: the stream's own write loop, beneath the Quart route.

Quart sends a body by iterating it and awaiting one ASGI ``send`` per chunk, a dozen
frames deep (Quart, quart-trio, Hypercorn's stream, h11, the connection's lock and
shielded socket write). For an event stream, :class:`EventStreamConnection` sends
the headers and the first chunk that way, then runs the body's own loop
(:meth:`EventStreamBody.stream_to`) with the most direct :class:`ChunkWriter` the
server offers:

* under :func:`trio_sse.serve`, HTTP/1.1 without TLS: the server puts one in the
  request's scope (``scope["extensions"][CHUNK_WRITER_EXTENSION]``) that frames each
  chunk itself and writes it to the socket at once while the socket takes it;
* anywhere else (HTTP/2, TLS, the Hypercorn CLI, another ASGI server): one ASGI
  ``send`` per chunk, as Quart would, minus Quart's own loop.

Routes do not change: a handler returns :func:`~trio_sse.web.event_stream` as before.
"""

from __future__ import annotations

import math
from typing import Any, cast

import quart
import trio
from hypercorn.typing import (
    ASGIReceiveCallable,
    ASGISendCallable,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
)
from quart.utils import encode_headers
from quart.wrappers import Request
from quart.wrappers.request import Body
from quart_trio.asgi import TrioASGIHTTPConnection

from ._observer import StreamEnd
from ._stream import EventStreamBody
from ._writers import (
    CHUNK_WRITER_EXTENSION,
    AsgiChunkWriter,
    BoundedChunkWriter,
    ChunkWriter,
    SlowReaderError,
)

__all__ = ["EventStreamConnection"]


class EventStreamConnection(TrioASGIHTTPConnection):
    """Quart-Trio's HTTP connection, with event streams sent by their own write loop.

    :func:`~trio_sse.app.create_app` installs it; for an app of your own, set
    ``app.asgi_http_class = EventStreamConnection``. Without it, streams still work,
    through Quart's generic body loop.
    """

    async def __call__(self, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        # As quart-trio does, with two differences that matter for thousands of open
        # streams: the response is sent from this task rather than a second child
        # (one task fewer each), and nothing holds the request once it is handled
        # (its headers, URL and body; 2 to 3 KiB each). A disconnect still cancels
        # the nursery, and with it the response.
        async with trio.open_nursery() as nursery:
            request = self._create_request_from_scope(send)
            nursery.start_soon(_read_messages, nursery, request.body, receive)
            handling = self.handle_request(nursery, request, send)
            del request
            await handling

    async def handle_request(  # type: ignore[override]
        self, nursery: trio.Nursery, request: Request, send: ASGISendCallable
    ) -> None:
        response = await self.app.handle_request(request)
        if isinstance(response, quart.Response) and isinstance(response.response, EventStreamBody):
            start = cast(
                HTTPResponseStartEvent,
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": encode_headers(response.headers),
                },
            )
            body = response.response
            is_head = request.method == "HEAD"
            del request, response  # not needed while the stream lasts
            if is_head:
                # event_stream() answers a HEAD without this body; one built by hand
                # is never entered either: entering it subscribes.
                await send(start)
                await send(
                    cast(
                        HTTPResponseBodyEvent,
                        {"type": "http.response.body", "body": b"", "more_body": False},
                    )
                )
            else:
                await self._send_event_stream(send, start, body)
        else:
            # What quart-trio does for every other response.
            timeout = self.app.config["RESPONSE_TIMEOUT"]
            if isinstance(response, quart.Response) and response.timeout is not Ellipsis:
                timeout = response.timeout
            with trio.move_on_after(math.inf if timeout is None else timeout):
                await self._send_response(send, response)
        nursery.cancel_scope.cancel()

    async def _send_event_stream(
        self, send: ASGISendCallable, start: HTTPResponseStartEvent, body: EventStreamBody
    ) -> None:
        # No response timeout: a stream lasts as long as its client.
        await send(start)
        del start
        plain = AsgiChunkWriter(send)
        extensions = cast(dict[str, Any], self.scope.get("extensions") or {})
        writer: ChunkWriter = extensions.get(CHUNK_WRITER_EXTENSION, plain)
        if isinstance(writer, BoundedChunkWriter):
            writer.max_buffer = body.max_buffer
        try:
            async with body:
                # The first chunk carries the headers with it; through the bounded
                # writer if there is one, since it may be a whole piece of replay.
                first = body.first_chunk()
                await (writer if isinstance(writer, BoundedChunkWriter) else plain).write(first)
                del first
                await body.stream_to(writer)
        except SlowReaderError:
            return  # the writer ended the response (and the log line says why)
        if body.end_reason() is StreamEnd.SLOW_CONSUMER and isinstance(writer, BoundedChunkWriter):
            # A clean end would wait behind the bytes the client is not reading.
            await writer.abort()
            return
        await send(
            cast(
                HTTPResponseBodyEvent,
                {"type": "http.response.body", "body": b"", "more_body": False},
            )
        )


async def _read_messages(nursery: trio.Nursery, body: Body, receive: ASGIReceiveCallable) -> None:
    """Quart's ``handle_messages`` for one request, holding its body only while it is read.

    Feeds the request body to the route, then waits for ``http.disconnect`` and cancels
    ``nursery``: how a client's disconnect ends its stream.
    """
    unread: Body | None = body
    del body
    while True:
        message = await receive()
        if message["type"] == "http.request" and unread is not None:
            unread.append(message.get("body", b""))
            if not message.get("more_body", False):
                unread.set_complete()
                unread = None
        elif message["type"] == "http.disconnect":
            break
    nursery.cancel_scope.cancel()
