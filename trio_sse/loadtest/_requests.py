"""Short HTTP requests (publishes, ``GET /stats``) over one reused raw socket.

The load tester's own traffic must cost the machine little next to the 10,000 streams
it measures, so it reuses a keep-alive connection and the same framing code as the
streams instead of a general-purpose client.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable

import trio

from ..errors import ProtocolError
from ._connection import Address, ErrorKind, StreamFailureError, read_head, receive_some, send_all
from ._http import Exchange, ResponseHead, Target

__all__ = ["Requester"]


class Requester:
    """Sends requests one at a time over a keep-alive connection, reopened as needed.

    Not safe for concurrent use: give each concurrent sender its own.
    """

    def __init__(self, address: Address) -> None:
        self._address = address
        self._sock: trio.socket.SocketType | None = None

    async def request(
        self,
        method: str,
        target: Target,
        *,
        body: bytes | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> tuple[ResponseHead, bytes]:
        """Send one request; return the response head and its whole body.

        A reused connection that the server closed while idle (no byte of a response
        came back) is retried once on a new one: the server never saw the request.
        The caller bounds the time.

        Raises:
            StreamFailureError: The server could not be reached or broke the response.
        """
        is_reused = self._sock is not None
        try:
            return await self._exchange(method, target, headers, body)
        except StreamFailureError as exc:
            self.close()
            if not (is_reused and exc.is_before_response):
                raise
        return await self._exchange(method, target, headers, body)

    async def _exchange(
        self,
        method: str,
        target: Target,
        headers: Iterable[tuple[str, str]],
        body: bytes | None,
    ) -> tuple[ResponseHead, bytes]:
        if self._sock is None:
            sock = trio.socket.socket(self._address.family, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                await sock.connect(self._address.sockaddr)
            except OSError as exc:
                sock.close()
                raise StreamFailureError(
                    ErrorKind.CONNECT, f"connect failed: {exc.strerror or exc}"
                ) from None
            self._sock = sock
        sock = self._sock
        exchange = Exchange()
        try:
            await send_all(sock, exchange.request(method, target, headers=headers, body=body))
            head, first = await read_head(sock, exchange)
            answer = bytearray(first)
            while not exchange.is_done:
                chunk = await receive_some(sock)
                try:
                    answer += exchange.feed(chunk)
                except ProtocolError as exc:
                    if not chunk:
                        raise StreamFailureError(
                            ErrorKind.CLOSED, "the server cut the response body short"
                        ) from None
                    raise StreamFailureError(ErrorKind.PROTOCOL, str(exc)) from None
        except BaseException:
            self.close()
            raise
        if not exchange.is_reusable:
            self.close()
        return head, bytes(answer)

    def close(self) -> None:
        """Close the connection (the next request opens a new one)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
