"""Clients that never read, under a steady 1 MB/s of events, next to one that does.

The promise (issue 7): a client that never reads cannot pin memory or the other
subscribers. Its subscription is bounded (``queue_size`` frames) and dropped when
full; the kernel send buffer in front of it is bounded by the kernel; and the
shielded write Hypercorn is blocked in is ended by ``TCP_USER_TIMEOUT``.

The figures (RSS growth, open descriptors) are printed; run ``pytest -s -m slow
tests/test_slow_clients.py`` to see them. The reader's latency beside the stalled
clients is a benchmark, not a test (a busy machine moves it):
``benchmarks/slow_clients.py``, part of ``nox -s bench``.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing

from tests.wire import (
    TIMEOUT,
    Server,
    SSEConnection,
    count_tasks,
    running_server,
    task_count_returns_to,
)
from trio_sse import ServerSentEvent

STALLED = 100
EVENT_SIZE = 10 * 1024
RATE = 100  # events per second: about 1 MB/s
DURATION = 30.0
# The stalled clients' receive buffer: the kernel then advertises a tiny window.
STALLED_RECEIVE_BUFFER = 4096
# Short, so that the kernel also aborts the stalled connections during the run.
TCP_USER_TIMEOUT = 5.0
# What the process may grow by. Expected: the broker's replay history (1000 events
# of 10 KiB = 10 MiB), frames queued to stalled subscribers before they are dropped
# (256 each, but the same bytes objects the history holds, encoded once per publish),
# and a chunk held by each blocked write. 64 MiB leaves room for allocator slack
# while still failing if anything is kept per stalled subscriber per event
# (100 subscribers x 30 s x 1 MB/s would be gigabytes).
RSS_GROWTH_LIMIT = 64 * 1024 * 1024


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def has_more_events_than(count: int, connection: SSEConnection) -> bool:
    return len(connection.events) > count


@pytest.mark.slow
async def test_clients_that_never_read_are_dropped_and_cost_nothing_lasting() -> None:
    async with running_server(tcp_user_timeout=TCP_USER_TIMEOUT) as server:
        reader = await SSEConnection.open(server, "/events/load")
        stalled: list[SSEConnection] = []
        try:
            await check_stalled_clients(server, reader, stalled)
        finally:
            # Even after a failure: 100 open sockets would weigh on the next test.
            for conn in stalled:
                await conn.close_rst()
            await reader.close_fin()


async def check_stalled_clients(
    server: Server, reader: SSEConnection, stalled: list[SSEConnection]
) -> None:
    """Open the stalled clients (into ``stalled``, which the caller closes), run the
    load, and check the reader and the server."""
    await server.wait_for_subscribers(1)
    await trio.testing.wait_all_tasks_blocked()
    tasks_reader_only, fds_reader_only = count_tasks(), open_descriptors()
    for _ in range(STALLED):
        # One by one, so that those opened before a failure are closed.
        stalled.append(  # noqa: PERF401
            await SSEConnection.open(server, "/events/load", receive_buffer=STALLED_RECEIVE_BUFFER)
        )
    await server.wait_for_subscribers(STALLED + 1)
    tasks_before, fds_before, rss_before = count_tasks(), open_descriptors(), rss()
    rss_peak = rss_before
    received_ids: list[int] = []
    subscribers_back_to_one_at: float | None = None
    published = 0
    start = trio.current_time()

    async def publish() -> None:
        nonlocal published
        padding = "x" * EVENT_SIZE
        for seq in range(int(DURATION * RATE)):
            await trio.sleep_until(start + seq / RATE)
            stamp = f"{seq} "
            await server.broker.publish("load", ServerSentEvent(stamp + padding[len(stamp) :]))
            published += 1

    async def read() -> None:
        while len(received_ids) < DURATION * RATE:
            before = len(reader.events)
            await reader.read_until(partial(has_more_events_than, before), timeout=10)
            received_ids.extend(int(event.data.split(" ", 1)[0]) for event in reader.events)
            # Free what is parsed: 30 s of events would otherwise pile up here.
            del reader.events[:]
            reader.body.clear()

    async def watch() -> None:
        nonlocal rss_peak, subscribers_back_to_one_at
        while True:
            rss_peak = max(rss_peak, rss())
            if subscribers_back_to_one_at is None and server.broker.statistics().subscribers == 1:
                subscribers_back_to_one_at = trio.current_time() - start
            await trio.sleep(0.1)

    with trio.fail_after(DURATION + 30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            async with trio.open_nursery() as load:
                load.start_soon(publish)
                load.start_soon(read)
            nursery.cancel_scope.cancel()

    stats = server.broker.statistics()
    # TCP_USER_TIMEOUT has long aborted the stalled connections: their handlers
    # must be gone, and the server's ends of their sockets closed (the test still
    # holds the client ends).
    are_freed = await task_count_returns_to(tasks_reader_only, within=TIMEOUT)
    tasks_after, fds_after = count_tasks(), open_descriptors()
    print(
        f"\npublished {published} events of {EVENT_SIZE} B in {DURATION:.0f} s; "
        f"reader got {len(received_ids)}\n"
        f"RSS {rss_before / 2**20:.1f} MiB before, peak {rss_peak / 2**20:.1f} MiB "
        f"(+{(rss_peak - rss_before) / 2**20:.1f} MiB); dropped {stats.dropped}, "
        f"subscribers back to 1 after {subscribers_back_to_one_at} s\n"
        f"tasks {tasks_reader_only} with the reader alone, {tasks_before} with the "
        f"stalled clients, {tasks_after} after; descriptors {fds_reader_only}, "
        f"{fds_before}, {fds_after}"
    )
    assert are_freed
    assert fds_after == fds_reader_only + STALLED
    assert stats.dropped == STALLED
    assert subscribers_back_to_one_at is not None
    assert stats.subscribers == 1
    assert received_ids == list(range(published))
    assert rss_peak - rss_before < RSS_GROWTH_LIMIT
