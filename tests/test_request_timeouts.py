"""Clients that open a request and never finish it: bodies that never arrive, and
HTTP/2 connections that never open a stream.

A request body must be in within the app's ``body_timeout`` (408 otherwise), over
HTTP/1.1 and HTTP/2 alike; an HTTP/2 connection with no stream open is closed after
``REQUEST_HEAD_TIMEOUT``, as an idle HTTP/1.1 connection is, whatever it sends
meanwhile (pings). Streams are never cut by either. Each test keeps a normal
subscriber beside the attackers, which must get every event, and checks ``/livez``.
"""

from __future__ import annotations

import json
import math
import ssl
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.settings
import httpx
import hypercorn.trio.run
import pytest
import trio

from tests.test_cli import SERVE, listening_process
from tests.test_tls import TLSFiles, tls  # noqa: F401 (the fixture)
from tests.wire import TIMEOUT, Server, SSEConnection, read_response_head, running_server
from trio_sse import create_app
from trio_sse.server._hypercorn_idle import IdleBoundConnection, bound_idle_h2_connections

# Short, so that the tests take seconds; the default is DEFAULT_BODY_TIMEOUT.
BODY_TIMEOUT = 0.5
# The same for serve()'s request_head_timeout (REQUEST_HEAD_TIMEOUT, 5 s, by default):
# long enough that the streams opened first are well within it.
IDLE_TIMEOUT = 1.5
ATTACKERS = 50
# Hypercorn's default SETTINGS_MAX_CONCURRENT_STREAMS: one connection's worth.
H2_STREAMS = 100
PUBLISH_HEAD = (
    "POST /events/t HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{framing}\r\n"
)
# A body promised and never sent: by its length, or as chunks that never end.
UNFINISHED_BODIES = {
    "content-length": PUBLISH_HEAD.format(framing="Content-Length: 100\r\n").encode() + b'{"da',
    "chunked": PUBLISH_HEAD.format(framing="Transfer-Encoding: chunked\r\n").encode()
    + b'4\r\n{"da\r\n',
}


async def read_until_closed(stream: trio.abc.Stream) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    try:
        while data := await stream.receive_some():
            received += data
    except trio.BrokenResourceError:
        pass  # closed with bytes of ours unread: the kernel sent RST
    return received


