"""Publish-to-delivery latency through a 3-master Redis Cluster against one Redis.

    PYTHONPATH=. python benchmarks/cluster_latency.py [--topics 30] [--events 300] [--runs 3]

Starts a redis-server and a 3-master cluster of its own (no replicas; AOF with
``appendfsync everysec`` on every node), then, alternately, ``trio-sse serve`` on each.
``--topics`` streams are open, one per topic (the topics spread over the cluster's
masters); one publisher POSTs ``--events`` events one after another, each to the next
topic, and waits until its stream has it. The latency of an event is from just before
its POST to its arrival on the stream: the POST, the publish script on the topic's
master, that master waking the topic's reader, and the write.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import httpx
import trio

from tests.redis_server import RedisClusterServers, RedisServer
from tests.test_cli import listening_process
from tests.wire import SSEConnection, wait_for_remote_subscribers

MS = 1000


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def latency_run(command: list[str], *, topics: int, events: int) -> list[float]:
    """Latencies (seconds) of ``events`` sequential publishes through one server."""
    async with listening_process(command, startup_timeout=60) as (_, address):
        base = f"http://{address[0]}:{address[1]}"
        names = [f"lat{i}" for i in range(topics)]
        streams = [await SSEConnection.open(address, f"/events/{name}") for name in names]
        latencies = []
        try:
            async with httpx.AsyncClient(base_url=base) as http:
                await wait_for_remote_subscribers(http, topics, timeout=60)
                # Warm up: every topic's reader started, connections and scripts loaded.
                for index, name in enumerate(names):
                    response = await http.post(f"/events/{name}", json={"data": "warm"})
                    response.raise_for_status()
                    await streams[index].read_events(1)
                for i in range(events):
                    stream = streams[i % topics]
                    seen = len(stream.events)
                    start = trio.current_time()
                    response = await http.post(f"/events/{names[i % topics]}", json={"data": i})
                    response.raise_for_status()
                    await stream.read_events(seen + 1)
                    latencies.append(trio.current_time() - start)
        finally:
            for stream in streams:
                await stream.close_fin()
    return latencies


async def main(args: argparse.Namespace) -> None:
    # No write batching: the figure is the broker's path, not the batching window.
    serve = [sys.executable, "-m", "trio_sse.cli", "serve", "--port", "0", "--write-interval", "0"]
    serve += ["--broker"]
    with tempfile.TemporaryDirectory() as directory:
        (Path(directory) / "single").mkdir()
        (Path(directory) / "cluster").mkdir()
        single = RedisServer(Path(directory) / "single", appendfsync="everysec")
        cluster = RedisClusterServers(
            Path(directory) / "cluster", masters=3, replicas=0, appendfsync="everysec"
        )
        try:
            single.start()
            cluster.start()
            setups = {"one Redis": single.url, "3-master cluster": cluster.url}
            figures: dict[str, list[tuple[float, float]]] = {name: [] for name in setups}
            for run in range(args.runs):
                for name, url in setups.items():
                    latencies = await latency_run(
                        [*serve, url], topics=args.topics, events=args.events
                    )
                    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
                    figures[name].append((p50, p99))
                    print(
                        f"run {run + 1}, {name}: p50 {p50 * MS:.2f} ms, p99 {p99 * MS:.2f} ms",
                        flush=True,
                    )
        finally:
            single.stop()
            cluster.stop()
    medians = {
        name: (
            statistics.median(p50 for p50, _ in values),
            statistics.median(p99 for _, p99 in values),
        )
        for name, values in figures.items()
    }
    (one_p50, one_p99), (cluster_p50, cluster_p99) = medians.values()
    print(
        f"median of {args.runs}: publish-to-delivery p50 {one_p50 * MS:.2f} ms on one Redis, "
        f"{cluster_p50 * MS:.2f} ms on a 3-master cluster ({cluster_p50 / one_p50:.2f}x); "
        f"p99 {one_p99 * MS:.2f} ms and {cluster_p99 * MS:.2f} ms ({cluster_p99 / one_p99:.2f}x)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--topics", type=int, default=30)
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    trio.run(main, parser.parse_args())
