"""Test doubles that talk real HTTP/1.1 over real loopback sockets.

``SSEConnection`` is a deliberately raw SSE client on a trio socket, so tests control
exactly how it leaves: FIN, RST (SO_LINGER 0), or a stalled reader with a tiny
receive buffer. ``running_server`` runs a real Hypercorn on 127.0.0.1:0.
"""

from __future__ import annotations

import socket
import ssl
import struct
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import httpx
import trio
from quart_trio import QuartTrio

from trio_sse import Broker, MemoryBroker, create_app, serve
from trio_sse.protocol import Decoder, MessageEvent

# Every network wait in the tests is bounded by this, so a regression fails fast
# instead of hanging CI.
TIMEOUT = 5.0


@dataclass
class Server:
    url: str
    app: QuartTrio
    broker: Broker
    stop: trio.Event
    http: httpx.AsyncClient

    @property
    def host_port(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        assert parts.hostname is not None
        assert parts.port is not None
        return parts.hostname, parts.port

    async def publish(self, topic: str, **body: Any) -> str:
        response = await self.http.post(f"/events/{topic}", json=body)
        assert response.status_code == 202, response.text
        event_id: str = response.json()["id"]
        return event_id

    async def stats(self) -> dict[str, Any]:
        response = await self.http.get("/stats")
        assert response.status_code == 200
        stats: dict[str, Any] = response.json()
        return stats

    async def wait_for_subscribers(
        self, count: int, timeout: float = TIMEOUT, *, poll: float = 0.001
    ) -> float:
        """Wait until the broker has ``count`` subscribers; return how long it took."""
        start = trio.current_time()
        with trio.fail_after(timeout):
            # The broker has no change notification; poll the in-process counter
            # (no HTTP) every ``poll`` seconds, which bounds the measured time's error.
            while self.broker.statistics().subscribers != count:  # noqa: ASYNC110
                await trio.sleep(poll)
        return trio.current_time() - start


@asynccontextmanager
async def running_server(
    *,
    broker: Broker | None = None,
    app: QuartTrio | None = None,
    graceful_timeout: float = 0.2,
    tcp_user_timeout: float = 30.0,
    certfile: str | None = None,
    keyfile: str | None = None,
    verify: ssl.SSLContext | bool = True,
    serve_options: Mapping[str, Any] | None = None,
    **app_options: Any,
) -> AsyncIterator[Server]:
    """Run a real Hypercorn on 127.0.0.1:0 for the duration of the block.

    With ``certfile`` and ``keyfile`` it serves HTTPS; ``verify`` is then what the
    ``Server.http`` client trusts. ``serve_options`` go to :func:`trio_sse.serve` (e.g.
    a short ``request_head_timeout``, so that a test need not wait out the production one).
    """
    broker = broker if broker is not None else MemoryBroker()
    app = app if app is not None else create_app(broker=broker, **app_options)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(
            partial(
                serve,
                app,
                host="127.0.0.1",
                port=0,
                graceful_timeout=graceful_timeout,
                tcp_user_timeout=tcp_user_timeout,
                on_shutdown=broker.aclose,
                shutdown_trigger=stop.wait,
                certfile=certfile,
                keyfile=keyfile,
                **(serve_options or {}),
            )
        )
        async with httpx.AsyncClient(base_url=urls[0], timeout=TIMEOUT, verify=verify) as http:
            yield Server(url=urls[0], app=app, broker=broker, stop=stop, http=http)
        stop.set()


async def read_response_head(stream: trio.SocketStream) -> tuple[bytes, bytes]:
    """Read ``stream`` up to the end of a response head; return the head and what followed.

    Raises:
        ConnectionError: The server closed the connection first.
    """
    received = b""
    with trio.fail_after(TIMEOUT):
        while b"\r\n\r\n" not in received:
            data = await stream.receive_some(65536)
            if not data:
                raise ConnectionError("closed before the response head")
            received += data
    head, _, rest = received.partition(b"\r\n\r\n")
    return head, rest


@dataclass
class SSEConnection:
    """One raw SSE request and its response, parsed by hand (chunked framing included)."""

    stream: trio.SocketStream
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)  # de-chunked body bytes
    chunks: int = 0  # HTTP chunks received: the server's writes
    events: list[MessageEvent] = field(default_factory=list)
    ended_cleanly: bool = False  # the terminating zero-length chunk arrived
    eof: bool = False
    _buffer: bytearray = field(default_factory=bytearray)
    _decoder: Decoder = field(default_factory=Decoder)

    @classmethod
    async def open(
        cls,
        server: Server | tuple[str, int],
        path: str,
        *,
        headers: Iterable[tuple[str, str]] = (),
        receive_buffer: int | None = None,
    ) -> SSEConnection:
        host, port = server.host_port if isinstance(server, Server) else server
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:
            # Set before connect, so the advertised window is small from the start.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        await sock.connect((host, port))
        connection = cls(trio.SocketStream(sock))
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Accept: text/event-stream"]
        lines += [f"{name}: {value}" for name, value in headers]
        await connection.stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())
        with trio.fail_after(TIMEOUT):
            await connection._read_head()
        return connection

    async def _receive(self) -> bool:
        data = await self.stream.receive_some(65536)
        if not data:
            self.eof = True
            return False
        self._buffer += data
        return True

    async def _read_head(self) -> None:
        while b"\r\n\r\n" not in self._buffer:
            if not await self._receive():
                raise ConnectionError("connection closed before the response head")
        head, _, rest = bytes(self._buffer).partition(b"\r\n\r\n")
        self._buffer = bytearray(rest)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split(" ")[1])
        for line in header_lines:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self._parse_chunks()

    def _parse_chunks(self) -> None:
        while not self.ended_cleanly:
            size_end = self._buffer.find(b"\r\n")
            if size_end < 0:
                return
            size = int(self._buffer[:size_end].split(b";")[0], 16)
            if len(self._buffer) < size_end + 2 + size + 2:
                return
            chunk = bytes(self._buffer[size_end + 2 : size_end + 2 + size])
            del self._buffer[: size_end + 2 + size + 2]
            if size == 0:
                self.ended_cleanly = True
                return
            self.chunks += 1
            self.body += chunk
            self.events += self._decoder.feed(chunk)

    async def read_until(
        self, condition: Callable[[SSEConnection], bool], timeout: float = TIMEOUT
    ) -> None:
        """Read until ``condition(self)`` holds; fail after ``timeout`` seconds."""
        with trio.fail_after(timeout):
            while not condition(self):
                if self.ended_cleanly or not await self._receive():
                    raise ConnectionError(f"stream ended first (clean end: {self.ended_cleanly})")
                self._parse_chunks()

    async def read_events(self, count: int, timeout: float = TIMEOUT) -> list[MessageEvent]:
        await self.read_until(lambda c: len(c.events) >= count, timeout)
        return self.events[:count]

    async def read_to_end(self, timeout: float = TIMEOUT) -> None:
        """Read until the server ends the response (terminating chunk) or the socket."""
        with trio.fail_after(timeout):
            while not self.ended_cleanly and await self._receive():
                self._parse_chunks()

    async def close_fin(self) -> None:
        await self.stream.aclose()

    async def close_rst(self) -> None:
        # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
        self.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await self.stream.aclose()


async def wait_for_remote_subscribers(
    http: httpx.AsyncClient, count: int, timeout: float = TIMEOUT
) -> None:
    """Wait until the server behind ``http`` reports at least ``count`` subscribers."""
    with trio.fail_after(timeout):
        # Another process: its /stats is the only view of its subscribers.
        while (await http.get("/stats")).json()["subscribers"] < count:  # noqa: ASYNC110
            await trio.sleep(0.01)


async def task_count_returns_to(baseline: int, within: float) -> bool:
    """Whether the task count gets back to ``baseline`` within ``within`` seconds.

    Task exits signal nothing, so this polls, bounded.
    """
    with trio.move_on_after(within):
        while count_tasks() != baseline:  # noqa: ASYNC110
            await trio.sleep(0.01)
    return count_tasks() == baseline


def count_tasks(name_prefix: str = "") -> int:
    """The tasks in this Trio run whose name starts with ``name_prefix`` (all by
    default), found by walking the task tree from the root."""
    root = trio.lowlevel.current_root_task()
    assert root is not None
    pending = [root]
    total = 0
    while pending:
        task = pending.pop()
        total += task.name.startswith(name_prefix)
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return total