def status_and_json(response: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    parsed: dict[str, object] = json.loads(body)
    return status, parsed


async def unfinished_publish(
    address: tuple[str, int], request: bytes, answers: list[bytes]
) -> None:
    stream = await trio.open_tcp_stream(*address)
    async with stream:
        await stream.send_all(request)
        answers.append(await read_until_closed(stream))


async def assert_alive_and_streaming(server: Server, subscriber: SSEConnection, data: str) -> None:
    """``/livez`` answers, and ``subscriber`` gets an event published now."""
    assert (await server.http.get("/livez")).status_code == 200
    await server.publish("t", data=data)
    await subscriber.read_until(
        lambda conn: conn.events[-1:] != [] and conn.events[-1].data == data
    )


@pytest.mark.parametrize("framing", sorted(UNFINISHED_BODIES))
async def test_a_body_that_never_arrives_gets_408_over_http1(framing: str) -> None:
    async with running_server(body_timeout=BODY_TIMEOUT) as server:
        subscriber = await SSEConnection.open(server, "/events/t")
        try:
            await server.wait_for_subscribers(1)
            answers: list[bytes] = []
            with trio.fail_after(BODY_TIMEOUT + TIMEOUT):
                async with trio.open_nursery() as nursery:
                    for _ in range(ATTACKERS):
                        nursery.start_soon(
                            unfinished_publish,
                            server.host_port,
                            UNFINISHED_BODIES[framing],
                            answers,
                        )
                    await assert_alive_and_streaming(server, subscriber, "during")
            assert len(answers) == ATTACKERS
            for answer in answers:
                status, body = status_and_json(answer)
                assert status == 408
                assert "body" in str(body["error"])
                assert b"connection: close" in answer.lower()
            await assert_alive_and_streaming(server, subscriber, "after")
            assert [event.data for event in subscriber.events] == ["during", "after"]
            assert server.broker.statistics().published == 2
        finally:
            await subscriber.close_fin()


@dataclass
class H2Stream:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    ended: bool = False


class H2Peer:
    """A bare HTTP/2 client on ``h2``, over TCP or TLS, for requests no real client sends."""

    def __init__(self, stream: trio.abc.Stream, connection: h2.connection.H2Connection) -> None:
        self.stream = stream
        self.h2 = connection
        self.streams: dict[int, H2Stream] = {}
        self.closed_by_server = False

    @classmethod
    async def open(
        cls, address: tuple[str, int], *, tls_context: ssl.SSLContext | None = None
    ) -> H2Peer:
        """Connect and send the client preface (h2 with prior knowledge, or by ALPN)."""
        stream: trio.abc.Stream
        if tls_context is None:
            stream = await trio.open_tcp_stream(*address)
        else:
            stream = await trio.open_ssl_over_tcp_stream(*address, ssl_context=tls_context)
        peer = cls(stream, h2.connection.H2Connection(h2.config.H2Configuration(client_side=True)))
        peer.h2.initiate_connection()
        await peer.flush()
        return peer

    @classmethod
    async def upgrade(cls, address: tuple[str, int], path: str) -> H2Peer:
        """``GET path`` over HTTP/1.1 with ``Upgrade: h2c``: its response is stream 1."""
        stream = await trio.open_tcp_stream(*address)
        connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        settings_header = connection.initiate_upgrade_connection()
        assert settings_header is not None
        settings = settings_header.decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {address[0]}\r\nAccept: text/event-stream\r\n"
            f"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: {settings}\r\n"
            "\r\n"
        )
        await stream.send_all(request.encode())
        head, rest = await read_response_head(stream)
        assert head.startswith(b"HTTP/1.1 101 "), head
        peer = cls(stream, connection)
        peer.streams[1] = H2Stream()
        await peer.flush()
        peer.dispatch(rest)
        await peer.flush()
        return peer

    async def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            await self.stream.send_all(data)

    async def request(self, method: str, path: str, *, end_stream: bool) -> int:
        stream_id: int = self.h2.get_next_available_stream_id()
        headers = [(":method", method), (":scheme", "http"), (":authority", "x"), (":path", path)]
        if method == "POST":
            headers.append(("content-type", "application/json"))
        self.h2.send_headers(stream_id, headers, end_stream=end_stream)
        self.streams[stream_id] = H2Stream()
        await self.flush()
        return stream_id

    async def ping(self) -> None:
        self.h2.ping(b"12345678")
        await self.flush()

    def dispatch(self, data: bytes | bytearray) -> None:
        for event in self.h2.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                self.streams[event.stream_id].headers = dict(event.headers)
            elif isinstance(event, h2.events.DataReceived):
                self.streams[event.stream_id].body += event.data
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                self.streams[event.stream_id].ended = True

    async def read_until(self, condition: Callable[[H2Peer], bool]) -> None:
        """Read frames until ``condition(self)`` holds or the server closes."""
        with trio.fail_after(TIMEOUT):
            while not condition(self):
                await self._receive()
                if self.closed_by_server:
                    raise ConnectionError("the server closed the connection")

    async def wait_closed(self) -> None:
        """Read (answering as a client does) until the server closes the connection."""
        while not self.closed_by_server:
            await self._receive()

    async def _receive(self) -> None:
        try:
            data = await self.stream.receive_some()
        except trio.BrokenResourceError:  # TLS closed without close_notify, or RST
            data = b""
        if not data:
            self.closed_by_server = True
            return
        self.dispatch(data)
        try:
            await self.flush()
        except trio.BrokenResourceError:
            self.closed_by_server = True


def saw_event(stream_id: int, data: str) -> Callable[[H2Peer], bool]:
    return lambda peer: f"data: {data}\n".encode() in peer.streams[stream_id].body


