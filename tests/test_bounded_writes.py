"""Clients that do not read cost a bounded number of bytes, over HTTP/1.1 and HTTP/2 alike.

* An HTTP/2 client that never opens its flow-control window: Hypercorn's own writes
  would never wait for it, so the stream's writer waits instead once ``max_buffer``
  bytes are unsent, and resets the stream when the client makes no progress for
  ``TCP_USER_TIMEOUT``.
* A reconnect with an old ``Last-Event-ID``: the replay goes out in pieces, each
  written once the previous one was taken, so a client that reads none of it holds
  one piece, not the history.

Each test also checks that a normal subscriber alongside gets every event.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.settings
import httpx
import pytest
import trio
import trio.testing

from tests.wire import TIMEOUT, Server, SSEConnection, running_server
from trio_sse import MemoryBroker, ServerSentEvent
from trio_sse.protocol import Decoder

EVENT_SIZE = 60_000
MAX_BUFFER = 128 * 1024
STALL = 2.0  # the server's TCP_USER_TIMEOUT here, and with it the HTTP/2 stall bound


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def event_data(seq: int) -> str:
    head = f"{seq} "
    return head + "x" * (EVENT_SIZE - len(head))


def has_events(count: int, connection: SSEConnection) -> bool:
    return len(connection.events) >= count


class ClosedWindowClient:
    """An HTTP/2 connection (h2c) whose streams never let the server send a byte of data."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.statuses: dict[int, int] = {}
        self.reset: set[int] = set()
        self.data_bytes = 0
        self._sending = trio.Lock()  # the reader task flushes acknowledgements too

    @classmethod
    async def connect(cls, server: Server) -> ClosedWindowClient:
        host, port = server.host_port
        client = cls(await trio.open_tcp_stream(host, port))
        client.h2.initiate_connection()
        # A stream window of 0: no DATA frame may be sent until the client opens it,
        # which it never does.
        client.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        await client.flush()
        return client

    async def flush(self) -> None:
        async with self._sending:
            data = self.h2.data_to_send()
            if data:
                await self.stream.send_all(data)

    async def open_stream(self, path: str) -> int:
        stream_id: int = self.h2.get_next_available_stream_id()
        headers = [(":method", "GET"), (":scheme", "http"), (":authority", "x"), (":path", path)]
        self.h2.send_headers(stream_id, headers, end_stream=True)
        await self.flush()
        return stream_id

    async def read_frames(self) -> None:
        """Handle frames (settings, headers, resets) forever; never acknowledge data."""
        while chunk := await self.stream.receive_some():
            for event in self.h2.receive_data(chunk):
                if isinstance(event, h2.events.ResponseReceived):
                    self.statuses[event.stream_id] = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.StreamReset):
                    self.reset.add(event.stream_id)
                elif isinstance(event, h2.events.DataReceived):
                    self.data_bytes += len(event.data)
            await self.flush()


