"""Requests that must be refused, or must not hold what they do not need (issue 12: 4, 7, 8, 9).

Over real sockets with a real Hypercorn (``tests.wire.running_server``), except for the
pure validation (the body parser, :class:`~trio_sse.web.AuthConfig`), tested directly.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import quart
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from quart_trio import QuartTrio

from tests.test_cli import serve_process
from tests.wire import TIMEOUT, Server, SSEConnection, read_response_head, running_server
from trio_sse import MemoryBroker, ServerSentEvent, event_stream
from trio_sse.cli import main
from trio_sse.web import (
    Action,
    AuthConfig,
    Authorizer,
    CorsPolicy,
    Credentials,
    RequestError,
    event_from_body,
)

SECRET = "k" * 32
HUGE_INT = "9" * 5000  # over Python's int-to-str limit (4300 digits)


# -- 4. HEAD on a stream ------------------------------------------------------------


async def send_head(
    server: Server, path: str, headers: Iterable[tuple[str, str]] = ()
) -> tuple[trio.SocketStream, int, dict[str, str]]:
    """Send ``HEAD path`` on a new connection; return it with the answer's status and headers."""
    host, port = server.host_port
    stream = await trio.open_tcp_stream(host, port)
    lines = [f"HEAD {path} HTTP/1.1", f"Host: {host}:{port}", "Accept: text/event-stream"]
    lines += [f"{name}: {value}" for name, value in headers]
    await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = (await read_response_head(stream))[0].decode("latin-1")
    status_line, *header_lines = head.split("\r\n")
    answer = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        answer[name.strip().lower()] = value.strip()
    return stream, int(status_line.split(" ")[1]), answer


async def answers_next_request(stream: trio.SocketStream) -> bool:
    """Whether the server answers a second request on ``stream`` in full: only once the
    first response (a HEAD's) has ended, since HTTP/1.1 answers in order."""
    await stream.send_all(b"GET /no-such-page HTTP/1.1\r\nHost: x\r\n\r\n")
    received = bytearray()
    while True:
        head, found, body = bytes(received).partition(b"\r\n\r\n")
        if found and head.startswith(b"HTTP/1.1 404"):
            length = next(
                int(line.partition(b":")[2])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            if len(body) >= length:
                return True
        data = await stream.receive_some(65536)
        if not data:
            return False
        received += data


def plain_quart_app(broker: MemoryBroker) -> QuartTrio:
    """An app of a user's own: event_stream under Quart's generic connection class."""
    app = QuartTrio(__name__)

    @app.get("/events/<topic>")
    async def stream(topic: str) -> quart.ResponseReturnValue:
        return event_stream(broker, topic)

    return app


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["reference app", "plain Quart app"])
async def test_head_on_a_stream_answers_its_headers_and_subscribes_nothing(kind: str) -> None:
    # Before: every HEAD entered the body, so it subscribed (101 subscribers for 1
    # subscriber and 100 HEADs) and the response never ended (0 of 100 answered a
    # next request), outside the --max-streams cap.
    broker = MemoryBroker()
    app = plain_quart_app(broker) if kind == "plain Quart app" else None
    heads = 100
    async with running_server(broker=broker, app=app, max_streams=5) as server:
        subscriber = await SSEConnection.open(server, "/events/t")
        held: list[trio.SocketStream] = []
        try:
            await server.wait_for_subscribers(1)
            for _ in range(heads):
                stream, status, headers = await send_head(server, "/events/t")
                held.append(stream)
                assert status == 200
                assert headers["content-type"] == "text/event-stream; charset=utf-8"
                assert headers["cache-control"] == "no-cache"
            finished: list[bool] = []

            async def check(stream: trio.SocketStream) -> None:
                finished.append(await answers_next_request(stream))

            with trio.move_on_after(TIMEOUT):
                async with trio.open_nursery() as nursery:
                    for stream in held:
                        nursery.start_soon(check, stream)
            assert (finished.count(True), broker.statistics().subscribers) == (heads, 1)
            # The subscriber beside them gets every event.
            for n in range(20):
                await broker.publish("t", ServerSentEvent(str(n)))
            events = await subscriber.read_events(20)
            assert [event.data for event in events] == [str(n) for n in range(20)]
            if kind == "reference app":
                # The cap still admits GETs up to itself, and counts nothing else.
                limiter = server.app.extensions["trio_sse"].limiter
                assert limiter.open_streams == 1
                more = [await SSEConnection.open(server, "/events/t") for _ in range(5)]
                assert [c.status for c in more] == [200, 200, 200, 200, 503]
                for connection in more:
                    await connection.close_fin()
        finally:
            await subscriber.close_fin()
            for stream in held:
                await stream.aclose()


