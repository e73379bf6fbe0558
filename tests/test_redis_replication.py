"""Redis with replicas: "acknowledged means replicated" (min_replicas), and Sentinel.

Real processes: a master and a replica (``redis-server --replicaof``) on loopback
ports, started per test. A replica frozen with SIGSTOP stands for one that lags or
is cut off: the master still counts it as connected, but it takes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import coredis
import httpx
import pytest
import trio

from tests.redis_server import RedisServer, free_port
from tests.test_cli import serve_process
from tests.wire import TIMEOUT
from trio_sse import BrokerUnavailableError, ServerSentEvent
from trio_sse.redis import open_redis_broker

# Short, so that a publish to a frozen replica gives up quickly.
REPLICA_TIMEOUT = 0.3


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
        on_replica = await stream_ids(replica, f"{prefix}t")
    lost = [event_id for event_id in acknowledged if event_id not in on_replica]
    if min_replicas == 0:
        assert lost, "the replica cut off cannot have the last publishes"
        assert errors == []
    else:
        assert lost == []
        assert len(acknowledged) == 20
        assert len(errors) == 3
        assert all("acknowledged by 0 of 1 replicas" in error for error in errors)


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
        ids = await stream_ids(master, f"{prefix}t")
    assert ids[0] == event_id
    assert len(ids) == 2  # x once, and y


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
