"""A rolling restart without a reconnect storm: ``--drain-window`` against none.

    PYTHONPATH=. python benchmarks/rolling_restart.py [--clients 2000] [--window 10]

Two ``trio-sse serve`` processes on one Redis, on two ports (a stand-in for two
workers behind one load balancer), and ``--clients`` raw-socket SSE clients, half on
each. One server gets SIGTERM; each of its clients, when its stream ends, waits the
last ``retry`` its stream told it (as an EventSource does) and reconnects to the
survivor. Run once with ``--drain-window 0`` (today's shutdown: every stream ends at
once) and once with ``--drain-window W``; for each, the reconnects per 100 ms bin
that the clients sent to the survivor (and that it answered with 200), the peak bin,
and how long the whole move took. Both servers and the clients share this machine's
cores, so absolute times are loaded ones; the peaks are what to compare.
"""

from __future__ import annotations

import argparse
import collections
import re
import signal
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import trio

from tests.redis_server import RedisServer
from tests.test_cli import SERVE, listening_process
from tests.wire import wait_for_remote_subscribers
from trio_sse.file_limit import raise_open_file_limit

BIN = 0.1  # seconds
_RETRY = re.compile(rb"retry: (\d+)\n")
_END = b"\r\n0\r\n\r\n"  # the terminating chunk of a clean end
# The EventSource default, used if a stream told none.
_DEFAULT_RETRY_MS = 3000
_OPEN_TIMEOUT = 60.0
_SETUP_ATTEMPTS = 5


@dataclass
class Record:
    opened: int = 0
    reconnects_sent: list[float] = field(default_factory=list)
    reconnects_ok: list[float] = field(default_factory=list)
    failed: int = 0
    setup_retries: int = 0
    clean_ends: int = 0
    all_opened: trio.Event = field(default_factory=trio.Event)
    all_moved: trio.Event = field(default_factory=trio.Event)


@dataclass
class Plan:
    """What every client of one run shares."""

    survivor: tuple[str, int]
    clients: int
    moving: int  # the clients of the server that is stopped
    record: Record
    epoch: float = 0.0  # when SIGTERM was sent


async def _open(address: tuple[str, int]) -> tuple[trio.SocketStream, bytes]:
    """Open a stream; return the socket and the bytes after the response head."""
    stream = await trio.open_tcp_stream(*address)
    try:
        request = b"GET /events/rolling HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
        await stream.send_all(request)
        received = b""
        while b"\r\n\r\n" not in received:
            data = await stream.receive_some(65536)
            if not data:
                raise ConnectionError("closed before the response head")
            received += data
        head, _, rest = received.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise ConnectionError(head.split(b"\r\n")[0].decode())
    except BaseException:
        await stream.aclose()
        raise
    return stream, rest


async def _client(first: tuple[str, int], plan: Plan) -> None:
    """One EventSource-like client: on its stream's end, wait its retry, move over."""
    record, survivor = plan.record, plan.survivor
    # Setting up: a connection refused in the opening rush is tried again (counted);
    # only the reconnects after SIGTERM are measured.
    for attempt in range(_SETUP_ATTEMPTS):
        try:
            with trio.fail_after(_OPEN_TIMEOUT):
                stream, received = await _open(first)
            break
        except (OSError, ConnectionError):
            if attempt == _SETUP_ATTEMPTS - 1:
                raise
            record.setup_retries += 1
            await trio.sleep(0.2 * (attempt + 1))
    record.opened += 1
    if record.opened == plan.clients:
        record.all_opened.set()
    if first == survivor:
        async with stream:
            await trio.sleep_forever()
    async with stream:
        # Read until the server ends the stream: cleanly, or by closing the socket.
        while not received.endswith(_END):
            try:
                data = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                data = b""
            if not data:
                break
            received += data
        else:
            record.clean_ends += 1
    retries = _RETRY.findall(received)
    retry_ms = int(retries[-1]) if retries else _DEFAULT_RETRY_MS
    await trio.sleep(retry_ms / 1000)
    record.reconnects_sent.append(trio.current_time() - plan.epoch)
    try:
        with trio.fail_after(_OPEN_TIMEOUT):
            moved, _ = await _open(survivor)
    except (OSError, ConnectionError, trio.TooSlowError):
        record.failed += 1
        return
    finally:
        if len(record.reconnects_sent) == plan.moving:
            record.all_moved.set()
    record.reconnects_ok.append(trio.current_time() - plan.epoch)
    async with moved:
        await trio.sleep_forever()


