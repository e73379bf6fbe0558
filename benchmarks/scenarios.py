"""The four scenarios of `nox -s bench`, run against any server with the trio-sse HTTP contract.

Each scenario talks to a server in another process (``GET``/``POST /events/<topic>``,
``GET /stats``) through raw trio sockets, so that the same client measures both
servers, and reads the server's CPU time and RSS from ``/proc/<pid>``. The client is
kept lean (no SSE parsing beyond what a figure needs) because it shares a 2-core
machine with the server; ``client_busy`` reports how close it came to its own limit.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import statistics
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import trio

TOPIC = "bench"
DATA_MARK = b"data: "
# The server answers the head at once; a connection still waiting after this is lost.
HEAD_TIMEOUT = 60.0


@dataclass(frozen=True)
class Target:
    """A server under test: where it listens and which process to measure."""

    host: str
    port: int
    pid: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (VmRSS)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def client_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def subscribers(http: httpx.AsyncClient) -> int:
    count: int = (await http.get("/stats")).json()["subscribers"]
    return count


async def wait_for_subscribers(
    http: httpx.AsyncClient, satisfied: Callable[[int], bool], within: float, poll: float = 0.01
) -> float:
    """Poll the server's /stats until ``satisfied(subscribers)``; return the seconds taken."""
    start = trio.current_time()
    with trio.fail_after(within):
        # Another process: its /stats is the only view of its subscribers.
        while not satisfied(await subscribers(http)):  # noqa: ASYNC110
            await trio.sleep(poll)
    return trio.current_time() - start


async def open_stream(target: Target) -> tuple[trio.socket.SocketType, bytes]:
    """Connect, send ``GET /events/<topic>``, and read up to the end of the response head.

    Returns the socket and whatever body bytes came with the head.
    """
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        await sock.connect((target.host, target.port))
        request = (
            f"GET /events/{TOPIC} HTTP/1.1\r\nHost: {target.host}\r\n"
            "Accept: text/event-stream\r\n\r\n"
        )
        await sock.send(request.encode())
        received = b""
        with trio.fail_after(HEAD_TIMEOUT):
            while b"\r\n\r\n" not in received:
                data = await sock.recv(65536)
                if not data:
                    raise ConnectionError("the server closed the connection before its head")
                received += data
    except BaseException:
        sock.close()
        raise
    head, _, rest = received.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        sock.close()
        raise ConnectionError(f"unexpected response: {head[:60]!r}")
    return sock, rest


