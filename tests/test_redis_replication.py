"""Redis with replicas: "acknowledged means replicated" (min_replicas), and Sentinel.

Real processes: a master and a replica (``redis-server --replicaof``) on loopback
ports, started per test. A replica frozen with SIGSTOP stands for one that lags or
is cut off: the master still counts it as connected, but it takes nothing.
"""

from __future__ import annotations

import argparse
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import coredis
import httpx
import pytest
import trio

from tests.redis_server import RedisServer, SentinelServer, free_port
from tests.test_cli import serve_process
from tests.wire import TIMEOUT, SSEConnection, wait_for_remote_subscribers
from trio_sse import BrokerUnavailableError, ServerSentEvent
from trio_sse.redis import open_redis_broker
from trio_sse.redis._urls import sentinel_target

# Short, so that a publish to a replica cut off gives up quickly; long enough for a
# live replica on a loaded machine (0.3 s let 2 of 20 ordinary publishes time out in CI).
REPLICA_TIMEOUT = 1.0


@pytest.fixture
def master(tmp_path: Path) -> Iterator[RedisServer]:
    (tmp_path / "master").mkdir()
    server = RedisServer(tmp_path / "master")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def replica(tmp_path: Path, master: RedisServer) -> Iterator[RedisServer]:
    (tmp_path / "replica").mkdir()
    server = RedisServer(tmp_path / "replica", replica_of=master.port)
    server.start()
    try:
        server.wait_for_master_link()
        yield server
    finally:
        server.stop()


@pytest.fixture
def prefix() -> str:
    return f"test:{uuid.uuid4().hex}:"


async def stream_ids(server: RedisServer, key: str) -> list[str]:
    async with coredis.Redis(port=server.port, decode_responses=True) as client:
        return [str(entry.identifier) for entry in await client.xrange(key)]


async def cut_off(replica: RedisServer) -> None:
    """Point the replica at a port where nothing listens: it takes no more writes."""
    async with coredis.Redis(port=replica.port) as client:
        await client.replicaof("127.0.0.1", free_port())


@pytest.mark.slow
@pytest.mark.parametrize("min_replicas", [0, 1])
async def test_with_min_replicas_every_acknowledged_publish_survives_the_master_sigkill(
    master: RedisServer, replica: RedisServer, prefix: str, min_replicas: int
) -> None:
    """Publish, cut the replica off, publish on, kill the master: what does the replica have?

    With min_replicas 0 the publishes after the cut are acknowledged and lost with
    the master (the README's warning); with 1 they get BrokerUnavailableError
    instead, and nothing acknowledged is lost. (A replica frozen with SIGSTOP would
    not do here: the kernel keeps buffering what the master sends it.)
    """
    acknowledged: list[str] = []
    errors: list[str] = []
    async with open_redis_broker(
        master.url,
        key_prefix=prefix,
        min_replicas=min_replicas,
        replica_timeout=REPLICA_TIMEOUT,
    ) as broker:
        with trio.fail_after(TIMEOUT * 4):
            for i in range(40):
                if i == 20:
                    await cut_off(replica)
                try:
                    acknowledged.append(await broker.publish("t", ServerSentEvent(f"e{i}")))
                except BrokerUnavailableError as exc:
                    errors.append(str(exc))
                if i >= 20 and len(errors) + len(acknowledged) - 20 >= 3:
                    break
            master.stop(kill=True)
    with trio.fail_after(TIMEOUT):
        on_replica = await stream_ids(replica, f"{prefix}{{t}}")
    lost = [event_id for event_id in acknowledged if event_id not in on_replica]
    if min_replicas == 0:
        assert lost, "the replica cut off cannot have the last publishes"
        assert errors == []
    else:
        assert lost == []
        assert len(acknowledged) == 20
        assert len(errors) == 3
        assert all("acknowledged by 0 of 1 replicas" in error for error in errors)


