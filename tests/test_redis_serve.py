"""The Redis backplane end to end: real servers over HTTP, real processes, a real Redis.

`trio-sse serve --broker redis://...` processes stand for workers on different hosts;
`--workers N` runs several behind one socket.
"""

from __future__ import annotations

import signal
import uuid
from pathlib import Path

import httpx
import pytest
import trio

from tests.redis_server import RedisServer
from tests.test_cli import SERVE, listening_process, serve_process, signal_and_time
from tests.wire import TIMEOUT, SSEConnection, running_server, wait_for_remote_subscribers
from trio_sse.redis import open_redis_broker

# A parent that checks Redis, then two workers that each import the whole stack: on
# a busy 2-core machine that can take several seconds.
WORKERS_START = 30.0


def children_of(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (from /proc: no psutil needed)."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # exited meanwhile
            # The command name may hold spaces; the fields after it do not.
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(entry.name))
    return children


def is_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
async def test_two_servers_share_a_topic_and_replay_across_each_other(
    redis_server: RedisServer,
) -> None:
    topic = f"t{uuid.uuid4().hex[:8]}"
    broker = ["--broker", redis_server.url]
    async with serve_process(*broker) as (_, one), serve_process(*broker) as (_, two):
        on_one = await SSEConnection.open(one, f"/events/{topic}")
        on_two = await SSEConnection.open(two, f"/events/{topic}")
        async with (
            httpx.AsyncClient(base_url=f"http://{one[0]}:{one[1]}") as http_one,
            httpx.AsyncClient(base_url=f"http://{two[0]}:{two[1]}") as http_two,
        ):
            await wait_for_remote_subscribers(http_one, 1)
            await wait_for_remote_subscribers(http_two, 1)
            ids = []
            for i in range(3):
                response = await http_one.post(f"/events/{topic}", json={"data": f"e{i}"})
                assert response.status_code == 202, response.text
                ids.append(response.json()["id"])
            for conn in (on_one, on_two):
                events = await conn.read_events(3)
                assert [e.last_event_id for e in events] == ids
                assert [e.data for e in events] == ["e0", "e1", "e2"]
            # A client of `one` that saw ids[0] reconnects to `two`.
            resumed = await SSEConnection.open(
                two, f"/events/{topic}", headers=[("Last-Event-ID", ids[0])]
            )
            response = await http_two.post(f"/events/{topic}", json={"data": "live"})
            ids.append(response.json()["id"])
            events = await resumed.read_events(3)
            assert [e.last_event_id for e in events] == ids[1:]
            stats = (await http_two.get("/stats")).json()
            assert stats["backplane"]["kind"] == "redis"
            assert stats["backplane"]["connected"] is True
            assert (await http_two.get("/healthz")).json() == {"status": "ok"}
        for conn in (on_one, on_two, resumed):
            await conn.close_fin()


@pytest.mark.slow
async def test_a_redis_restart_mid_stream_loses_nothing_acknowledged(
    own_redis_server: RedisServer,
) -> None:
    broker = ["--broker", own_redis_server.url]
    acknowledged: list[str] = []
    async with serve_process(*broker) as (_, one), serve_process(*broker) as (_, two):
        conns = [await SSEConnection.open(address, "/events/t") for address in (one, two)]
        async with httpx.AsyncClient(base_url=f"http://{one[0]}:{one[1]}") as http:
            for address in (one, two):
                async with httpx.AsyncClient(base_url=f"http://{address[0]}:{address[1]}") as c:
                    await wait_for_remote_subscribers(c, 1)
            restarted = False
            with trio.fail_after(TIMEOUT * 4):
                while len(acknowledged) < 100:
                    response = await http.post("/events/t", json={"data": "x"})
                    if response.status_code == 202:
                        acknowledged.append(response.json()["id"])
                    else:
                        assert response.status_code == 503, response.text
                        await trio.sleep(0.01)
                    if len(acknowledged) == 50 and not restarted:
                        restarted = True
                        # SIGKILL: AOF with appendfsync always has every XADD on disk.
                        await trio.to_thread.run_sync(lambda: own_redis_server.restart(kill=True))
        for conn in conns:
            events = await conn.read_events(100, timeout=TIMEOUT * 2)
            assert [e.last_event_id for e in events] == acknowledged
            assert not conn.ended_cleanly
            await conn.close_fin()


