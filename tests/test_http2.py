"""Event streams over HTTP/2 (h2c with prior knowledge) under Hypercorn.

Many streams share one connection: the client's pool allows a single connection,
so they could not all open otherwise. A stream closed by the client arrives as an
RST_STREAM, and must end that subscriber alone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import h2.config
import h2.connection
import h2.errors
import h2.events
import httpx
import trio

from tests.wire import TIMEOUT, Server, running_server
from trio_sse.protocol import Decoder, MessageEvent

STREAMS = 20
# Hop-by-hop headers are forbidden in HTTP/2 (RFC 9113, 8.2.2).
CONNECTION_SPECIFIC = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
}


@asynccontextmanager
async def h2_client(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=server.url,
        http1=False,
        http2=True,
        limits=httpx.Limits(max_connections=1),
        timeout=TIMEOUT,
    ) as client:
        yield client


async def read_events(response: httpx.Response, count: int) -> list[MessageEvent]:
    decoder = Decoder()
    events: list[MessageEvent] = []
    async for chunk in response.aiter_raw():
        events += decoder.feed(chunk)
        if len(events) >= count:
            break
    return events


async def stream_on_one_connection(
    server: Server, client: httpx.AsyncClient, topic: str
) -> list[list[MessageEvent]]:
    """Open STREAMS streams of ``topic`` through ``client`` (one connection), publish
    two events, and return what each stream received."""
    received: list[list[MessageEvent]] = []

    async def subscribe() -> None:
        async with client.stream("GET", f"/events/{topic}") as response:
            # With http1 allowed too, only ALPN (TLS) or prior knowledge chose h2.
            assert response.http_version == "HTTP/2"
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert not CONNECTION_SPECIFIC & set(response.headers)
            received.append(await read_events(response, 2))

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            for _ in range(STREAMS):
                nursery.start_soon(subscribe)
            # The pool allows one connection: all streams are open on it at once.
            await server.wait_for_subscribers(STREAMS)
            # server.publish goes through another client, on a connection of its own.
            await server.publish(topic, data="one")
            await server.publish(topic, data="two")
    return received


async def test_many_streams_share_one_h2_connection() -> None:
    async with running_server() as server:
        async with h2_client(server) as client:
            received = await stream_on_one_connection(server, client, "h2")
        assert len(received) == STREAMS
        for events in received:
            assert [event.data for event in events] == ["one", "two"]
        # httpcore does not reset a stream it stops reading, but closing the
        # connection ends every subscriber on it.
        await server.wait_for_subscribers(0)


class RawH2:
    """A bare HTTP/2 client on h2, for what httpx cannot do: reset one stream."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.data: dict[int, bytearray] = {}

    @classmethod
    async def connect(cls, server: Server) -> RawH2:
        url = httpx.URL(server.url)
        assert url.port is not None
        client = cls(await trio.open_tcp_stream(url.host, url.port))
        client.h2.initiate_connection()
        await client.flush()
        return client

    async def flush(self) -> None:
        await self.stream.send_all(self.h2.data_to_send())

    async def get(self, path: str) -> int:
        stream_id: int = self.h2.get_next_available_stream_id()
        headers = [(":method", "GET"), (":scheme", "http"), (":authority", "x"), (":path", path)]
        self.h2.send_headers(stream_id, headers, end_stream=True)
        self.data[stream_id] = bytearray()
        await self.flush()
        return stream_id

    async def reset(self, stream_id: int) -> None:
        self.h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
        await self.flush()

    async def receive_until(self, stream_id: int, marker: bytes) -> None:
        """Read frames (acknowledging data) until ``stream_id`` has received ``marker``."""
        while marker not in self.data[stream_id]:
            chunk = await self.stream.receive_some()
            assert chunk, "the server closed the connection"
            for event in self.h2.receive_data(chunk):
                if isinstance(event, h2.events.DataReceived) and event.stream_id in self.data:
                    self.data[event.stream_id] += event.data
                    self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            await self.flush()


async def test_rst_stream_ends_only_its_subscriber() -> None:
    async with running_server() as server:
        client = await RawH2.connect(server)
        async with client.stream:
            staying = await client.get("/events/h2")
            leaving = await client.get("/events/h2")
            await server.wait_for_subscribers(2)
            await client.reset(leaving)
            await server.wait_for_subscribers(1)
            await server.publish("h2", data="still here")
            with trio.fail_after(TIMEOUT):
                await client.receive_until(staying, b"data: still here\n\n")
            assert b"still here" not in client.data[leaving]


async def test_publish_over_h2() -> None:
    async with running_server() as server, h2_client(server) as client:
        response = await client.post("/events/h2", json={"data": "x"})
        assert response.http_version == "HTTP/2"
        assert response.status_code == 202
        assert server.broker.statistics().published == 1