@pytest.mark.slow
async def test_http2_streams_with_a_closed_window_are_bounded_and_reset() -> None:
    streams = 40
    async with running_server(tcp_user_timeout=STALL, max_buffer=MAX_BUFFER) as server:
        reader = await SSEConnection.open(server, "/events/h2")
        client = await ClosedWindowClient.connect(server)
        async with client.stream, trio.open_nursery() as nursery:
            nursery.start_soon(client.read_frames)
            ids = [await client.open_stream("/events/h2") for _ in range(streams)]
            await server.wait_for_subscribers(streams + 1)
            rss_before = rss()
            rss_peak = rss_before
            # 2.4 MB published at 100 events/s: without a bound, 96 MB would be
            # buffered for these 40 streams.
            published = 40
            nursery.start_soon(
                partial(reader.read_until, partial(has_events, published), timeout=TIMEOUT)
            )
            for seq in range(published):
                await server.broker.publish("h2", ServerSentEvent(event_data(seq)))
                rss_peak = max(rss_peak, rss())
                await trio.sleep(0.01)
            with trio.fail_after(TIMEOUT):
                while not has_events(published, reader):  # noqa: ASYNC110 - read by its task
                    await trio.sleep(0.05)
            rss_peak = max(rss_peak, rss())
            # The stalled streams are reset within the stall bound (plus the time it
            # took to publish), and their subscriptions are gone.
            with trio.fail_after(STALL + TIMEOUT):
                while client.reset != set(ids):  # noqa: ASYNC110 - the reader task updates it
                    await trio.sleep(0.05)
            await server.wait_for_subscribers(1)
            nursery.cancel_scope.cancel()
        assert client.statuses == dict.fromkeys(ids, 200)
        assert client.data_bytes == 0
        assert [int(event.data.split(" ", 1)[0]) for event in reader.events] == list(
            range(published)
        )
        metrics = (await server.http.get("/metrics")).text
        assert f'trio_sse_disconnects_total{{reason="slow_consumer"}} {streams}' in metrics
        growth = rss_peak - rss_before
        print(f"\nRSS +{growth / 2**20:.1f} MiB for {streams} closed-window streams")
        # At most max_buffer unsent (plus one event over it) per stream: 40 x 188 KiB.
        assert growth < 24 * 2**20, f"RSS grew {growth / 2**20:.1f} MiB"
        await reader.stream.aclose()


async def test_a_stale_reconnect_costs_a_piece_not_the_history() -> None:
    history = 400
    stalled = 8
    broker = MemoryBroker(
        history=history + 1, history_bytes=64 * 2**20, history_total_bytes=64 * 2**20
    )
    async with running_server(broker=broker, tcp_user_timeout=30) as server:
        first = await server.broker.publish("replay", ServerSentEvent("start"))
        for seq in range(history):
            await server.broker.publish("replay", ServerSentEvent(event_data(seq)))
        rss_before = rss()
        headers = [("Last-Event-ID", first)]
        connections = [
            await SSEConnection.open(server, "/events/replay", headers=headers, receive_buffer=4096)
            for _ in range(stalled)
        ]
        await server.wait_for_subscribers(stalled)
        # Every stalled stream writes until its socket is full, then waits.
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        rss_stalled = rss()
        # A client that reads gets the whole replay, in order, then live events.
        reader = await SSEConnection.open(server, "/events/replay", headers=headers)
        await reader.read_until(partial(has_events, history), timeout=TIMEOUT)
        await server.broker.publish("replay", ServerSentEvent("live"))
        await reader.read_until(partial(has_events, history + 1), timeout=TIMEOUT)
        ids = [int(event.data.split(" ", 1)[0]) for event in reader.events[:history]]
        assert ids == list(range(history))
        assert reader.events[history].data == "live"
        # Each write is a piece, not the whole replay.
        assert reader.chunks > history * EVENT_SIZE // (128 * 1024)
        growth = rss_stalled - rss_before
        print(f"\nRSS +{growth / 2**20:.1f} MiB for {stalled} stale reconnects of 24 MB each")
        assert growth < 16 * 2**20, f"RSS grew {growth / 2**20:.1f} MiB"
        for connection in [*connections, reader]:
            await connection.stream.aclose()


async def test_a_stale_reconnect_over_http2_is_written_in_pieces() -> None:
    broker = MemoryBroker(history=101, history_bytes=16 * 2**20)
    async with running_server(broker=broker) as server:
        first = await server.broker.publish("replay", ServerSentEvent("start"))
        for seq in range(100):
            await server.broker.publish("replay", ServerSentEvent(event_data(seq)))
        decoder = Decoder()
        events = []
        async with (
            httpx.AsyncClient(base_url=server.url, http1=False, http2=True) as client,
            client.stream("GET", "/events/replay", headers={"Last-Event-ID": first}) as response,
        ):
            assert response.http_version == "HTTP/2"
            with trio.fail_after(TIMEOUT):
                async for chunk in response.aiter_bytes():
                    events += decoder.feed(chunk)
                    if len(events) >= 100:
                        break
        assert [int(event.data.split(" ", 1)[0]) for event in events] == list(range(100))