async def test_head_on_a_stream_is_still_checked_for_topic_and_token() -> None:
    config = AuthConfig(jwt_key=SECRET, subscribe_requires_token=True)
    reader = jwt.encode({"trio_sse": {"subscribe": ["news"]}}, SECRET, algorithm="HS256")
    async with running_server(auth=config) as server:
        streams = []
        try:
            for path, headers, expected in [
                ("/events/news", [], 401),
                ("/events/sport", [("Authorization", f"Bearer {reader}")], 403),
                ("/events/a%20b", [("Authorization", f"Bearer {reader}")], 400),
                ("/events/news", [("Authorization", f"Bearer {reader}")], 200),
            ]:
                stream, status, _ = await send_head(server, path, headers)
                streams.append(stream)
                assert (path, status) == (path, expected)
            assert server.broker.statistics().subscribers == 0
        finally:
            for stream in streams:
                await stream.aclose()


# -- 7. numbers JSON cannot carry ---------------------------------------------------

BAD_NUMBERS = [
    ('{"data": ' + HUGE_INT + "}", "5000 digits"),
    ('{"data": -' + HUGE_INT + "}", "5000 digits"),
    ('{"data": 1e999}', "1e999"),
    ('{"data": -1e999}', "-1e999"),
    ('{"data": [1, {"x": [2, 1e999]}]}', "1e999"),
    ('{"data": {"a": [' + HUGE_INT + "]}}", "5000 digits"),
    ('{"data": "x", "retry": ' + HUGE_INT + "}", "5000 digits"),
    ('{"data": 1' + "0" * 400 + ".5}", "out of range"),
]


@pytest.mark.parametrize(("body", "problem"), BAD_NUMBERS, ids=range(len(BAD_NUMBERS)))
def test_parser_refuses_numbers_out_of_range_at_any_depth(body: str, problem: str) -> None:
    with pytest.raises(RequestError) as refused:
        event_from_body(body.encode())
    assert refused.value.status == 400
    assert problem in str(refused.value)


def test_parser_keeps_ordinary_numbers_exactly() -> None:
    body = b'{"data": [0, -1, 1.5, 1e308, -2.5e-300, 12345678901234567890, ' + b"9" * 1000 + b"]}"
    event = event_from_body(body)
    assert json.loads(event.data) == [
        0,
        -1,
        1.5,
        1e308,
        -2.5e-300,
        12345678901234567890,
        10**1000 - 1,
    ]


async def test_numbers_out_of_range_get_400_and_a_subscriber_gets_only_real_events() -> None:
    # Before: the 5000-digit integers answered 500 (a traceback each) and 1e999 was
    # published as `Infinity`, which no JSON parser reads.
    async with running_server() as server:
        subscriber = await SSEConnection.open(server, "/events/t")
        try:
            await server.wait_for_subscribers(1)
            answers = []
            for body, _ in BAD_NUMBERS:
                response = await server.http.post(
                    "/events/t", content=body, headers={"Content-Type": "application/json"}
                )
                answers.append((response.status_code, response.headers["content-type"]))
                assert "error" in response.json()
            assert answers == [(400, "application/json")] * len(BAD_NUMBERS)
            assert server.broker.statistics().published == 0
            await server.publish("t", data=[1, 2.5])
            (event,) = await subscriber.read_events(1)
            assert json.loads(event.data) == [1, 2.5]
        finally:
            await subscriber.close_fin()


# -- 8. publishing needs a JSON content type ----------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",  # what a cross-site fetch or form can send without a preflight
        "text/plain; charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        None,
        "application/jsonp",
        "text/json",
        "application/json; charset=latin-1",
    ],
)
async def test_publish_without_json_content_type_gets_415(content_type: str | None) -> None:
    # Before: 202, published (any web page could publish to an open server).
    async with running_server() as server:
        subscriber = await SSEConnection.open(server, "/events/t")
        try:
            await server.wait_for_subscribers(1)
            headers = {} if content_type is None else {"Content-Type": content_type}
            refused = await server.http.post(
                "/events/t", content=b'{"data": "forged"}', headers=headers
            )
            assert refused.status_code == 415, refused.text
            assert "application/json" in refused.json()["error"]
            assert server.broker.statistics().published == 0
            # The subscriber gets the real events, and only them.
            for accepted in (
                "application/json",
                "application/json; charset=utf-8",
                "Application/JSON",
            ):
                response = await server.http.post(
                    "/events/t", content=b'{"data": "real"}', headers={"Content-Type": accepted}
                )
                assert response.status_code == 202, (accepted, response.text)
            events = await subscriber.read_events(3)
            assert [event.data for event in events] == ["real"] * 3
            assert server.broker.statistics().published == 3
        finally:
            await subscriber.close_fin()


async def test_cross_origin_text_plain_publish_is_refused_and_json_is_not() -> None:
    # The JSON publish's preflight is answered: tests/test_cors.py.
    page = "https://page.example"
    async with running_server(cors=CorsPolicy.allowing([page])) as server:
        simple = await server.http.post(
            "/events/t",
            content=b'{"data": "x"}',
            headers={"Origin": page, "Content-Type": "text/plain"},
        )
        assert simple.status_code == 415
        # Readable by the allowed page, so it can show why.
        assert simple.headers["access-control-allow-origin"] == page
        posted = await server.http.post("/events/t", json={"data": "x"}, headers={"Origin": page})
        assert posted.status_code == 202


