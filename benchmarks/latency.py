"""Publish-to-delivery latency: the in-memory broker and Redis side by side.

    PYTHONPATH=. python benchmarks/latency.py [--samples 500] [--appendfsync everysec]

Starts a redis-server of its own (AOF on, ``--appendfsync`` as given). First the
brokers alone: ``publish()`` until a subscription in the same process has the event.
Then end to end, with real Hypercorn servers in this process: each sample POSTs one
event and times until a raw-socket SSE client has it. The next sample starts only
then, so the figures are latency, not throughput. Three set-ups:

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
from trio_sse import Broker, MemoryBroker, ServerSentEvent
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


async def measure_broker(publisher: Broker, subscriber: Broker, samples: int) -> list[float]:
    topic = f"lat{uuid.uuid4().hex[:8]}"
    latencies = []
    async with subscriber.subscribe(topic) as subscription:
        for i in range(samples + 20):
            start = trio.current_time()
            await publisher.publish(topic, ServerSentEvent(str(i)))
            await subscription.receive_batch()
            if i >= 20:  # the first ones warm up connections and code paths
                latencies.append((trio.current_time() - start) * 1e3)
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
    async with redis_server_running(args.appendfsync) as redis, AsyncExitStack() as stack:
        prefix = f"bench:{uuid.uuid4().hex}:"
        brokers = [
            await stack.enter_async_context(open_redis_broker(redis.url, key_prefix=prefix))
            for _ in range(2)
        ]
        memory = MemoryBroker()
        redis_name = f"redis (AOF {args.appendfsync})"
        print(f"publish() -> subscription, one event at a time, {args.samples} samples each")
        report("memory", await measure_broker(memory, memory, args.samples))
        report(redis_name, await measure_broker(brokers[0], brokers[0], args.samples))
        report("redis, across brokers", await measure_broker(brokers[0], brokers[1], args.samples))

        print(f"POST -> SSE client, one event at a time, {args.samples} samples each")
        async with running_server(broker=memory) as server:
            report("memory", await measure(server, server, args.samples))
        one, two = [
            await stack.enter_async_context(running_server(broker=broker)) for broker in brokers
        ]
        report(redis_name, await measure(one, one, args.samples))
        report("redis, across servers", await measure(one, two, args.samples))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--appendfsync", choices=["always", "everysec", "no"], default="everysec")
    trio.run(main, parser.parse_args())
