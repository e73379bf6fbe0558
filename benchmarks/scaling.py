"""Scaling out on one machine: two workers on Redis against one process on the memory broker.

    PYTHONPATH=. python benchmarks/scaling.py [--subscribers 1000] [--events 200] [--runs 3]

Starts a redis-server of its own (AOF with ``appendfsync everysec``), then, alternately:

* ``trio-sse serve`` (one process, the in-memory broker), and
* ``trio-sse serve --workers 2 --broker redis://...``,

none of them pinned to a core, and drives each with the same fan-out: ``--subscribers``
streams, ``--publishers`` publishers (4) POSTing ``--events`` events between them, each
one after another, deliveries per second from the first POST to the last delivery. (One
sequential publisher measures the publish round trip more than the fan-out: each POST
waits for Redis while the workers wait for the next event.) A stream counts as subscribed once its
first chunk (the ``: stream open`` comment, sent after the subscription exists) has
arrived: with several workers, no one process's ``/stats`` sees every subscriber.

On a 2-core machine the load client shares the cores with the workers, so the ratio
says what one such machine gains from a second worker, not what a second core would give
a server alone; the client's busy fraction is printed beside each run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import trio

from benchmarks.scenarios import (
    Publisher,
    Tally,
    Target,
    client_cpu_seconds,
    count_events,
    cpu_seconds,
    open_many_with_rest,
    open_stream,
)
from tests.redis_server import RedisServer
from tests.test_cli import listening_process

OPENED = b": stream open"


def process_tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and of its children (a parent's workers)."""
    total = cpu_seconds(pid)
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            total += cpu_seconds(int(child))
    return total


async def open_subscribed(target: Target) -> tuple[trio.socket.SocketType, bytes]:
    """A stream whose first chunk has arrived: its subscription exists."""
    sock, received = await open_stream(target)
    with trio.fail_after(60):
        while OPENED not in received:
            data = await sock.recv(65536)
            if not data:
                raise ConnectionError("the stream ended before its first chunk")
            received += data
    return sock, received.split(OPENED, 1)[1]


async def events_per_write(target: Target) -> float:
    """Events per write in the process that answers ``/metrics`` (with workers, one of them).

    Every write is one observation of ``trio_sse_publish_to_write_seconds``.
    """
    async with httpx.AsyncClient(base_url=target.url) as http:
        text = (await http.get("/metrics")).text
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("trio_sse_delivered_total", "trio_sse_publish_to_write_seconds_count"):
            values[name] = float(value)
    return values["trio_sse_delivered_total"] / values["trio_sse_publish_to_write_seconds_count"]


async def fanout_run(
    target: Target, *, subscribers: int, events: int, publishers: int
) -> tuple[float, float, float]:
    """One run: deliveries per second, the client's busy fraction, and the server's CPU
    seconds per delivery (its workers' too), all from the first POST to the last delivery."""
    opened = await open_many_with_rest(target, subscribers, 100, open_subscribed)
    try:
        tally = Tally(expected=subscribers * events)
        async with trio.open_nursery() as nursery:
            for sock, rest in opened:
                nursery.start_soon(count_events, sock, rest, tally)
            opened_publishers = [await Publisher.open(target) for _ in range(publishers)]
            client_before = client_cpu_seconds()
            server_before = process_tree_cpu(target.pid)
            start = trio.current_time()

            async def publish_share(publisher: Publisher, count: int) -> None:
                async with publisher:
                    for _ in range(count):
                        await publisher.publish("x" * 64)

            async with trio.open_nursery() as publishing:
                for index, publisher in enumerate(opened_publishers):
                    share = events // publishers + (index < events % publishers)
                    publishing.start_soon(publish_share, publisher, share)
            with trio.fail_after(300):
                await tally.done.wait()
            elapsed = trio.current_time() - start
            client = client_cpu_seconds() - client_before
            server = process_tree_cpu(target.pid) - server_before
            nursery.cancel_scope.cancel()
    finally:
        for sock, _ in opened:
            sock.close()
    return tally.expected / elapsed, client / elapsed, server / tally.expected


@asynccontextmanager
async def serving(command: list[str]) -> AsyncIterator[Target]:
    async with listening_process(command, startup_timeout=60) as (process, (host, port)):
        yield Target(host, port, process.pid)


async def main(args: argparse.Namespace) -> None:
    serve = [sys.executable, "-m", "trio_sse.cli", "serve", "--port", "0"]
    with tempfile.TemporaryDirectory() as directory:
        redis = RedisServer(Path(directory), appendfsync="everysec")
        redis.start()
        try:
            setups = {
                "1 process, memory broker": serve,
                "2 workers, Redis": [*serve, "--workers", "2", "--broker", redis.url],
            }
            figures: dict[str, list[float]] = {name: [] for name in setups}
            for run in range(args.runs):
                for name, command in setups.items():
                    async with serving(command) as target:
                        assert redis.process is not None
                        redis_before = cpu_seconds(redis.process.pid)
                        cpu_before = process_tree_cpu(target.pid)
                        start = trio.current_time()
                        rate, busy, per_delivery = await fanout_run(
                            target,
                            subscribers=args.subscribers,
                            events=args.events,
                            publishers=args.publishers,
                        )
                        coalesced = await events_per_write(target)
                        elapsed = trio.current_time() - start
                        cpu = process_tree_cpu(target.pid) - cpu_before
                        redis_cpu = cpu_seconds(redis.process.pid) - redis_before
                    figures[name].append(rate)
                    # (The busy fractions cover the whole run, connecting included.)
                    print(
                        f"run {run + 1}, {name}: {rate:,.0f} deliveries/s, server CPU "
                        f"{per_delivery * 1e6:.1f} µs per delivery, {coalesced:.1f} events per "
                        "write; busy (of one CPU): "
                        f"server {cpu / elapsed:.0%}, Redis {redis_cpu / elapsed:.0%}, "
                        f"client during the fan-out {busy:.0%}",
                        flush=True,
                    )
        finally:
            redis.stop()
    one, two = (statistics.median(values) for values in figures.values())
    print(
        f"median of {args.runs}: 1 process {one:,.0f}, 2 workers on Redis {two:,.0f} "
        f"deliveries/s: {two / one:.2f}x on {os.cpu_count()} CPUs"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--publishers",
        type=int,
        default=4,
        help="publishers POSTing at once, each one event after another",
    )
    trio.run(main, parser.parse_args())
