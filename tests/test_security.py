"""Authorization and stream limits in the reference app, over a real socket."""

from __future__ import annotations

import time
from typing import Any

import httpx
import jwt
import pytest
import trio

from tests.test_cli import serve_process
from tests.wire import SSEConnection, running_server
from trio_sse.app import create_app
from trio_sse.cli import main
from trio_sse.protocol import ServerSentEvent
from trio_sse.web import AuthConfig

SECRET = "k" * 32
PUBLISH_TOKEN = "publish-token-0123456789"


def token(**claims: Any) -> str:
    return jwt.encode({"trio_sse": claims}, SECRET, algorithm="HS256")


async def test_publishing_needs_the_publish_token() -> None:
    async with running_server(auth=AuthConfig(publish_token=PUBLISH_TOKEN)) as server:
        response = await server.http.post("/events/t", json={"data": "x"})
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json() == {"error": "publish needs a bearer token"}
        response = await server.http.post(
            "/events/t", json={"data": "x"}, headers={"Authorization": "Bearer wrong-token-0000"}
        )
        assert (response.status_code, response.json()) == (401, {"error": "invalid token"})
        assert server.broker.statistics().published == 0
        response = await server.http.post(
            "/events/t", json={"data": "x"}, headers={"Authorization": f"Bearer {PUBLISH_TOKEN}"}
        )
        assert response.status_code == 202
        # Streams stay public with only a publish token.
        connection = await SSEConnection.open(server, "/events/t")
        assert connection.status == 200
        await connection.close_fin()


async def test_jwt_topic_claims_decide_publish_and_subscribe() -> None:
    config = AuthConfig(jwt_key=SECRET, subscribe_requires_token=True)
    async with running_server(auth=config) as server:
        reader = token(subscribe=["news"])
        writer = token(publish=["news"])
        anonymous = await SSEConnection.open(server, "/events/news")
        assert anonymous.status == 401
        wrong_topic = await SSEConnection.open(
            server, "/events/sport", headers=[("Authorization", f"Bearer {reader}")]
        )
        assert wrong_topic.status == 403
        # A browser's EventSource: the token in a cookie, or in the query string.
        by_cookie = await SSEConnection.open(
            server, "/events/news", headers=[("Cookie", f"trio_sse_token={reader}")]
        )
        by_query = await SSEConnection.open(server, f"/events/news?access_token={reader}")
        assert (by_cookie.status, by_query.status) == (200, 200)
        await server.wait_for_subscribers(2)
        denied = await server.http.post(
            "/events/news", json={"data": "x"}, headers={"Authorization": f"Bearer {reader}"}
        )
        assert denied.status_code == 403
        assert denied.json() == {"error": "the token does not allow publish on topic 'news'"}
        allowed = await server.http.post(
            "/events/news", json={"data": "hi"}, headers={"Authorization": f"Bearer {writer}"}
        )
        assert allowed.status_code == 202
        for connection in (by_cookie, by_query):
            (event,) = await connection.read_events(1)
            assert event.data == "hi"
            await connection.close_fin()
        for connection in (anonymous, wrong_topic):
            await connection.close_fin()


async def test_expired_token_is_refused() -> None:
    config = AuthConfig(jwt_key=SECRET, subscribe_requires_token=True)
    expired = jwt.encode(
        {"trio_sse": {"subscribe": ["*"]}, "exp": int(time.time()) - 5}, SECRET, algorithm="HS256"
    )
    async with running_server(auth=config) as server:
        response = await server.http.get(
            "/events/news", headers={"Authorization": f"Bearer {expired}"}
        )
        assert (response.status_code, response.json()) == (401, {"error": "the token has expired"})


async def test_stream_cap_answers_503_with_retry_after_and_frees_the_slot() -> None:
    async with running_server(max_streams=2) as server:
        first = await SSEConnection.open(server, "/events/t")
        second = await SSEConnection.open(server, "/events/t")
        refused = await server.http.get("/events/t")
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "5"
        assert refused.json() == {"error": "too many open streams (2); retry later"}
        # Other routes are not streams and are not counted.
        assert (await server.http.post("/events/t", json={"data": "x"})).status_code == 202
        await first.close_fin()
        limiter = server.app.extensions["trio_sse"].limiter
        with trio.fail_after(5):
            while limiter.open_streams != 1:  # noqa: ASYNC110 - the slot frees as the request ends
                await trio.sleep(0.005)
        third = await SSEConnection.open(server, "/events/t")
        assert third.status == 200
        await second.close_fin()
        await third.close_fin()
        assert limiter.refused == 1


