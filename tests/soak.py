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
task count of the baseline, and no more memory in use than after a warm-up (which
fills the caches and the history): Python's small objects (allocator blocks) and what
C's ``malloc`` has handed out (large buffers), both exact, and the resident set, which
is not (see ``RSS_GROWTH_LIMIT``).

``python -m tests.soak --cycles 100000`` runs the long variant (``nox -s soak``).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
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
# Leak bounds. The two exact figures vary between clean runs whatever the number of
# cycles (blocks -2,100 to +2,500, the latter in CI; malloc'd bytes -680 to +620 KiB), so
# their bounds are fixed at about twice that: one leaked object per 4 cycles of 20,000,
# or one 16 KiB event per 160, fails, and anything a connection leaks whole (hundreds of
# objects) at once.
# The resident set is not exact: Python frees an arena only once it is empty, so it keeps
# the high-water mark of whichever moment had the most connections in flight. After a
# 5,000-cycle warm-up, 20,000 cycles grew it by 0.3 to 1.0 MiB in clean runs (with a
# 1,000-cycle warm-up, 4,000 cycles grew it by 1.8 to 3.0 MiB: the warm-up had not yet
# reached the mark). Its bound is issue 7's, and catches what neither exact figure sees.
RSS_GROWTH_LIMIT: Final = 2 * 1024 * 1024
MALLOC_GROWTH_LIMIT: Final = 2 * 1024 * 1024


def blocks_growth_limit(cycles: int) -> int:
    """The most allocator blocks ``cycles`` cycles may leave behind (see above)."""
    return max(5000, cycles // 4)


class _MallInfo2(ctypes.Structure):
    # struct mallinfo2 (malloc.h): ten size_t counters, in this order.
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


_LIBC_NAME = ctypes.util.find_library("c")
_LIBC = ctypes.CDLL(_LIBC_NAME) if _LIBC_NAME else None
_MALLINFO2 = getattr(_LIBC, "mallinfo2", None)  # glibc >= 2.33
if _MALLINFO2 is not None:
    _MALLINFO2.restype = _MallInfo2


def can_measure_malloc() -> bool:
    """Whether this C library reports the bytes ``malloc`` has handed out (glibc does)."""
    return _MALLINFO2 is not None


def malloc_in_use() -> int:
    """Bytes handed out by ``malloc`` and not freed: heap chunks in use plus mapped ones."""
    if _MALLINFO2 is None:
        raise RuntimeError("this C library has no mallinfo2 (glibc >= 2.33 has)")
    info = _MALLINFO2()
    return int(info.uordblks + info.hblkhd)


def rss_bytes() -> int:
    """This process's resident set size (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def settled_rss_bytes() -> int:
    """The resident set once garbage is collected and glibc has returned its free pages."""
    gc.collect()
    if _LIBC is not None and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)  # free heap pages count in RSS until trimmed
    return rss_bytes()


@dataclass
class SoakResult:
    cycles: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    rss_growth: int = 0  # bytes, from after the warm-up to after the run
    rss_growth_uncollected: int = 0  # the same, before a full collection
    blocks_growth: int = 0  # live allocator blocks, from after the warm-up to after the run
    malloc_growth: int | None = None  # bytes in use from malloc, the same; None: unknown
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


async def _cycles_under_load(
    server: Server, cycles: int, concurrency: int, tally: Counter[str]
) -> float:
    """Run ``cycles`` cycles while events flow; return how long they took."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_publish_forever, server)
        start = trio.current_time()
        await run_cycles(server, cycles, concurrency, tally)
        seconds = trio.current_time() - start
        nursery.cancel_scope.cancel()
    return seconds


async def soak(cycles: int, *, warmup: int = 5000, concurrency: int = 32) -> SoakResult:
    """Run ``warmup`` then ``cycles`` cycles against a fresh server; return the figures."""
    result = SoakResult()
    # A short history: the replay buffer filling up is not a leak, but would look like one.
    async with running_server(broker=MemoryBroker(history=16)) as server:
        # Hypercorn reports started before it spawns its listener task.
        await trio.testing.wait_all_tasks_blocked()
        baseline_tasks = count_tasks()
        await _cycles_under_load(server, warmup, concurrency, Counter())
        # The figures before and after are taken at the same point, the server idle again:
        # taken while the warm-up's last connections were still closing, they included
        # about 25,000 blocks that the run then seemed to free, hiding any leak below that.
        await server.wait_for_subscribers(0, timeout=_CYCLE_TIMEOUT)
        if not await task_count_returns_to(baseline_tasks, within=_CYCLE_TIMEOUT):
            raise RuntimeError("the warm-up's connections did not end")
        rss_before = settled_rss_bytes()
        blocks_before = sys.getallocatedblocks()
        malloc_before = malloc_in_use() if can_measure_malloc() else 0
        result.seconds = await _cycles_under_load(server, cycles, concurrency, result.cycles)
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
        result.rss_growth = settled_rss_bytes() - rss_before
        result.blocks_growth = sys.getallocatedblocks() - blocks_before
        if can_measure_malloc():
            result.malloc_growth = malloc_in_use() - malloc_before
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
    print(f"allocator blocks: {result.blocks_growth:+,}")
    if result.malloc_growth is None:
        print("malloc in use: unknown (no mallinfo2 in this C library)")
    else:
        print(f"malloc in use: {result.malloc_growth / 1024:+,.0f} KiB")
    ok = (
        result.subscribers_after == 0
        and result.tasks_back_to_baseline
        and result.rss_growth < RSS_GROWTH_LIMIT
        and result.blocks_growth < blocks_growth_limit(args.cycles)
        and (result.malloc_growth or 0) < MALLOC_GROWTH_LIMIT
        and result.rss_growth_uncollected < UNCOLLECTED_GROWTH_LIMIT
    )
    print("verdict:", "clean" if ok else "LEAK")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
