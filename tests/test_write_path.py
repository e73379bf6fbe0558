"""The write path: which writer a stream gets, and that the direct one frames HTTP/1.1 exactly.

Under ``trio_sse.serve()`` a plain HTTP/1.1 stream writes straight to its socket
(``H11SocketWriter``), an HTTP/2 one through a writer bounded in unsent bytes
(``H2StreamWriter``, see tests/test_bounded_writes.py); every other request gets
none and streams through ASGI. The
wire is read back with h11, which rejects any framing error.
"""

from __future__ import annotations

import socket

import h11
import httpx
import pytest
import quart
import trio
from quart_trio import QuartTrio

from tests.wire import TIMEOUT, Server, running_server
from trio_sse import MemoryBroker, ServerSentEvent, create_app
from trio_sse.protocol import Decoder, MessageEvent
from trio_sse.server import H11SocketWriter
from trio_sse.web import CHUNK_WRITER_EXTENSION


def writer_app() -> QuartTrio:
    """The reference app, plus a route that names the writer its request was offered."""
    app = create_app(broker=MemoryBroker())

    @app.route("/writer", methods=["GET", "POST", "HEAD"])
    async def writer() -> quart.ResponseReturnValue:
        offered = quart.request.scope.get("extensions", {}).get(CHUNK_WRITER_EXTENSION)
        return {"writer": type(offered).__name__ if offered is not None else None}

    return app


async def raw_request(server: Server, request: bytes) -> bytes:
    """Send ``request`` on a fresh connection; return everything until the server closes."""
    host, port = server.host_port
    stream = await trio.open_tcp_stream(host, port)
    received = bytearray()
    with trio.fail_after(TIMEOUT):
        await stream.send_all(request)
        while data := await stream.receive_some(65536):
            received += data
    await stream.aclose()
    return bytes(received)


async def test_serve_offers_the_socket_writer_to_plain_http1_gets_only() -> None:
    async with running_server(app=writer_app()) as server:
        assert (await server.http.get("/writer")).json() == {"writer": "H11SocketWriter"}
        assert (await server.http.post("/writer")).json() == {"writer": None}
        # HTTP/1.0 bodies are not chunked: no direct writer.
        answer = await raw_request(server, b"GET /writer HTTP/1.0\r\nHost: x\r\n\r\n")
        assert answer.endswith(b'{"writer":null}\n')


async def test_http2_gets_the_bounded_stream_writer() -> None:
    async with (
        running_server(app=writer_app()) as server,
        httpx.AsyncClient(base_url=server.url, http1=False, http2=True, timeout=TIMEOUT) as client,
    ):
        response = await client.get("/writer")
        assert response.http_version == "HTTP/2"
        assert response.json() == {"writer": "H2StreamWriter"}


class H11Reader:
    """An HTTP/1.1 client connection read through h11: any framing error raises."""

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self.sock = sock
        self.client = h11.Connection(h11.CLIENT)
        self.decoder = Decoder()
        self.events: list[MessageEvent] = []
        self.data_events = 0

    async def send_request(self, path: str) -> None:
        request = h11.Request(method="GET", target=path, headers=[("Host", "test")])
        await self.sock.send(self.client.send(request) + self.client.send(h11.EndOfMessage()))

    async def read_events(self, count: int) -> None:
        with trio.fail_after(TIMEOUT):
            while len(self.events) < count:
                event = self.client.next_event()
                if event is h11.NEED_DATA:
                    self.client.receive_data(await self.sock.recv(65536))
                elif isinstance(event, h11.Response):
                    assert event.status_code == 200
                elif isinstance(event, h11.Data):
                    self.data_events += 1
                    self.events += self.decoder.feed(bytes(event.data))
                else:
                    raise AssertionError(f"unexpected {event!r}")


@pytest.mark.parametrize("receive_buffer", [None, 4096])
async def test_direct_writes_are_exact_http1_chunks(
    monkeypatch: pytest.MonkeyPatch, receive_buffer: int | None
) -> None:
    # With a small receive buffer and large events the socket fills: writes go out in
    # part directly and in part through Hypercorn's own write, and must still join up.
    writes = 0
    write_nowait = H11SocketWriter.write_nowait

    def counted(self: H11SocketWriter, chunk: bytes) -> bool:
        # Every chunk goes through here: from the stream's loop and from publishes.
        nonlocal writes
        writes += 1
        return write_nowait(self, chunk)

    monkeypatch.setattr(H11SocketWriter, "write_nowait", counted)
    count, size = 40, 30_000 if receive_buffer else 100
    broker = MemoryBroker(queue_size=count + 1)
    # Room for the whole burst: this test is about framing, not about slow readers.
    max_buffer = count * (size + 64)
    async with running_server(broker=broker, heartbeat=0, max_buffer=max_buffer) as server:
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        with sock:
            await sock.connect(server.host_port)
            reader = H11Reader(sock)
            await reader.send_request("/events/t")
            await server.wait_for_subscribers(1)
            sent = [f"{i:04d}" + "x" * size for i in range(count)]
            for data in sent:
                await broker.publish("t", ServerSentEvent(data))
            await reader.read_events(count)
            assert [event.data for event in reader.events] == sent
            assert writes >= 1
            assert broker.statistics().dropped == 0