@pytest.mark.slow
async def test_a_body_that_never_arrives_gets_408_over_http2() -> None:
    short = {"request_head_timeout": IDLE_TIMEOUT}
    async with running_server(body_timeout=BODY_TIMEOUT, serve_options=short) as server:
        subscriber = await SSEConnection.open(server, "/events/t")
        attacker = await H2Peer.open(server.host_port)
        try:
            await server.wait_for_subscribers(1)
            # Headers without END_STREAM: a body announced and never sent.
            posts = [
                await attacker.request("POST", "/events/t", end_stream=False)
                for _ in range(H2_STREAMS)
            ]
            await assert_alive_and_streaming(server, subscriber, "during")
            with trio.fail_after(BODY_TIMEOUT + TIMEOUT):
                await attacker.read_until(lambda peer: all(peer.streams[s].ended for s in posts))
            for stream_id in posts:
                response = attacker.streams[stream_id]
                assert response.headers[b":status"] == b"408"
                assert "body" in json.loads(response.body)["error"]
            await assert_alive_and_streaming(server, subscriber, "after")
            assert [event.data for event in subscriber.events] == ["during", "after"]
            assert server.broker.statistics().published == 2
            # With no stream left open, the connection itself is idle, and closed.
            with trio.fail_after(IDLE_TIMEOUT + TIMEOUT):
                await attacker.wait_closed()
        finally:
            await subscriber.close_fin()
            await attacker.stream.aclose()


IDLE_CONNECTIONS = 20


async def idle_h2_connection(
    address: tuple[str, int], tls_context: ssl.SSLContext | None, closed_after: list[float]
) -> None:
    """Send the preface (and, for some, pings), never a request; time the server's close."""
    peer = await H2Peer.open(address, tls_context=tls_context)
    start = trio.current_time()
    async with peer.stream, trio.open_nursery() as nursery:
        if len(closed_after) % 2:

            async def keep_pinging() -> None:
                # Traffic is not a request: it must not keep the connection open.
                while True:
                    await trio.sleep(0.5)
                    try:
                        await peer.ping()
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        return

            nursery.start_soon(keep_pinging)
        await peer.wait_closed()
        closed_after.append(trio.current_time() - start)
        nursery.cancel_scope.cancel()


@dataclass(frozen=True)
class Transport:
    """How the attackers and the subscriber beside them reach the server."""

    name: str
    # What the attackers offer by ALPN over TLS; nothing: prior knowledge.
    attacker_alpn: Sequence[str]
    use_tls: bool


TRANSPORTS = [
    Transport("h2c prior knowledge", [], use_tls=False),
    Transport("h2 over TLS by ALPN", ["h2"], use_tls=True),
    Transport("prior knowledge over TLS without ALPN", [], use_tls=True),
]


def unverified_context(alpn: Sequence[str]) -> ssl.SSLContext:
    # Who the server is does not matter here; the certificate is tested in test_tls.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


