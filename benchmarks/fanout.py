"""Fan-out throughput of `trio-sse serve`: N subscribers, E events posted one after another.

    PYTHONPATH=. python benchmarks/fanout.py [--subscribers 1000] [--events 200] [--payload 64]
                                            [--publishers 1] [--write-interval S] [--runs 3]

The server runs in its own process, pinned to CPU 0 when `taskset` exists, so the
figure is per-core efficiency; the subscribers (raw sockets, counting `data:` lines)
and the publisher run here. Reports, per run and as the median: deliveries per
second from the first POST to the last delivery, and the server's CPU time per
delivered event.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
from dataclasses import dataclass, field

import httpx
import trio

from tests.test_cli import listening_process
from tests.wire import wait_for_remote_subscribers

DATA_MARK = b"\ndata: "


@dataclass
class Tally:
    """Deliveries counted across all subscribers; ``done`` is set at ``expected``."""

    expected: int
    events: int = 0
    done: trio.Event = field(default_factory=trio.Event)

    def add(self, count: int) -> None:
        self.events += count
        if self.events >= self.expected:
            self.done.set()


async def subscriber(host: str, port: int, tally: Tally, connected: trio.Event) -> None:
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        await stream.send_all(f"GET /events/bench HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        connected.set()
        tail = b""
        while data := await stream.receive_some(65536):
            # Keep a few bytes from the last read so a mark split across reads counts.
            window = tail + data
            tally.add(window.count(DATA_MARK))
            tail = window[-(len(DATA_MARK) - 1) :]


def server_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def one_run(args: argparse.Namespace, host: str, port: int, pid: int) -> tuple[float, float]:
    tally = Tally(expected=args.events * args.subscribers)
    payload = "x" * args.payload
    async with (
        trio.open_nursery() as nursery,
        httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=30) as http,
    ):
        for _ in range(args.subscribers):
            connected = trio.Event()
            nursery.start_soon(subscriber, host, port, tally, connected)
            await connected.wait()
        await wait_for_remote_subscribers(http, args.subscribers, timeout=60)
        cpu_before = server_cpu_seconds(pid)
        start = trio.current_time()

        async def publisher(count: int) -> None:
            for _ in range(count):
                response = await http.post("/events/bench", json={"data": payload})
                response.raise_for_status()

        async with trio.open_nursery() as publishers:
            for i in range(args.publishers):
                share = args.events // args.publishers + (i < args.events % args.publishers)
                publishers.start_soon(publisher, share)
        with trio.fail_after(120):
            await tally.done.wait()
        elapsed = trio.current_time() - start
        cpu = server_cpu_seconds(pid) - cpu_before
        nursery.cancel_scope.cancel()
    return tally.expected / elapsed, cpu / tally.expected * 1e6


async def main(args: argparse.Namespace) -> None:
    command = [sys.executable, "-m", "trio_sse.cli", "serve", "--port", "0"]
    if shutil.which("taskset"):
        command = ["taskset", "-c", "0", *command]
    options = ["--history", str(args.events)]
    if args.write_interval is not None:
        options += ["--write-interval", str(args.write_interval)]
    async with listening_process([*command, *options]) as (process, (host, port)):
        rates, costs = [], []
        for run in range(args.runs):
            rate, cost = await one_run(args, host, port, process.pid)
            rates.append(rate)
            costs.append(cost)
            print(f"run {run + 1}: {rate:,.0f} deliveries/s, {cost:.1f} µs CPU per delivery")
    print(
        f"median of {args.runs}: {statistics.median(rates):,.0f} deliveries/s, "
        f"{statistics.median(costs):.1f} µs server CPU per delivery "
        f"({args.subscribers} subscribers x {args.events} events of {args.payload} B, "
        f"{args.publishers} publisher(s), write interval "
        f"{'default' if args.write_interval is None else args.write_interval})"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--payload", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--publishers", type=int, default=1, help="concurrent publishers sharing the events"
    )
    parser.add_argument(
        "--write-interval", type=float, default=None, help="passed to trio-sse serve"
    )
    trio.run(main, parser.parse_args())