def close_rst(sock: trio.socket.SocketType) -> None:
    # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class Publisher(trio.abc.AsyncResource):
    """POSTs over one keep-alive connection: a raw client, far cheaper than httpx.

    The publisher is part of the measured loop (each POST waits for the one before),
    so its own cost would otherwise be counted against the server.
    """

    def __init__(self, stream: trio.SocketStream, host: str) -> None:
        self._stream = stream
        self._host = host
        self._buffer = b""

    @classmethod
    async def open(cls, target: Target) -> Publisher:
        return cls(await trio.open_tcp_stream(target.host, target.port), target.host)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def publish(self, data: str) -> str:
        """POST ``{"data": data}`` and return the id the server answered with."""
        body = json.dumps({"data": data}).encode()
        head = (
            f"POST /events/{TOPIC} HTTP/1.1\r\nHost: {self._host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        await self._stream.send_all(head.encode() + body)
        while b"\r\n\r\n" not in self._buffer:
            await self._receive()
        head_bytes, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        status = head_bytes.split(b" ", 2)[1]
        length = 0
        for line in head_bytes.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(self._buffer) < length:
            await self._receive()
        answer, self._buffer = self._buffer[:length], self._buffer[length:]
        if status != b"202":
            raise RuntimeError(f"publish failed: {status.decode()} {answer[:200]!r}")
        event_id: str = json.loads(answer)["id"]
        return event_id

    async def _receive(self) -> None:
        data = await self._stream.receive_some(65536)
        if not data:
            raise ConnectionError("the server closed the publisher's connection")
        self._buffer += data


@dataclass
class Tally:
    """Deliveries counted across all subscribers; ``done`` is set at ``expected``."""

    expected: int
    count: int = 0
    done: trio.Event = field(default_factory=trio.Event)

    def add(self, count: int) -> None:
        self.count += count
        if self.count >= self.expected:
            self.done.set()


async def count_events(sock: trio.socket.SocketType, first: bytes, tally: Tally) -> None:
    """Count ``data:`` lines until cancelled: the cheapest way to count events."""
    tail = b""
    data = first
    while True:
        # Keep a few bytes from the last read so a mark split across reads counts once.
        window = tail + data
        tally.add(window.count(DATA_MARK))
        tail = window[-(len(DATA_MARK) - 1) :]
        data = await sock.recv(65536)
        if not data:
            return


async def open_many(
    target: Target,
    count: int,
    *,
    concurrency: int,
    opener: Callable[[Target], Awaitable[tuple[trio.socket.SocketType, bytes]]] = open_stream,
) -> list[trio.socket.SocketType]:
    """Open ``count`` streams with ``opener``, at most ``concurrency`` connecting at once."""
    return [sock for sock, _ in await open_many_with_rest(target, count, concurrency, opener)]


async def open_many_with_rest(
    target: Target,
    count: int,
    concurrency: int,
    opener: Callable[[Target], Awaitable[tuple[trio.socket.SocketType, bytes]]] = open_stream,
) -> list[tuple[trio.socket.SocketType, bytes]]:
    """As :func:`open_many`, with the bytes each stream received past its head."""
    opened: list[tuple[trio.socket.SocketType, bytes]] = []
    limiter = trio.CapacityLimiter(concurrency)

    async def one() -> None:
        async with limiter:
            opened.append(await opener(target))

    try:
        async with trio.open_nursery() as nursery:
            for _ in range(count):
                nursery.start_soon(one)
    except BaseException:
        for sock, _ in opened:
            sock.close()
        raise
    return opened


# --- fan-out ----------------------------------------------------------------------


@dataclass(frozen=True)
class FanoutResult:
    deliveries_per_second: float
    cpu_per_delivery_us: float
    client_busy: float  # the client's CPU time over the wall time: near 1.0 means client-bound


async def fanout(
    target: Target, *, subscriber_count: int, events: int, payload: int, runs: int
) -> list[FanoutResult]:
    """``subscriber_count`` streams; one publisher POSTs ``events`` one after another.

    Per run: deliveries per second from the first POST to the last delivery, and the
    server's CPU time per delivery.
    """
    results = []
    data = "x" * payload
    async with httpx.AsyncClient(base_url=target.url, timeout=60) as http:
        for _ in range(runs):
            socks = await open_many(target, subscriber_count, concurrency=100)
            tally = Tally(expected=subscriber_count * events)
            try:
                async with trio.open_nursery() as nursery:
                    for sock in socks:
                        nursery.start_soon(count_events, sock, b"", tally)
                    await wait_for_subscribers(http, lambda n: n >= subscriber_count, 60)
                    # Opened now: servers close keep-alive connections idle for 5 s.
                    publisher = await Publisher.open(target)
                    cpu_before, client_before = cpu_seconds(target.pid), client_cpu_seconds()
                    start = trio.current_time()
                    async with publisher:
                        for _ in range(events):
                            await publisher.publish(data)
                    with trio.fail_after(300):
                        await tally.done.wait()
                    elapsed = trio.current_time() - start
                    cpu = cpu_seconds(target.pid) - cpu_before
                    client = client_cpu_seconds() - client_before
                    nursery.cancel_scope.cancel()
            finally:
                for sock in socks:
                    sock.close()
            await wait_for_subscribers(http, lambda n: n == 0, 60)
            results.append(
                FanoutResult(
                    deliveries_per_second=tally.expected / elapsed,
                    cpu_per_delivery_us=cpu / tally.expected * 1e6,
                    client_busy=client / elapsed,
                )
            )
    return results


# --- latency ----------------------------------------------------------------------


@dataclass(frozen=True)
class LatencyResult:
    p50_ms: float
    p99_ms: float
    max_ms: float
    samples: int


async def read_latencies(
    sock: trio.socket.SocketType, first: bytes, latencies: list[float]
) -> None:
    """Record, for each event, now minus the send time (perf_counter) carried in its data."""
    buffer = first
    while True:
        while (start := buffer.find(DATA_MARK)) >= 0:
            stop = buffer.find(b"|", start)
            if stop < 0:
                break
            sent = float(buffer[start + len(DATA_MARK) : stop])
            latencies.append(trio.current_time() - sent)
            buffer = buffer[stop:]
        data = await sock.recv(65536)
        if not data:
            return
        buffer += data


async def latency(
    target: Target, *, subscriber_count: int, rate: float, events: int, payload: int
) -> LatencyResult:
    """``subscriber_count`` streams; one publisher at ``rate`` events/s, each event with its time.

    Latency is from just before the POST to the subscriber reading the event, so it
    includes the publish request. Both sides use this process's clock.
    """
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=target.url, timeout=60) as http:
        socks = await open_many(target, subscriber_count, concurrency=100)
        try:
            async with trio.open_nursery() as nursery:
                for sock in socks:
                    nursery.start_soon(read_latencies, sock, b"", latencies)
                await wait_for_subscribers(http, lambda n: n >= subscriber_count, 60)
                async with await Publisher.open(target) as publisher:
                    next_at = trio.current_time()
                    for _ in range(events):
                        next_at += 1 / rate
                        await trio.sleep_until(next_at)
                        now = trio.current_time()
                        await publisher.publish(f"{now:.9f}|".ljust(payload, "x"))
                with trio.fail_after(60):
                    while len(latencies) < subscriber_count * events:  # noqa: ASYNC110
                        await trio.sleep(0.05)
                nursery.cancel_scope.cancel()
        finally:
            for sock in socks:
                sock.close()
    ordered = sorted(latencies)
    return LatencyResult(
        p50_ms=statistics.median(ordered) * 1e3,
        p99_ms=ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3,
        max_ms=ordered[-1] * 1e3,
        samples=len(ordered),
    )


