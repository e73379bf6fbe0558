"""Presence over HTTP: ``GET /presence/<topic>``, join/leave events, across workers.

The broker-level behaviour (counts, one join per subject, bounds) is in the Broker
contract suite, for both brokers; here the routes, the auth model, and workers that
stop cleanly or die.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
import trio

from tests.redis_server import RedisServer
from tests.test_cli import serve_process
from tests.wire import TIMEOUT, SSEConnection, running_server
from trio_sse import MemoryBroker
from trio_sse.web import AuthConfig

SECRET = "k" * 32


def token(sub: str | None = None, topics: tuple[str, ...] = ("*",), **claims: Any) -> str:
    payload: dict[str, Any] = {"trio_sse": {"subscribe": list(topics)}, **claims}
    if sub is not None:
        payload["sub"] = sub
    return jwt.encode(payload, SECRET, algorithm="HS256")


def as_(sub: str, topics: tuple[str, ...] = ("*",)) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {token(sub, topics)}")]


async def event_number(conn: SSEConnection, n: int) -> tuple[str, str]:
    """The type and data of the stream's ``n``-th event (from 1), once it came."""
    event = (await conn.read_events(n))[n - 1]
    return event.type, event.data


async def presence_until(
    http: httpx.AsyncClient, topic: str, check: Callable[[dict[str, Any]], bool], **params: Any
) -> dict[str, Any]:
    """``GET /presence/<topic>`` until ``check`` holds (a worker writes it out in ~50 ms)."""
    with trio.fail_after(TIMEOUT):
        while True:
            response = await http.get(f"/presence/{topic}", params=params)
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            if check(body):
                return body
            await trio.sleep(0.02)


async def test_presence_lists_streams_and_token_subjects() -> None:
    async with running_server(auth=AuthConfig(jwt_key=SECRET)) as server:
        opened = [
            await SSEConnection.open(server, "/events/room", headers=as_("ana")),
            await SSEConnection.open(server, "/events/room", headers=as_("ana")),
            await SSEConnection.open(server, "/events/room", headers=as_("bo")),
            await SSEConnection.open(server, "/events/room"),  # anonymous
            # Several topics on one stream: present on each.
            await SSEConnection.open(server, "/events?topic=room&topic=desk", headers=as_("cy")),
        ]
        try:
            body = await presence_until(server.http, "room", lambda b: b["streams"] == 5)
            assert body == {
                "topic": "room",
                "streams": 5,
                "subs": ["ana", "bo", "cy"],
                "sub_count": 3,
                "truncated": False,
            }
            capped = (await server.http.get("/presence/room", params={"limit": 2})).json()
            assert (capped["subs"], capped["sub_count"], capped["truncated"]) == (
                ["ana", "bo"],
                3,
                True,
            )
            desk = (await server.http.get("/presence/desk")).json()
            assert (desk["streams"], desk["subs"]) == (1, ["cy"])
        finally:
            for conn in opened:
                await conn.close_fin()
        await presence_until(server.http, "room", lambda b: b["streams"] == 0)


@pytest.mark.parametrize(
    ("path", "status", "words"),
    [
        ("/presence/room?limit=1001", 400, "limit must be an integer from 0 to 1000"),
        ("/presence/room?limit=-1", 400, "limit"),
        ("/presence/room?limit=99999999999999999999", 400, "limit"),
        ("/presence/bad%20topic", 400, "topic"),
    ],
)
async def test_bad_presence_requests_are_400_naming_the_problem(
    path: str, status: int, words: str
) -> None:
    async with running_server() as server:
        response = await server.http.get(path)
        assert response.status_code == status
        assert words in response.json()["error"]


async def test_reading_presence_needs_the_subscribe_right_with_subscribe_auth() -> None:
    auth = AuthConfig(jwt_key=SECRET, subscribe_requires_token=True)
    async with running_server(auth=auth) as server:
        assert (await server.http.get("/presence/room")).status_code == 401
        response = await server.http.get("/presence/room", headers=as_("eve", ("other",)))
        assert response.status_code == 403
        assert "room" in response.json()["error"]
        response = await server.http.get("/presence/room", headers=as_("ana", ("room",)))
        assert response.status_code == 200


@pytest.mark.parametrize("sub", ["", "x" * 257, 42])
async def test_a_token_whose_sub_presence_cannot_list_is_401(sub: Any) -> None:
    async with running_server(auth=AuthConfig(jwt_key=SECRET)) as server:
        bad = jwt.encode({"trio_sse": {"subscribe": ["*"]}, "sub": sub}, SECRET, algorithm="HS256")
        response = await server.http.get("/events/room", headers={"Authorization": f"Bearer {bad}"})
        assert response.status_code == 401
        assert "sub" in response.json()["error"].lower()