async def test_the_publish_cli_sends_json() -> None:
    async with running_server() as server:
        url = f"{server.url}/events/t"
        status = await trio.to_thread.run_sync(main, ["publish", url, "--data", "hi"])
        assert status == 0
        assert server.broker.statistics().published == 1


# -- 9. JWT time claims and keys ----------------------------------------------------


def signed(**claims: Any) -> str:
    return jwt.encode({"trio_sse": {"subscribe": ["*"], "publish": ["*"]}, **claims}, SECRET)


BAD_TIME_CLAIMS = [
    ({"exp": "9999999999"}, "exp"),  # before: 200, and the stream never expired
    ({"exp": 10**400}, "exp"),  # before: 500
    ({"exp": 1e300}, "exp"),  # before: 200, a deadline in 1e300 s
    ({"nbf": True}, "nbf"),  # before: 200 (PyJWT reads true as 1)
    ({"nbf": "0"}, "nbf"),  # before: 200
    ({"nbf": -(10**400)}, "nbf"),  # before: 200
    ({"iat": "0"}, "iat"),  # before: 200
]


@pytest.mark.parametrize(("claims", "name"), BAD_TIME_CLAIMS, ids=range(len(BAD_TIME_CLAIMS)))
async def test_jwt_time_claims_must_be_numbers_in_range(claims: dict[str, Any], name: str) -> None:
    config = AuthConfig(jwt_key=SECRET, subscribe_requires_token=True)
    async with running_server(auth=config) as server:
        bearer = [("Authorization", f"Bearer {signed(**claims)}")]
        connection = await SSEConnection.open(server, "/events/t", headers=bearer)
        try:
            assert connection.status == 401
        finally:
            await connection.close_fin()
        response = await server.http.post("/events/t", json={"data": "x"}, headers=dict(bearer))
        assert response.status_code == 401
        assert f'"{name}"' in response.json()["error"]
        assert response.headers["www-authenticate"] == "Bearer"
        assert server.broker.statistics().published == 0


def test_jwt_ordinary_time_claims_are_accepted() -> None:
    now = time.time()
    token = signed(exp=int(now) + 60, nbf=now - 1, iat=int(now))
    authorizer = Authorizer(AuthConfig(jwt_key=SECRET))
    grant = authorizer.authorize(
        Action.SUBSCRIBE, "t", Credentials(authorization=f"Bearer {token}")
    )
    assert grant.expires_at == int(now) + 60


def rsa_keys() -> tuple[rsa.RSAPrivateKey, bytes, bytes]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return private, public_pem, private_pem


def test_auth_config_refuses_a_key_that_does_not_suit_its_algorithms() -> None:
    # Before: all accepted; every token was then refused (or, with a private key, 500).
    _, public_pem, private_pem = rsa_keys()
    cases: list[tuple[str | bytes, tuple[str, ...], str]] = [
        (public_pem, ("HS256",), "HS256"),
        (public_pem, ("HS256", "RS256"), "mixes HS\\* and RS\\*"),
        (SECRET, ("RS256",), "RS256"),
        (private_pem, ("RS256",), "private key"),
    ]
    for key, algorithms, problem in cases:
        with pytest.raises(ValueError, match=problem):
            AuthConfig(jwt_key=key, jwt_algorithms=algorithms)
    AuthConfig(jwt_key=public_pem, jwt_algorithms=("RS256", "RS512"))
    AuthConfig(jwt_key=SECRET, jwt_algorithms=("HS256", "HS512"))


def test_serve_refuses_a_key_file_with_the_wrong_algorithm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, public_pem, _ = rsa_keys()
    key_file = tmp_path / "public.pem"
    key_file.write_bytes(public_pem)
    for argv in (
        ["--jwt-key-file", str(key_file), "--jwt-algorithm", "HS256"],
        ["--jwt-key", SECRET, "--jwt-algorithm", "RS256"],
    ):
        with pytest.raises(SystemExit) as exited:
            main(["serve", *argv])
        assert exited.value.code == 2
        assert "--jwt-algorithm" in capsys.readouterr().err


@pytest.mark.slow
async def test_serve_infers_rs256_from_a_public_key_file(tmp_path: Path) -> None:
    # Before: the default HS256 made every RS256 token fail with 401.
    private, public_pem, _ = rsa_keys()
    key_file = tmp_path / "public.pem"
    key_file.write_bytes(public_pem)
    token = jwt.encode({"trio_sse": {"publish": ["t"]}}, private, algorithm="RS256")
    async with (
        serve_process("--jwt-key-file", str(key_file)) as (_, (host, port)),
        httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=TIMEOUT) as http,
    ):
        response = await http.post(
            "/events/t", json={"data": "x"}, headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 202, response.text