@pytest.mark.slow
async def test_an_unreplicated_publish_raises_stating_the_outcome_and_a_retry_settles_it(
    master: RedisServer, replica: RedisServer, prefix: str
) -> None:
    options = {"key_prefix": prefix, "min_replicas": 1, "replica_timeout": REPLICA_TIMEOUT}
    async with (
        open_redis_broker(master.url, **options) as one,  # type: ignore[arg-type]
        open_redis_broker(master.url, **options) as two,  # type: ignore[arg-type]
    ):
        replica.pause()
        try:
            with trio.fail_after(TIMEOUT), pytest.raises(BrokerUnavailableError) as raised:
                await one.publish("t", ServerSentEvent("x"), idempotency_key="k1")
            message = str(raised.value)
            assert "is stored on the master" in message
            assert f"acknowledged by 0 of 1 replicas within {REPLICA_TIMEOUT * 1000:.0f} ms" in (
                message
            )
            assert "it may be lost if the master fails" in message
            assert "retry with the same Idempotency-Key" in message
            # A retry (here through another process, with connections of its own)
            # finds the event, and still answers only once a replica has it.
            with trio.fail_after(TIMEOUT), pytest.raises(BrokerUnavailableError) as again:
                await two.publish("t", ServerSentEvent("x"), idempotency_key="k1")
            assert "acknowledged by 0 of 1 replicas" in str(again.value)
            # Without a key, the message says a retry would publish again.
            with trio.fail_after(TIMEOUT), pytest.raises(BrokerUnavailableError) as keyless:
                await one.publish("t", ServerSentEvent("y"))
            assert "a retry without an Idempotency-Key publishes it again" in str(keyless.value)
        finally:
            replica.resume()
        with trio.fail_after(TIMEOUT):
            event_id = await two.publish("t", ServerSentEvent("x"), idempotency_key="k1")
            assert await one.publish("t", ServerSentEvent("x"), idempotency_key="k1") == event_id
    with trio.fail_after(TIMEOUT):
        ids = await stream_ids(master, f"{prefix}{{t}}")
    assert ids[0] == event_id
    assert len(ids) == 2  # x once, and y


@pytest.mark.slow
async def test_serve_answers_503_with_the_outcome_when_no_replica_takes_a_publish(
    master: RedisServer, replica: RedisServer
) -> None:
    topic = f"t{uuid.uuid4().hex[:8]}"
    options = ["--broker", master.url, "--broker-min-replicas", "1"]
    options += ["--broker-replica-timeout", str(REPLICA_TIMEOUT)]
    async with (
        serve_process(*options) as (_, address),
        httpx.AsyncClient(base_url=f"http://{address[0]}:{address[1]}") as http,
    ):
        response = await http.post(f"/events/{topic}", json={"data": "a"})
        assert response.status_code == 202, response.text
        replica.pause()
        try:
            response = await http.post(
                f"/events/{topic}", json={"data": "b"}, headers={"Idempotency-Key": "b1"}
            )
        finally:
            replica.resume()
        assert response.status_code == 503
        error = response.json()["error"]
        assert "stored on the master" in error
        assert "acknowledged by 0 of 1 replicas" in error
        response = await http.post(
            f"/events/{topic}", json={"data": "b"}, headers={"Idempotency-Key": "b1"}
        )
        assert response.status_code == 202, response.text


def test_min_replicas_needs_a_redis_broker() -> None:
    from trio_sse.cli import main  # noqa: PLC0415

    with pytest.raises(SystemExit) as exited:
        main(["serve", "--broker-min-replicas", "1"])
    assert exited.value.code == 2


@pytest.mark.parametrize("value", ["0", "-1", "61", "nan", "inf"])
def test_the_replica_timeout_is_bounded(value: str) -> None:
    from trio_sse.cli import main  # noqa: PLC0415

    with pytest.raises(SystemExit) as exited:
        main(["serve", "--broker", "redis://127.0.0.1:1/0", "--broker-replica-timeout", value])
    assert exited.value.code == 2


@pytest.mark.parametrize(
    ("option", "value"),
    [("min_replicas", -1), ("replica_timeout", 0.0), ("replica_timeout", 61.0)],
)
async def test_open_redis_broker_refuses_bad_replication_options(option: str, value: float) -> None:
    with pytest.raises(ValueError, match=option):
        async with open_redis_broker("redis://127.0.0.1:1/0", **{option: value}):  # type: ignore[arg-type]
            pass


# Sentinel

SERVICE = "trio-sse"
# The Sentinels call a silent master down after 1 s; electing a leader and promoting
# a replica takes a few seconds more on a busy machine.
FAILOVER_WITHIN = 30.0