@pytest.mark.slow
@pytest.mark.parametrize("transport", TRANSPORTS, ids=lambda t: t.name)
async def test_an_h2_connection_without_streams_is_closed_but_streams_are_not(
    transport: Transport,
    tls: TLSFiles,  # noqa: F811 (the fixture)
) -> None:
    # A short idle timeout, given to serve(), rather than the production 5 s.
    short = {"request_head_timeout": IDLE_TIMEOUT}
    serving = (
        running_server(
            certfile=tls.certfile,
            keyfile=tls.keyfile,
            verify=tls.client_context,
            serve_options=short,
        )
        if transport.use_tls
        else running_server(serve_options=short)
    )
    attacker_context = subscriber_context = None
    if transport.use_tls:
        attacker_context = unverified_context(transport.attacker_alpn)
        subscriber_context = unverified_context(["h2"])
    async with serving as server:
        # Streams on h2 connections, open across the idle timeout: never cut.
        subscribers: list[H2Peer] = []
        try:
            subscribers.append(await H2Peer.open(server.host_port, tls_context=subscriber_context))
            if not transport.use_tls:
                subscribers.append(await H2Peer.upgrade(server.host_port, "/events/t"))
            for peer in subscribers:
                if 1 not in peer.streams:
                    assert await peer.request("GET", "/events/t", end_stream=True) == 1
            await server.wait_for_subscribers(len(subscribers))
            closed_after: list[float] = []
            with trio.fail_after(IDLE_TIMEOUT + TIMEOUT):
                async with trio.open_nursery() as nursery:
                    for _ in range(IDLE_CONNECTIONS):
                        nursery.start_soon(
                            idle_h2_connection, server.host_port, attacker_context, closed_after
                        )
            assert len(closed_after) == IDLE_CONNECTIONS
            # Cut by the idle timeout, not by anything sooner.
            assert min(closed_after) >= IDLE_TIMEOUT - 0.1
            assert (await server.http.get("/livez")).status_code == 200
            await server.publish("t", data="still streaming")
            for peer in subscribers:
                await peer.read_until(saw_event(1, "still streaming"))
        finally:
            for peer in subscribers:
                await peer.stream.aclose()


@pytest.mark.slow
async def test_cli_bounds_the_time_to_send_a_body() -> None:
    command = [*SERVE, "--port", "0", "--body-timeout", str(BODY_TIMEOUT)]
    async with listening_process(command) as (_, address):
        answers: list[bytes] = []
        with trio.fail_after(BODY_TIMEOUT + TIMEOUT):
            await unfinished_publish(address, UNFINISHED_BODIES["content-length"], answers)
        (answer,) = answers
        assert status_and_json(answer)[0] == 408
        async with httpx.AsyncClient(base_url=f"http://{address[0]}:{address[1]}") as http:
            assert (await http.get("/livez")).status_code == 200


@pytest.mark.slow
@pytest.mark.parametrize("value", ["0", "-1", "nan", "soon"])
def test_cli_refuses_a_bad_body_timeout(value: str) -> None:
    result = subprocess.run(
        [*SERVE, "--body-timeout", value], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 2
    assert "--body-timeout" in result.stderr


@pytest.mark.parametrize("value", [0.0, -1.0, math.nan, math.inf])
def test_create_app_refuses_a_bad_body_timeout(value: float) -> None:
    with pytest.raises(ValueError, match="body_timeout"):
        create_app(body_timeout=value)


async def test_a_body_over_the_limit_is_refused_without_waiting_for_it() -> None:
    async with running_server(body_timeout=60.0, max_body_size=1000) as server:
        subscriber = await SSEConnection.open(server, "/events/t")
        try:
            await server.wait_for_subscribers(1)
            announced = PUBLISH_HEAD.format(framing="Content-Length: 1001\r\n").encode()
            chunked = PUBLISH_HEAD.format(framing="Transfer-Encoding: chunked\r\n").encode()
            # Over the limit in chunks, then silence: refused at once, not after 60 s.
            sent_over = chunked + b"".join(b"64\r\n" + b"x" * 100 + b"\r\n" for _ in range(11))
            for request in (announced, sent_over):
                answers: list[bytes] = []
                with trio.fail_after(TIMEOUT):
                    await unfinished_publish(server.host_port, request, answers)
                status, body = status_and_json(answers[0])
                assert status == 413
                assert "1000-byte limit" in str(body["error"])
            await assert_alive_and_streaming(server, subscriber, "after")
            assert server.broker.statistics().published == 1
        finally:
            await subscriber.close_fin()


async def test_serve_puts_its_hypercorn_connection_class_in_place() -> None:
    # Fails, with the h2 tests above, on a Hypercorn whose worker names its
    # connection class differently: the bound on idle h2 connections is then off.
    async with running_server():
        assert bound_idle_h2_connections()
        assert getattr(hypercorn.trio.run, "TCPServer", None) is IdleBoundConnection