def _peak(times: list[float]) -> tuple[int, float]:
    """The fullest 100 ms bin: its count and its start (seconds after SIGTERM)."""
    if not times:
        return 0, 0.0
    bins = collections.Counter(int(t // BIN) for t in times)
    index, count = max(bins.items(), key=lambda item: (item[1], -item[0]))
    return count, index * BIN


@dataclass
class Outcome:
    window: float
    record: Record
    exited_after: float


async def one_run(redis_url: str, clients: int, window: float) -> Outcome:
    """Two servers, ``clients`` clients, SIGTERM to one of them with ``--drain-window``."""
    options = ["--port", "0", "--broker", redis_url, "--graceful-timeout", "0.5"]
    stopping = [*SERVE, *options, "--drain-window", str(window)]
    staying = [*SERVE, *options]
    record = Record()
    moving = clients // 2
    exited_after = -1.0
    async with (
        listening_process(staying) as (_, survivor),
        listening_process(stopping, stop_timeout=window + 30) as (process, doomed),
        trio.open_nursery() as nursery,
    ):
        plan = Plan(survivor, clients, moving, record)
        for index in range(clients):
            nursery.start_soon(_client, doomed if index < moving else survivor, plan)
        with trio.fail_after(_OPEN_TIMEOUT * 2):
            await record.all_opened.wait()
        for address, count in ((doomed, moving), (survivor, clients - moving)):
            async with httpx.AsyncClient(base_url=f"http://{address[0]}:{address[1]}") as http:
                await wait_for_remote_subscribers(http, count, timeout=60)
        plan.epoch = trio.current_time()
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(window + 60):
            await process.wait()
            exited_after = trio.current_time() - plan.epoch
            await record.all_moved.wait()
            # The last reconnects sent: let them be answered (or fail).
            while len(record.reconnects_ok) + record.failed < moving:  # noqa: ASYNC110
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    return Outcome(window, record, exited_after)


def _last(times: list[float]) -> float:
    return max(times, default=0.0)


def _peak_text(times: list[float]) -> str:
    count, at = _peak(times)
    return f"{count} (at {at:.1f} s)"


def _report(outcomes: list[Outcome], clients: int) -> None:
    moving = clients // 2
    print(f"\n{clients} clients, {moving} of them on the server stopped; bins of 100 ms:")
    rows: list[tuple[str, Callable[[Outcome], str]]] = [
        ("--drain-window (s)", lambda o: f"{o.window:g}"),
        ("peak reconnects sent / bin", lambda o: _peak_text(o.record.reconnects_sent)),
        ("peak reconnects answered / bin", lambda o: _peak_text(o.record.reconnects_ok)),
        ("streams ended cleanly", lambda o: f"{o.record.clean_ends}/{moving}"),
        ("reconnects answered 200", lambda o: f"{len(o.record.reconnects_ok)}/{moving}"),
        ("reconnects failed", lambda o: str(o.record.failed)),
        ("last reconnect answered after", lambda o: f"{_last(o.record.reconnects_ok):.1f} s"),
        ("stopped server exited after", lambda o: f"{o.exited_after:.2f} s"),
        ("(opens retried while setting up)", lambda o: str(o.record.setup_retries)),
    ]
    for name, value in rows:
        print(f"  {name:<32}" + "".join(f"{value(o):>20}" for o in outcomes))


async def main(args: argparse.Namespace) -> None:
    raise_open_file_limit()
    outcomes = []
    with tempfile.TemporaryDirectory() as directory:
        redis = RedisServer(Path(directory), appendfsync="everysec")
        await trio.to_thread.run_sync(redis.start)
        try:
            for window in (0.0, args.window):
                outcome = await one_run(redis.url, args.clients, window)
                print(
                    f"--drain-window {window:g}: peak {_peak_text(outcome.record.reconnects_sent)}",
                    file=sys.stderr,
                )
                outcomes.append(outcome)
        finally:
            redis.stop()
    _report(outcomes, args.clients)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--window", type=float, default=10.0)
    trio.run(main, parser.parse_args())
