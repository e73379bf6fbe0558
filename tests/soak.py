"""Soak: many connect/disconnect cycles against one in-process server, then a leak check.

Each cycle opens one event stream on a raw socket and ends it one of five ways,
while a publisher keeps 16 KiB events flowing to the topic:

* ``fin``: read the response head, close (FIN);
* ``rst``: read the response head, abort (RST);
* ``stall``: a tiny receive window, never read while events pile up, then close;
* ``mid_event``: read into the stream until part of an event arrived, then abort,
  so the server is cut off in the middle of writing an event;
* ``mid_request``: send half the request head, then close.

After the cycles the server must be back where it started: no subscriber, the Trio
task count of the baseline, and (measured after a warm-up, since Python's
allocator keeps what it once grew) a resident set within a bound.

``python -m tests.soak --cycles 100000`` runs the long variant (``nox -s soak``).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import sys
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from typing import Final

import trio
import trio.testing

from tests.wire import Server, SSEConnection, count_tasks, running_server, task_count_returns_to
from trio_sse import MemoryBroker
from trio_sse.protocol import ServerSentEvent
from trio_sse.server import use_server_gc_policy

KINDS: Final = ("fin", "rst", "stall", "mid_event", "mid_request")
TOPIC: Final = "soak"
_STALL_SECONDS: Final = 0.02
# What the process may hold beyond the warm-up before a full collection: garbage that
# waits for the collector is bounded by its thresholds, not by the number of cycles.
UNCOLLECTED_GROWTH_LIMIT: Final = 16 * 1024 * 1024
_CYCLE_TIMEOUT: Final = 10.0


def rss_bytes() -> int:
    """This process's resident set size (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


@dataclass
class SoakResult:
    cycles: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    rss_growth: int = 0  # bytes, from after the warm-up to after the run
    rss_growth_uncollected: int = 0  # the same, before a full collection
    subscribers_after: int = -1
    tasks_back_to_baseline: bool = False
    seconds_to_clean: float = 0.0


async def one_cycle(server: Server, kind: str) -> None:
    path = f"/events/{TOPIC}"
    if kind == "mid_request":
        host, port = server.host_port
        stream = await trio.open_tcp_stream(host, port)
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAcc".encode())
        await stream.aclose()
        return
    if kind == "stall":
        connection = await SSEConnection.open(server, path, receive_buffer=4096)
        await trio.sleep(_STALL_SECONDS)  # the stall itself: not reading, on purpose
        await connection.close_fin()
        return
    connection = await SSEConnection.open(server, path)
    if kind == "fin":
        await connection.close_fin()
    elif kind == "rst":
        await connection.close_rst()
    elif kind == "mid_event":
        # Past the stream's opening comment, into the first (16 KiB) event.
        await connection.read_until(lambda c: b"data: x" in c.body)
        await connection.close_rst()
    else:
        raise ValueError(f"unknown cycle kind {kind!r}")


async def _publish_forever(server: Server) -> None:
    event = ServerSentEvent("x" * 16 * 1024)
    while True:
        await server.broker.publish(TOPIC, event)
        await trio.sleep(0.005)


async def run_cycles(server: Server, cycles: int, concurrency: int, tally: Counter[str]) -> None:
    kinds = itertools.islice(itertools.cycle(KINDS), cycles)

    async def worker() -> None:
        for kind in kinds:  # shared iterator: the workers split the cycles between them
            with trio.fail_after(_CYCLE_TIMEOUT):
                await one_cycle(server, kind)
            tally[kind] += 1

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)


async def soak(cycles: int, *, warmup: int = 5000, concurrency: int = 32) -> SoakResult:
    """Run ``warmup`` then ``cycles`` cycles against a fresh server; return the figures."""
    result = SoakResult()
    # A short history: the replay buffer filling up is not a leak, but would look like one.
    async with running_server(broker=MemoryBroker(history=16)) as server:
        # Hypercorn reports started before it spawns its listener task.
        await trio.testing.wait_all_tasks_blocked()
        baseline_tasks = count_tasks()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_publish_forever, server)
            await run_cycles(server, warmup, concurrency, Counter())
            await server.wait_for_subscribers(0, timeout=_CYCLE_TIMEOUT)
            gc.collect()
            rss_before = rss_bytes()
            start = trio.current_time()
            await run_cycles(server, cycles, concurrency, result.cycles)
            result.seconds = trio.current_time() - start
            nursery.cancel_scope.cancel()
        clean_start = trio.current_time()
        await server.wait_for_subscribers(0, timeout=_CYCLE_TIMEOUT)
        result.subscribers_after = server.broker.statistics().subscribers
        result.tasks_back_to_baseline = await task_count_returns_to(
            baseline_tasks, within=_CYCLE_TIMEOUT
        )
        result.seconds_to_clean = trio.current_time() - clean_start
        # First what the process holds under its collector policy, garbage included;
        # then after a full collection, what is really still referenced.
        result.rss_growth_uncollected = rss_bytes() - rss_before
        gc.collect()
        result.rss_growth = rss_bytes() - rss_before
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--gc",
        choices=["server", "default"],
        default="server",
        help="the collector policy: trio-sse serve's (the default) or Python's own",
    )
    args = parser.parse_args(argv)
    if args.gc == "server":
        use_server_gc_policy()
    result = trio.run(partial(soak, args.cycles, concurrency=args.concurrency))
    kinds = ", ".join(f"{kind} {result.cycles[kind]}" for kind in KINDS)
    print(f"cycles: {sum(result.cycles.values())} in {result.seconds:.1f} s ({kinds})")
    print(f"subscribers after: {result.subscribers_after}")
    print(f"tasks back to baseline: {result.tasks_back_to_baseline}")
    print(
        f"RSS growth: {result.rss_growth / 1024:.0f} KiB "
        f"({result.rss_growth_uncollected / 1024:.0f} KiB before a full collection; "
        f"collector policy: {args.gc})"
    )
    ok = (
        result.subscribers_after == 0
        and result.tasks_back_to_baseline
        and result.rss_growth < 2 * 1024 * 1024
        and result.rss_growth_uncollected < UNCOLLECTED_GROWTH_LIMIT
    )
    print("verdict:", "clean" if ok else "LEAK")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
