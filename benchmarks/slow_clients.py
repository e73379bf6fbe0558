"""A reader's latency next to clients that never read, under a steady stream of events.

    PYTHONPATH=. python benchmarks/slow_clients.py [--stalled 100] [--seconds 10]
                                                   [--rate 100] [--size 10240]

One real Hypercorn in this process, one topic published at ``--rate`` events of
``--size`` bytes a second (1 MB/s by default) for ``--seconds``. A raw-socket SSE
client reads every event; each event carries its publish time, so the reader's
latency is publish to parse, on one clock. The run is done twice: with the reader
alone, then next to ``--stalled`` clients that never read (a 4 KiB receive buffer,
so the kernel advertises a tiny window at once), which the server drops as slow.
Prints the reader's p50, p99 and max for each, and how many stalled clients were
dropped. Server and client share this process (and its CPU), as in
``tests/test_slow_clients.py``, whose behavioural checks these figures complement.
"""

from __future__ import annotations

import argparse
import functools
from dataclasses import dataclass

import trio

from tests.wire import SSEConnection, running_server
from trio_sse import ServerSentEvent

STALLED_RECEIVE_BUFFER = 4096
# Short, so that the kernel also aborts the stalled connections during a run.
TCP_USER_TIMEOUT = 5.0


@dataclass(frozen=True)
class Run:
    stalled: int
    latencies: list[float]
    published: int
    received: int
    dropped: int


def has_more_events_than(count: int, connection: SSEConnection) -> bool:
    return len(connection.events) > count


async def run(args: argparse.Namespace, stalled_count: int) -> Run:
    async with running_server(tcp_user_timeout=TCP_USER_TIMEOUT) as server:
        reader = await SSEConnection.open(server, "/events/load")
        stalled: list[SSEConnection] = []
        try:
            for _ in range(stalled_count):
                # One by one, so that those opened before a failure are closed.
                stalled.append(  # noqa: PERF401
                    await SSEConnection.open(
                        server, "/events/load", receive_buffer=STALLED_RECEIVE_BUFFER
                    )
                )
            await server.wait_for_subscribers(stalled_count + 1)
            total = int(args.seconds * args.rate)
            latencies: list[float] = []
            received = 0
            start = trio.current_time()

            async def publish() -> None:
                padding = "x" * args.size
                for seq in range(total):
                    await trio.sleep_until(start + seq / args.rate)
                    stamp = f"{seq} {trio.current_time():.6f} "
                    event = ServerSentEvent(stamp + padding[len(stamp) :])
                    await server.broker.publish("load", event)

            async def read() -> None:
                nonlocal received
                while received < total:
                    before = len(reader.events)
                    await reader.read_until(functools.partial(has_more_events_than, before))
                    now = trio.current_time()
                    latencies.extend(
                        now - float(event.data.split(" ", 2)[1]) for event in reader.events[before:]
                    )
                    received += len(reader.events) - before
                    # Free what is parsed: a whole run of events would pile up here.
                    del reader.events[:]
                    reader.body.clear()

            with trio.fail_after(args.seconds + 30):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(publish)
                    nursery.start_soon(read)
            dropped = server.broker.statistics().dropped
            return Run(stalled_count, latencies, total, received, dropped)
        finally:
            for connection in stalled:
                await connection.close_rst()
            await reader.close_fin()


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def report(result: Run) -> None:
    ms = [latency * 1e3 for latency in result.latencies]
    print(
        f"reader next to {result.stalled:>3} stalled   p50 {percentile(ms, 0.50):6.2f} ms   "
        f"p99 {percentile(ms, 0.99):7.2f} ms   max {max(ms):7.2f} ms   "
        f"(got {result.received} of {result.published}; dropped as slow: {result.dropped})"
    )


async def main(args: argparse.Namespace) -> None:
    print(
        f"{args.rate} events/s of {args.size} B for {args.seconds:g} s; "
        "latency from publish to the reader's parse"
    )
    for stalled in (0, args.stalled):
        report(await run(args, stalled))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stalled", type=int, default=100, help="clients that never read")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each run")
    parser.add_argument("--rate", type=float, default=100.0, help="events per second")
    parser.add_argument("--size", type=int, default=10 * 1024, help="bytes per event")
    trio.run(main, parser.parse_args())