async def test_join_and_leave_events_on_the_topic_once_per_subject() -> None:
    broker = MemoryBroker(presence_events=True)
    async with running_server(broker=broker, auth=AuthConfig(jwt_key=SECRET)) as server:
        watcher = await SSEConnection.open(server, "/events/room")
        tabs = [
            await SSEConnection.open(server, "/events/room", headers=as_("ana")) for _ in range(3)
        ]
        (joined,) = await watcher.read_events(1)
        assert (joined.type, joined.data) == ("join", '{"sub":"ana"}')
        for tab in tabs:
            await tab.close_rst()
        assert await event_number(watcher, 2) == ("leave", '{"sub":"ana"}')
        # Retained like any event: a client that resumes from before gets both.
        resumed = await SSEConnection.open(
            server, "/events/room", headers=[("Last-Event-ID", str(int(joined.last_event_id) - 1))]
        )
        assert [e.type for e in await resumed.read_events(2)] == ["join", "leave"]
        await resumed.close_fin()
        await watcher.close_fin()


@pytest.mark.slow
async def test_presence_across_workers_and_a_crashed_worker_drops_out_within_the_ttl(
    redis_server: RedisServer,
) -> None:
    topic = f"p{uuid.uuid4().hex[:8]}"
    options = ["--broker", redis_server.url, "--presence-events", "--presence-ttl", "2"]
    env_key = ["--jwt-key", SECRET]
    async with (
        serve_process(*options, *env_key) as (one, on_one),
        serve_process(*options, *env_key) as (_, on_two),
        httpx.AsyncClient(base_url=f"http://{on_two[0]}:{on_two[1]}", timeout=TIMEOUT) as http,
    ):
        watcher = await SSEConnection.open(on_two, f"/events/{topic}")
        ana_one = await SSEConnection.open(on_one, f"/events/{topic}", headers=as_("ana"))
        ana_two = await SSEConnection.open(on_two, f"/events/{topic}", headers=as_("ana"))
        bo_one = await SSEConnection.open(on_one, f"/events/{topic}", headers=as_("bo"))
        body = await presence_until(http, topic, lambda b: b["streams"] == 4)
        assert (body["subs"], body["sub_count"]) == (["ana", "bo"], 2)
        # ana has a stream on each worker: one join for her, one for bo.
        joins = await watcher.read_events(2)
        assert sorted((e.type, e.data) for e in joins) == [
            ("join", '{"sub":"ana"}'),
            ("join", '{"sub":"bo"}'),
        ]
        # Worker one dies without a word: its streams and bo (there only) drop out
        # within the ttl; ana stays (her stream on worker two).
        one.send_signal(signal.SIGKILL)
        died = trio.current_time()
        body = await presence_until(http, topic, lambda b: b["streams"] == 2)
        gone_after = trio.current_time() - died
        assert (body["subs"], body["sub_count"]) == (["ana"], 1)
        assert await event_number(watcher, 3) == ("leave", '{"sub":"bo"}')
        # The ttl (2 s) and a refresh beat of the surviving worker (2/3 s) bound it.
        assert gone_after < 2 + 2 / 3 + 1.5, gone_after
        await ana_two.close_fin()
        assert await event_number(watcher, 4) == ("leave", '{"sub":"ana"}')
        for conn in (watcher, ana_one, bo_one):
            await conn.close_fin()


@pytest.mark.slow
async def test_a_worker_that_stops_cleanly_withdraws_at_once(redis_server: RedisServer) -> None:
    topic = f"p{uuid.uuid4().hex[:8]}"
    # A long ttl: only the stopping worker's own withdrawal can be quick.
    options = ["--broker", redis_server.url, "--presence-events", "--presence-ttl", "60"]
    async with (
        serve_process(*options, "--jwt-key", SECRET) as (one, on_one),
        serve_process(*options, "--jwt-key", SECRET) as (_, on_two),
        httpx.AsyncClient(base_url=f"http://{on_two[0]}:{on_two[1]}", timeout=TIMEOUT) as http,
    ):
        watcher = await SSEConnection.open(on_two, f"/events/{topic}")
        ana = await SSEConnection.open(on_one, f"/events/{topic}", headers=as_("ana"))
        (joined,) = await watcher.read_events(1)
        assert joined.type == "join"
        one.send_signal(signal.SIGTERM)
        await ana.read_to_end()
        await ana.close_fin()
        assert await event_number(watcher, 2) == ("leave", '{"sub":"ana"}')
        body = await presence_until(http, topic, lambda b: b["streams"] == 1)
        assert body["subs"] == []
        with trio.fail_after(TIMEOUT):
            await one.wait()
        await watcher.close_fin()
