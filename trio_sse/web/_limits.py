"""Caps on concurrent event streams, in total and per client IP.

:class:`StreamLimiter` wraps an ASGI app (``app.asgi_app = StreamLimiter(...)``).
It counts the requests to stream paths (``GET`` of one of ``paths``) from the
moment the server hands them to the app until the app returns, which for a stream
is when it ends: the count is taken and given back in one ``try``/``finally``, so
no disconnect, cancellation or error can leak a slot. A request over a cap never
reaches the app: it gets 503 with ``Retry-After`` and a JSON body.

The client IP is the ASGI ``client`` address: behind a reverse proxy that is the
proxy's, so run the server with the proxy's forwarded-address handling (e.g.
Hypercorn's ``ProxyFixMiddleware``) or set the per-IP cap to 0 (off) and let the
proxy enforce it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from hypercorn.typing import ASGIFramework as ASGIApp
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope

__all__ = ["DEFAULT_MAX_STREAMS", "DEFAULT_MAX_STREAMS_PER_IP", "StreamLimiter"]

# About 38 KiB each (field guide, section 6): 20,000 streams take ~750 MiB, and the
# load tester's 10,000 fit with room for reconnects that overlap their predecessors.
DEFAULT_MAX_STREAMS: Final = 20_000
# Off by default: behind a reverse proxy or a NAT every client has the same address,
# and a load test comes from one host. Set it when clients connect directly.
DEFAULT_MAX_STREAMS_PER_IP: Final = 0
# Long enough for a reconnect storm to pass; EventSource ignores it (it uses its
# own retry), but other clients and proxies honour it.
_RETRY_AFTER_SECONDS: Final = 5


@dataclass(frozen=True, slots=True)
class _Refusal:
    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]]


def _refusal(message: str) -> _Refusal:
    body = json.dumps({"error": message}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(_RETRY_AFTER_SECONDS).encode()),
    ]
    return _Refusal(503, body, headers)


class StreamLimiter:
    """An ASGI middleware that caps concurrent streams (see the module docs).

    Args:
        app: The ASGI app to protect.
        max_streams: Streams open at once in this process; 0 means no cap.
        max_streams_per_ip: Streams open at once from one client address; 0 means no cap.
        paths: Paths that are streams when requested with ``GET``: each one exactly,
            and for one ending with ``/``, every path under it. The default is the
            reference app's: ``/events/<topic>`` and ``/events?topic=...`` (several
            topics on one stream).

    Attributes:
        open_streams: Streams counted now.
        refused: Requests refused so far.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_streams: int = DEFAULT_MAX_STREAMS,
        max_streams_per_ip: int = DEFAULT_MAX_STREAMS_PER_IP,
        paths: Sequence[str] = ("/events", "/events/"),
    ) -> None:
        if max_streams < 0 or max_streams_per_ip < 0:
            raise ValueError("stream limits must be >= 0 (0: no limit)")
        self.app = app
        self.max_streams = max_streams
        self.max_streams_per_ip = max_streams_per_ip
        self._exact = frozenset(paths)
        self._prefixes = tuple(path for path in paths if path.endswith("/"))
        self.open_streams = 0
        self.refused = 0
        self._per_ip: Counter[str] = Counter()

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if not (
            scope["type"] == "http"
            and scope["method"] == "GET"
            and (scope["path"] in self._exact or scope["path"].startswith(self._prefixes))
        ):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        ip = client[0] if client else ""
        refusal = self._check(ip)
        if refusal is not None:
            self.refused += 1
            await send(
                {
                    "type": "http.response.start",
                    "status": refusal.status,
                    "headers": refusal.headers,
                    "trailers": False,
                }
            )
            await send({"type": "http.response.body", "body": refusal.body, "more_body": False})
            return
        self.open_streams += 1
        self._per_ip[ip] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.open_streams -= 1
            self._per_ip[ip] -= 1
            if not self._per_ip[ip]:
                del self._per_ip[ip]  # no entry per address ever seen

    def _check(self, ip: str) -> _Refusal | None:
        if self.max_streams and self.open_streams >= self.max_streams:
            return _refusal(f"too many open streams ({self.max_streams}); retry later")
        if self.max_streams_per_ip and self._per_ip[ip] >= self.max_streams_per_ip:
            return _refusal(
                f"too many open streams from {ip} ({self.max_streams_per_ip}); retry later"
            )
        return None
