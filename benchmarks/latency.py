"""Publish-to-delivery latency: the in-memory broker and Redis side by side.

    PYTHONPATH=. python benchmarks/latency.py [--samples 500] [--appendfsync everysec]

Starts a redis-server of its own (AOF on, ``--appendfsync`` as given) and real
Hypercorn servers in this process. Each sample POSTs one event and times until a
raw-socket SSE client has it; the next sample starts only then, so the figures are
latency, not throughput. Three set-ups:

* memory: one server with the in-memory broker;
* redis, same server: the POST and the stream on one server with a Redis broker
  (XADD, then the topic's reader wakes from XREAD and fans out);
* redis, across servers: POST to one server, stream from another; both share only
  Redis (as two workers or hosts would).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import trio

from tests.redis_server import RedisServer
from tests.wire import Server, SSEConnection, running_server
from trio_sse.redis import open_redis_broker


def has_more_than(count: int, conn: SSEConnection) -> bool:
    return len(conn.events) > count


async def measure(publisher: Server, subscriber: Server, samples: int) -> list[float]:
    topic = f"lat{uuid.uuid4().hex[:8]}"
    conn = await SSEConnection.open(subscriber, f"/events/{topic}")
    await subscriber.wait_for_subscribers(1)
    # Warm up connections, the topic's reader, and the code paths.
    for _ in range(20):
        await publisher.publish(topic, data="warm-up")
    await conn.read_events(20)
    latencies = []
    for i in range(samples):
        seen = len(conn.events)
        start = trio.current_time()
        await publisher.publish(topic, data=str(i))
        await conn.read_until(functools.partial(has_more_than, seen))
        latencies.append((trio.current_time() - start) * 1e3)
    await conn.close_fin()
    return latencies


def report(name: str, latencies: list[float]) -> None:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * len(ordered)) - 1)]
    print(
        f"{name:<24} median {statistics.median(ordered):6.2f} ms   p99 {p99:6.2f} ms   "
        f"max {ordered[-1]:6.2f} ms   (n={len(ordered)})"
    )


@asynccontextmanager
async def redis_server_running(appendfsync: str) -> AsyncIterator[RedisServer]:
    with tempfile.TemporaryDirectory() as directory:
        server = RedisServer(Path(directory), appendfsync=appendfsync)
        await trio.to_thread.run_sync(server.start)
        try:
            yield server
        finally:
            server.stop()


async def main(args: argparse.Namespace) -> None:
    print(f"POST -> SSE client, one event at a time, {args.samples} samples each")
    async with running_server() as server:
        report("memory", await measure(server, server, args.samples))
    async with redis_server_running(args.appendfsync) as redis, AsyncExitStack() as stack:
        prefix = f"bench:{uuid.uuid4().hex}:"
        servers = []
        for _ in range(2):
            broker = await stack.enter_async_context(
                open_redis_broker(redis.url, key_prefix=prefix)
            )
            servers.append(await stack.enter_async_context(running_server(broker=broker)))
        one, two = servers
        report(f"redis (AOF {args.appendfsync})", await measure(one, one, args.samples))
        report("redis, across servers", await measure(one, two, args.samples))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--appendfsync", choices=["always", "everysec", "no"], default="everysec")
    trio.run(main, parser.parse_args())