def test_sentinel_urls_name_the_sentinels_the_service_and_the_database() -> None:
    target = sentinel_target("redis+sentinel://:s%40cret@a:26380,[::1]:26381,c/svc/2")
    assert [(node.host, node.port) for node in target.sentinels] == [
        ("a", 26380),
        ("::1", 26381),
        ("c", 26379),
    ]
    assert (target.service, target.database, target.password) == ("svc", 2, "s@cret")
    assert "cret" not in target.where
    assert sentinel_target("redis+sentinel://h:1/svc").database == 0


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis+sentinel://h:1", "names the service"),
        ("redis+sentinel://h:1/", "names the service"),
        ("redis+sentinel://h:x/svc", "bad Sentinel address 'h:x'"),
        ("redis+sentinel://h:1,,h:2/svc", "bad Sentinel address ''"),
        ("redis+sentinel://h:99999/svc", "bad Sentinel address"),
        ("redis+sentinel://h:1/svc/db", "database in a Sentinel URL is a number"),
        ("redis+sentinel://h:1/svc?x=1", "no query"),
    ],
)
async def test_a_bad_sentinel_url_is_refused_naming_the_problem(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        async with open_redis_broker(url):
            pass


def test_serve_accepts_a_sentinel_url_and_refuses_other_schemes() -> None:
    from trio_sse.cli._serve import broker_url  # noqa: PLC0415

    url = "redis+sentinel://127.0.0.1:26379/svc"
    assert broker_url(url) == url
    with pytest.raises(argparse.ArgumentTypeError, match="redis\\+sentinel://"):
        broker_url("sentinel://127.0.0.1:26379/svc")


@pytest.fixture
def sentinel_group(
    tmp_path: Path, replicas: int
) -> Iterator[tuple[RedisServer, list[SentinelServer]]]:
    """A master, ``replicas`` replicas and three Sentinels (quorum 2), knowing each other."""
    servers: list[RedisServer] = []
    try:
        (tmp_path / "master").mkdir()
        master = RedisServer(tmp_path / "master")
        servers.append(master)
        master.start()
        for i in range(replicas):
            (tmp_path / f"replica{i}").mkdir()
            replica = RedisServer(tmp_path / f"replica{i}", replica_of=master.port)
            servers.append(replica)
            replica.start()
            replica.wait_for_master_link()
        sentinels = []
        for i in range(3):
            (tmp_path / f"sentinel{i}").mkdir()
            sentinel = SentinelServer(tmp_path / f"sentinel{i}", master_port=master.port)
            servers.append(sentinel)
            sentinels.append(sentinel)
            sentinel.start()
        for sentinel in sentinels:
            sentinel.wait_until_it_knows(replicas=replicas, sentinels=3)
        yield master, sentinels
    finally:
        for server in servers:
            server.stop(kill=True)


def sentinel_url(sentinels: list[SentinelServer]) -> str:
    nodes = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in sentinels)
    return f"redis+sentinel://{nodes}/{SERVICE}"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("replicas", "min_replicas"),
    [
        # With min_replicas 1 the new master needs a replica of its own for a
        # publish to succeed again: two replicas, one left after the failover.
        (2, 1),
        # One replica (left alone as the new master): publishes resume at once,
        # and acknowledged means on the master only.
        (1, 0),
    ],
)
async def test_through_sentinel_serve_follows_a_failover_and_loses_nothing_acknowledged(
    sentinel_group: tuple[RedisServer, list[SentinelServer]], min_replicas: int
) -> None:
    master, sentinels = sentinel_group
    topic = f"t{uuid.uuid4().hex[:8]}"
    options = ["--broker", sentinel_url(sentinels), "--broker-min-replicas", str(min_replicas)]
    acknowledged: list[str] = []
    refused = 0
    async with (
        serve_process(*options) as (_, address),
        httpx.AsyncClient(base_url=f"http://{address[0]}:{address[1]}") as http,
    ):
        stream = await SSEConnection.open(address, f"/events/{topic}")
        await wait_for_remote_subscribers(http, 1)
        with trio.fail_after(FAILOVER_WITHIN):
            for i in range(40):
                if i == 20:
                    await trio.to_thread.run_sync(lambda: master.stop(kill=True))
                # Retry the same event (same key) until it is acknowledged: while the
                # Sentinels fail over, with a back-off.
                while True:
                    response = await http.post(
                        f"/events/{topic}",
                        json={"data": f"e{i}"},
                        headers={"Idempotency-Key": f"k{i}"},
                    )
                    if response.status_code == 202:
                        acknowledged.append(response.json()["id"])
                        break
                    assert response.status_code == 503, response.text
                    refused += 1
                    await trio.sleep(0.1)
        assert refused > 0, "no publish met the failover"
        # (The Sentinel that ran the failover knows first; the others by its hellos.)
        assert any(sentinel.master_port() != master.port for sentinel in sentinels)
        # Streaming resumed by itself: every acknowledged event arrives, once, in
        # order. (An event the old master had not replicated, hence not
        # acknowledged, may have been delivered before the failover lost it.)
        await stream.read_until(
            lambda c: acknowledged[-1] in [e.last_event_id for e in c.events], FAILOVER_WITHIN
        )
        received = [event.last_event_id for event in stream.events]
        if min_replicas:
            assert [i for i in received if i in acknowledged] == acknowledged
        else:
            # Those acknowledged before the kill could in principle be lost (not
            # replicated yet); those after it went to the new master.
            after_kill = acknowledged[20:]
            assert [i for i in received if i in after_kill] == after_kill
        await stream.close_fin()
        stats = (await http.get("/stats")).json()
        assert stats["backplane"]["connected"] is True