async def test_streams_of_several_topics_count_against_the_caps_too() -> None:
    async with running_server(max_streams=2, max_streams_per_ip=2) as server:
        first = await SSEConnection.open(server, "/events?topic=a&topic=b")
        second = await SSEConnection.open(server, "/events/a")
        refused = await server.http.get("/events", params=[("topic", "a"), ("topic", "c")])
        assert refused.status_code == 503
        assert refused.json() == {"error": "too many open streams (2); retry later"}
        for conn in (first, second):
            await conn.close_fin()


async def test_per_ip_cap_counts_each_address_apart() -> None:
    async with running_server(max_streams_per_ip=1) as server:
        host, port = server.host_port
        first = await SSEConnection.open(server, "/events/t")
        again = await SSEConnection.open(server, "/events/t")
        assert (first.status, again.status) == (200, 503)
        # Another loopback address is another client.
        sock = trio.socket.socket()
        await sock.bind(("127.0.0.2", 0))
        await sock.connect((host, port))
        stream = trio.SocketStream(sock)
        await stream.send_all(f"GET /events/t HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        head = await stream.receive_some()
        assert head.startswith(b"HTTP/1.1 200")
        await stream.aclose()
        await first.close_fin()
        await again.close_fin()


@pytest.mark.parametrize(("total", "per_ip"), [(-1, 1), (1, -1)])
async def test_negative_limits_are_refused(total: int, per_ip: int) -> None:
    with pytest.raises(ValueError, match="limits must be >= 0"):
        create_app(max_streams=total, max_streams_per_ip=per_ip)


async def test_serve_reads_the_publish_token_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRIO_SSE_PUBLISH_TOKEN", PUBLISH_TOKEN)
    async with (
        serve_process("--max-streams-per-ip", "1") as (_, (host, port)),
        httpx.AsyncClient(base_url=f"http://{host}:{port}") as http,
    ):
        assert (await http.post("/events/t", json={"data": "x"})).status_code == 401
        authorized = {"Authorization": f"Bearer {PUBLISH_TOKEN}"}
        assert (
            await http.post("/events/t", json={"data": "x"}, headers=authorized)
        ).status_code == 202
        first = await SSEConnection.open((host, port), "/events/t")
        second = await SSEConnection.open((host, port), "/events/t")
        assert (first.status, second.status) == (200, 503)
        await first.close_fin()
        await second.close_fin()


def test_serve_help_never_shows_a_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TRIO_SSE_PUBLISH_TOKEN", PUBLISH_TOKEN)
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    assert "--publish-token" in out
    assert PUBLISH_TOKEN not in out


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["--publish-token", "short"], "at least 16 characters"),
        (["--subscribe-auth"], "--subscribe-auth needs --jwt-key"),
        (["--jwt-key-file", "/nonexistent/key.pem"], "cannot read /nonexistent/key.pem"),
        (["--jwt-key", SECRET, "--jwt-key-file", "/x"], "not both"),
        (["--jwt-algorithm", "none"], "invalid choice"),
        (["--max-streams", "-1"], "--max-streams"),
    ],
)
def test_serve_refuses_bad_security_options(
    argv: list[str], problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", *argv])
    assert exited.value.code == 2
    assert problem in capsys.readouterr().err


async def test_a_stream_ends_when_its_token_expires() -> None:
    config = AuthConfig(jwt_key=SECRET, subscribe_requires_token=True)
    expires = int(time.time()) + 2
    short_lived = jwt.encode(
        {"trio_sse": {"subscribe": ["news"]}, "exp": expires}, SECRET, algorithm="HS256"
    )
    async with running_server(auth=config, heartbeat=0.2) as server:
        connection = await SSEConnection.open(
            server, "/events/news", headers=[("Authorization", f"Bearer {short_lived}")]
        )
        assert connection.status == 200
        await server.wait_for_subscribers(1)
        await server.broker.publish("news", ServerSentEvent("while valid"))
        await connection.read_events(1)
        # Heartbeats keep coming meanwhile; the end is clean (terminating chunk).
        await connection.read_to_end(timeout=10)
        assert connection.ended_cleanly
        assert time.time() >= expires
        await server.wait_for_subscribers(0)
        metrics = (await server.http.get("/metrics")).text
        assert 'trio_sse_disconnects_total{reason="auth_expired"} 1.0' in metrics
        await connection.close_fin()