# --- idle connections ---------------------------------------------------------------


@dataclass(frozen=True)
class IdleResult:
    open_seconds: float
    bytes_per_connection: float
    rss_before: int
    rss_after: int


async def idle(target: Target, *, connections: int) -> IdleResult:
    """Open ``connections`` streams as fast as the server takes them; measure RSS per stream.

    The open time runs from the first connect until the server reports every subscriber.
    """
    async with httpx.AsyncClient(base_url=target.url, timeout=60) as http:
        # One stream first, so that code paths loaded on first use are not counted.
        warm, _ = await open_stream(target)
        warm.close()
        await wait_for_subscribers(http, lambda n: n == 0, 30)
        rss_before = rss_bytes(target.pid)
        start = trio.current_time()
        socks = await open_many(target, connections, concurrency=256)
        try:
            # Every poll is a request the server under test must answer: often enough
            # for a figure in seconds, rarely enough not to slow down what it measures.
            await wait_for_subscribers(http, lambda n: n >= connections, 60, poll=0.05)
            open_seconds = trio.current_time() - start
            # Let the server finish whatever follows the subscription before measuring.
            await trio.sleep(1)
            rss_after = rss_bytes(target.pid)
        finally:
            for sock in socks:
                sock.close()
        await wait_for_subscribers(http, lambda n: n == 0, 60)
    return IdleResult(
        open_seconds=open_seconds,
        bytes_per_connection=(rss_after - rss_before) / connections,
        rss_before=rss_before,
        rss_after=rss_after,
    )


# --- churn ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ChurnResult:
    dropped: int
    seconds_to_zero: float
    subscribers_left: int
    rss_growth: int  # across the measured churn, after the warm-up
    warm_up_growth: int  # across the warm-up, from a fresh server


async def _churn_for(target: Target, *, rate: float, seconds: float, hold: float) -> int:
    """Open streams at ``rate``/s for ``seconds``; each is dropped after ``hold`` s (RST or FIN)."""
    dropped = 0

    async def one(use_rst: bool) -> None:
        nonlocal dropped
        sock, _ = await open_stream(target)
        await trio.sleep(hold)
        if use_rst:
            close_rst(sock)
        else:
            sock.close()
        dropped += 1

    async with trio.open_nursery() as nursery:
        next_at = trio.current_time()
        for i in range(round(rate * seconds)):
            nursery.start_soon(one, i % 2 == 0)
            next_at += 1 / rate
            await trio.sleep_until(next_at)
    return dropped


async def churn(
    target: Target, *, rate: float, seconds: float, warm_up: float = 20.0, hold: float = 1.0
) -> ChurnResult:
    """Connections dropped at ``rate``/s, half RST and half FIN, each held ``hold`` s first.

    A warm-up churn first (``warm_up`` s): a fresh server's RSS rises during its first
    seconds of churn and then levels off (trio-sse: +2.3 MiB over a 10 s warm-up, but
    +0.04 MiB over the 10 s after a 20 s one), while its Python heap does not grow
    (tracemalloc), so this is the allocator reaching its high-water mark, not a leak.
    Both are reported. Then RSS before, the churn, the time from the last drop until
    the server reports no subscriber (or 30 s), and RSS after.
    """
    async with httpx.AsyncClient(base_url=target.url, timeout=60) as http:
        rss_fresh = rss_bytes(target.pid)
        await _churn_for(target, rate=rate, seconds=warm_up, hold=hold)
        await wait_for_subscribers(http, lambda n: n == 0, 30)
        rss_before = rss_bytes(target.pid)
        dropped = await _churn_for(target, rate=rate, seconds=seconds, hold=hold)
        last_drop = trio.current_time()
        with trio.move_on_after(30):
            while await subscribers(http) != 0:  # noqa: ASYNC110 - another process
                await trio.sleep(0.001)
        seconds_to_zero = trio.current_time() - last_drop
        left = await subscribers(http)
        rss_after = rss_bytes(target.pid)
    return ChurnResult(
        dropped=dropped,
        seconds_to_zero=seconds_to_zero,
        subscribers_left=left,
        rss_growth=rss_after - rss_before,
        warm_up_growth=rss_before - rss_fresh,
    )
