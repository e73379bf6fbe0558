"""A bound in seconds and bytes on every request body, before the app sees it.

:class:`BodyLimiter` wraps an ASGI app (``app.asgi_app = BodyLimiter(...)``). It reads
each HTTP request's whole body first, then calls the app with it:

* the body must be complete within ``timeout`` seconds of the request reaching the
  app (its head is in by then: the server bounds that), or the client gets 408 and,
  over HTTP/1.1, the connection is closed;
* the body may hold at most ``max_size`` bytes: a ``Content-Length`` over it gets 413
  at once, and so does a body that grows over it, without reading the rest.

Without it, a request that announces a body and never sends it (``Content-Length:
100``, then silence; chunks that never end; an HTTP/2 stream whose ``END_STREAM``
never comes) holds a task, a socket and its buffers for as long as the client likes,
counted by no cap. Hypercorn's ``read_timeout`` cannot bound it: it cuts any
connection that sends nothing, and an event stream's client sends nothing after its
request. Reading the body here bounds every route, over HTTP/1.1 and HTTP/2 alike.

Rules: the app is called only with a complete body, as one ``http.request`` message;
after it, the app's ``receive`` is the server's (an event stream waits there for
``http.disconnect``). A client that leaves before its body is in gets no answer.
Other scope types (``lifespan``, ``websocket``) pass through untouched.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable
from typing import Final

import trio
from hypercorn.typing import ASGIFramework as ASGIApp
from hypercorn.typing import (
    ASGIReceiveCallable,
    ASGIReceiveEvent,
    ASGISendCallable,
    HTTPRequestEvent,
    HTTPScope,
    Scope,
)

__all__ = ["DEFAULT_BODY_TIMEOUT", "BodyLimiter"]

# A publish body is at most 64 KiB by default: 10 s for it is 6.5 KB/s, which a
# phone on a poor link still manages, and a client that stalls holds its connection
# for 10 s at most.
DEFAULT_BODY_TIMEOUT: Final = 10.0


class BodyLimiter:
    """An ASGI middleware that reads each request body within a deadline and a size.

    See the module docs for what it answers, and why.

    Args:
        app: The ASGI app to protect.
        timeout: Seconds a request gets to deliver its whole body; finite and > 0.
        max_size: Bytes a body may hold; >= 1.

    Attributes:
        timed_out: Requests answered 408 so far.
        too_large: Requests answered 413 so far.
    """

    def __init__(
        self, app: ASGIApp, *, timeout: float = DEFAULT_BODY_TIMEOUT, max_size: int
    ) -> None:
        if not (timeout > 0 and math.isfinite(timeout)):
            raise ValueError(f"body_timeout must be > 0 seconds and finite, got {timeout}")
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size}")
        self.app = app
        self.timeout = timeout
        self.max_size = max_size
        self.timed_out = 0
        self.too_large = 0

    def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> Awaitable[None]:
        # Not a coroutine, and the app called from here rather than from the reading
        # coroutine: an open stream then holds no frame of this middleware (1 KiB).
        if scope["type"] == "http":
            return self._read_then_call(scope, receive, send)
        return self.app(scope, receive, send)

    async def _read_then_call(
        self, scope: HTTPScope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        body = await self._read(scope, receive, send)
        if body is not None:
            await self.app(scope, _Replay(body, receive), send)

    async def _read(
        self, scope: HTTPScope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> bytes | None:
        """The whole body, or ``None`` once the request is answered (or its client left)."""
        if _declared_length(scope) > self.max_size:
            await self._too_large(scope, send)
            return None
        chunks: list[bytes] = []
        size = 0
        with trio.move_on_after(self.timeout) as deadline:
            while size <= self.max_size:
                message = await receive()
                if message["type"] != "http.request":
                    return None  # http.disconnect: nobody left to answer
                body = message.get("body", b"")
                size += len(body)
                chunks.append(body)
                if not message.get("more_body", False):
                    break
        # Answered outside the deadline's scope, which must not cut the answer short.
        if size > self.max_size:
            await self._too_large(scope, send)
            return None
        if deadline.cancelled_caught:
            self.timed_out += 1
            await _answer(scope, send, 408, f"request body not complete within {self.timeout:g} s")
            return None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _too_large(self, scope: HTTPScope, send: ASGISendCallable) -> None:
        self.too_large += 1
        await _answer(scope, send, 413, f"body larger than the {self.max_size}-byte limit")


class _Replay:
    """A ``receive`` that gives the body read already, then is the server's own.

    A small object rather than a closure, and not a coroutine: an open stream keeps it
    for its lifetime, and waits in the server's ``receive`` with no frame of ours.
    """

    __slots__ = ("_body", "_receive")

    def __init__(self, body: bytes, receive: ASGIReceiveCallable) -> None:
        self._body: bytes | None = body
        self._receive = receive

    def __call__(self) -> Awaitable[ASGIReceiveEvent]:
        body, self._body = self._body, None
        if body is None:
            return self._receive()
        return _whole_body(body)


async def _whole_body(body: bytes) -> HTTPRequestEvent:
    # Async means checkpoint: every receive yields, as the server's does.
    await trio.lowlevel.checkpoint()
    return {"type": "http.request", "body": body, "more_body": False}


def _declared_length(scope: HTTPScope) -> int:
    """The request's ``Content-Length``, or 0 if it has none (or an invalid one, which
    the server refused before the app)."""
    for name, value in scope["headers"]:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


async def _answer(scope: HTTPScope, send: ASGISendCallable, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if scope["http_version"] in {"1.0", "1.1"}:
        # The rest of the body may still come, or never: the connection cannot carry
        # another request. (HTTP/2 forbids the header; its stream just ends.)
        headers.append((b"connection", b"close"))
    await send(
        {"type": "http.response.start", "status": status, "headers": headers, "trailers": False}
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})
