"""Redis Cluster: topics spread over its masters, shared by processes, through a failover.

Real processes: ``redis-server --cluster-enabled yes`` nodes on loopback ports, made
into a cluster by ``redis-cli --cluster create``, and ``trio-sse serve`` processes on
it. The session's cluster has three masters and no replicas; the failover test makes
its own, with a replica per master, and kills one master.
"""

from __future__ import annotations

import argparse
import re
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio

from tests.redis_server import RedisClusterServers
from tests.test_cli import serve_process
from tests.wire import TIMEOUT, SSEConnection, wait_for_remote_subscribers
from trio_sse import ServerSentEvent
from trio_sse.redis import DEFAULT_KEY_PREFIX, open_redis_broker
from trio_sse.redis._urls import cluster_target

# Node timeout 1 s: the replica is promoted a second or two after its master dies.
FAILOVER_WITHIN = 30.0


def stream_key(topic: str) -> str:
    return f"{DEFAULT_KEY_PREFIX}{{{topic}}}"


@pytest.mark.slow
async def test_two_processes_share_topics_spread_over_the_masters(
    redis_cluster: RedisClusterServers,
) -> None:
    """20 topics over 3 masters: live delivery across processes, and replay from either."""
    run = uuid.uuid4().hex[:6]
    topics = [f"c{run}-{i}" for i in range(20)]
    masters = {redis_cluster.master_of(stream_key(topic)).port for topic in topics}
    assert len(masters) >= 2, "the topics should land on more than one master"
    options = ["--broker", redis_cluster.url]
    async with (
        serve_process(*options) as (_, publisher_address),
        serve_process(*options) as (_, reader_address),
        httpx.AsyncClient(base_url=f"http://{publisher_address[0]}:{publisher_address[1]}") as a,
        httpx.AsyncClient(base_url=f"http://{reader_address[0]}:{reader_address[1]}") as b,
    ):
        streams = [await SSEConnection.open(reader_address, f"/events/{t}") for t in topics]
        await wait_for_remote_subscribers(b, len(topics))
        # One reader per topic in the reading process, each on its topic's master.
        assert (await b.get("/stats")).json()["backplane"]["readers"] == len(topics)
        ids: dict[str, list[str]] = defaultdict(list)
        with trio.fail_after(TIMEOUT * 2):
            for i in range(3):
                for topic in topics:
                    response = await a.post(f"/events/{topic}", json={"data": f"{topic}/{i}"})
                    assert response.status_code == 202, response.text
                    ids[topic].append(response.json()["id"])
        for topic, stream in zip(topics, streams, strict=True):
            events = await stream.read_events(3)
            assert [event.last_event_id for event in events] == ids[topic]
            assert [event.data for event in events] == [f"{topic}/{i}" for i in range(3)]
            await stream.close_fin()
        # Last-Event-ID replays from the cluster in the other process too.
        for topic in topics[:5]:
            resumed = await SSEConnection.open(
                publisher_address, f"/events/{topic}", headers=[("Last-Event-ID", ids[topic][0])]
            )
            events = await resumed.read_events(2)
            assert [event.last_event_id for event in events] == ids[topic][1:]
            await resumed.close_fin()


async def test_the_topic_cap_counts_the_topics_of_every_slot(
    redis_cluster: RedisClusterServers,
) -> None:
    """On a cluster the cap is a script of its own (another slot); it still holds."""
    prefix = f"test:{uuid.uuid4().hex}:"
    async with (
        open_redis_broker(redis_cluster.url, key_prefix=prefix, max_topics=3) as one,
        open_redis_broker(redis_cluster.url, key_prefix=prefix, max_topics=3) as two,
    ):
        with trio.fail_after(TIMEOUT):
            for topic in ("a", "b", "c"):
                await one.publish(topic, ServerSentEvent("x"))
            await two.publish("a", ServerSentEvent("again"))  # an existing topic
            with pytest.raises(Exception, match=r"already holds 3 topics \(max_topics\)"):
                await two.publish("d", ServerSentEvent("x"))


@pytest.fixture
def cluster_with_replicas(tmp_path: Path) -> Iterator[RedisClusterServers]:
    cluster = RedisClusterServers(tmp_path, masters=3, replicas=1)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.slow