@pytest.mark.slow
async def test_workers_share_one_port_and_every_subscriber_gets_each_event(
    redis_server: RedisServer,
) -> None:
    topic = f"t{uuid.uuid4().hex[:8]}"
    command = [*SERVE, "--port", "0", "--broker", redis_server.url, "--workers", "2"]
    async with listening_process(command, startup_timeout=WORKERS_START) as (parent, address):
        conns = [await SSEConnection.open(address, f"/events/{topic}") for _ in range(12)]
        # Each /stats answer comes from one worker; keep asking until both were seen
        # with their share of the subscribers.
        async with httpx.AsyncClient(base_url=f"http://{address[0]}:{address[1]}") as http:
            with trio.fail_after(TIMEOUT):
                while len(workers := children_of(parent.pid)) != 2:  # noqa: ASYNC110
                    await trio.sleep(0.02)
            response = await http.post(f"/events/{topic}", json={"data": "to all"})
            assert response.status_code == 202
        for conn in conns:
            (event,) = await conn.read_events(1)
            assert event.data == "to all"
        await signal_and_time(parent, conns, signal.SIGTERM, streams_within=5, exit_within=10)
        assert all(conn.ended_cleanly for conn in conns)
        for conn in conns:
            await conn.close_fin()
    assert parent.returncode == 0
    assert not [pid for pid in workers if is_running(pid)]


@pytest.mark.slow
async def test_workers_stop_when_their_parent_is_killed(redis_server: RedisServer) -> None:
    command = [*SERVE, "--port", "0", "--broker", redis_server.url, "--workers", "2"]
    async with listening_process(command, startup_timeout=WORKERS_START) as (parent, _):
        with trio.fail_after(TIMEOUT):
            while len(workers := children_of(parent.pid)) != 2:  # noqa: ASYNC110
                await trio.sleep(0.02)
        parent.kill()
        await parent.wait()
        with trio.fail_after(TIMEOUT):
            # Orphans are reparented; nothing signals us when they exit.
            while [pid for pid in workers if is_running(pid)]:  # noqa: ASYNC110
                await trio.sleep(0.02)


async def test_streams_stay_open_with_heartbeats_while_redis_is_down(
    own_redis_server: RedisServer,
) -> None:
    async with (
        open_redis_broker(own_redis_server.url, command_timeout=0.5) as broker,
        running_server(broker=broker, heartbeat=0.2) as server,
    ):
        conn = await SSEConnection.open(server, "/events/t")
        await server.wait_for_subscribers(1)
        first = await server.publish("t", data="before")
        await conn.read_events(1)
        own_redis_server.stop()
        # A publish now is refused with a JSON 503, and nothing is half-done.
        response = await server.http.post("/events/t", json={"data": "during"})
        assert response.status_code == 503
        assert "unavailable" in response.json()["error"]
        health = await server.http.get("/healthz")
        assert health.status_code == 503
        assert health.json()["status"] == "unavailable"
        stats = await server.stats()
        assert stats["backplane"]["connected"] is False
        assert stats["backplane"]["last_error"]
        assert "trio_sse_backplane_up 0.0" in (await server.http.get("/metrics")).text
        assert (await server.http.get("/livez")).status_code == 200
        # The stream stays open, and heartbeats keep coming.
        heartbeats = conn.body.count(b": heartbeat\n")
        await conn.read_until(lambda c: c.body.count(b": heartbeat\n") >= heartbeats + 2)
        # A stream that needs Redis to start (a replay) ends at once, cleanly, so that
        # the browser retries after `retry`.
        refused = await SSEConnection.open(server, "/events/t", headers=[("Last-Event-ID", "1-0")])
        await refused.read_to_end()
        assert refused.status == 200
        assert refused.ended_cleanly
        await refused.close_fin()

        await trio.to_thread.run_sync(own_redis_server.start)
        with trio.fail_after(TIMEOUT):
            while (await server.http.get("/healthz")).status_code != 200:  # noqa: ASYNC110
                await trio.sleep(0.05)
        after = await server.publish("t", data="after")
        events = await conn.read_events(2)
        assert [e.last_event_id for e in events] == [first, after]
        assert not conn.ended_cleanly
        await conn.close_fin()


async def test_an_id_redis_cannot_store_is_a_400(redis_server: RedisServer) -> None:
    async with (
        open_redis_broker(redis_server.url, key_prefix=f"test:{uuid.uuid4().hex}:") as broker,
        running_server(broker=broker) as server,
    ):
        response = await server.http.post("/events/t", json={"data": "x", "id": "mine"})
        assert response.status_code == 400
        assert "stream id" in response.json()["error"]