async def test_a_master_killed_mid_stream_loses_nothing_acknowledged(
    cluster_with_replicas: RedisClusterServers,
) -> None:
    """Kill the master of some topics while publishing to 20: with min_replicas 1, each
    subscriber sees every acknowledged event of its topic once, in order, and the
    promoted replica has every one of them for a replay.

    The promoted replica is a master without a replica of its own, so publishes to
    its topics get 503 (the outcome stated) until the killed node comes back as its
    replica; each is retried with its Idempotency-Key until acknowledged.
    """
    cluster = cluster_with_replicas
    topics = [f"f{i}" for i in range(20)]
    victim = cluster.master_of(stream_key(topics[0]))
    victim_topics = [t for t in topics if cluster.master_of(stream_key(t)) is victim]
    options = ["--broker", cluster.url, "--broker-min-replicas", "1"]
    acknowledged: dict[str, list[str]] = defaultdict(list)
    refused: list[str] = []
    async with (
        serve_process(*options) as (_, publisher_address),
        serve_process(*options) as (_, reader_address),
        httpx.AsyncClient(base_url=f"http://{publisher_address[0]}:{publisher_address[1]}") as a,
        httpx.AsyncClient(base_url=f"http://{reader_address[0]}:{reader_address[1]}") as b,
    ):
        streams = {t: await SSEConnection.open(reader_address, f"/events/{t}") for t in topics}
        await wait_for_remote_subscribers(b, len(topics))

        async def bring_back_the_victim() -> None:
            # Once a replica has taken over its slots, restart the killed node: it
            # rejoins as that replica's replica, so min_replicas 1 can be met again.
            await trio.to_thread.run_sync(cluster.wait_for_failover, victim)
            await trio.to_thread.run_sync(victim.start)

        with trio.fail_after(FAILOVER_WITHIN):
            async with trio.open_nursery() as nursery:
                for i in range(100):
                    topic = topics[i % len(topics)]
                    if i == 40:
                        await trio.to_thread.run_sync(lambda: victim.stop(kill=True))
                        nursery.start_soon(bring_back_the_victim)
                    while True:
                        response = await a.post(
                            f"/events/{topic}",
                            json={"data": f"e{i}"},
                            headers={"Idempotency-Key": f"k{i}"},
                        )
                        if response.status_code == 202:
                            acknowledged[topic].append(response.json()["id"])
                            break
                        assert response.status_code == 503, response.text
                        refused.append(response.json()["error"])
                        await trio.sleep(0.1)
        assert refused, "no publish met the failover"
        assert victim_topics, "the killed master served a topic"
        for topic, stream in streams.items():
            last = acknowledged[topic][-1]

            def has_last(connection: SSEConnection, last: str = last) -> bool:
                return last in [event.last_event_id for event in connection.events]

            await stream.read_until(has_last, FAILOVER_WITHIN)
            received = [event.last_event_id for event in stream.events]
            assert len(set(received)) == len(received), f"{topic}: a duplicate"
            # (An event the old master took but never replicated was not
            # acknowledged; a subscriber may have seen it before the failover.)
            assert [i for i in received if i in acknowledged[topic]] == acknowledged[topic]
            await stream.close_fin()
        # The promoted replica has every acknowledged event: a replay from the first.
        for topic in victim_topics:
            first, *rest = acknowledged[topic]
            resumed = await SSEConnection.open(
                publisher_address, f"/events/{topic}", headers=[("Last-Event-ID", first)]
            )
            events = await resumed.read_events(len(rest), timeout=FAILOVER_WITHIN)
            assert [event.last_event_id for event in events] == rest
            await resumed.close_fin()
        stats = (await b.get("/stats")).json()
        assert stats["backplane"]["connected"] is True


def test_a_cluster_url_is_parsed() -> None:
    target = cluster_target("redis+cluster://:s%40cret@a:7000,[::1]:7001,c")
    assert [(node.host, node.port) for node in target.nodes] == [
        ("a", 7000),
        ("::1", 7001),
        ("c", 6379),
    ]
    assert target.password == "s@cret"
    assert "s@cret" not in target.where
    assert cluster_target("redis+cluster://h:1/0").password is None


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis+cluster://h:x", "bad cluster address 'h:x'"),
        ("redis+cluster://h:1,,h:2", "bad cluster address ''"),
        ("redis+cluster://h:1/2", "has only database 0"),
        ("redis+cluster://h:1?x=1", "no query"),
    ],
)
async def test_a_bad_cluster_url_is_refused_naming_the_problem(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        async with open_redis_broker(url):
            pass


def test_serve_accepts_a_cluster_url() -> None:
    from trio_sse.cli._serve import broker_url  # noqa: PLC0415

    url = "redis+cluster://127.0.0.1:7000,127.0.0.1:7001"
    assert broker_url(url) == url
    with pytest.raises(argparse.ArgumentTypeError, match="redis\\+cluster://"):
        broker_url("cluster://127.0.0.1:7000")
