"""Clients that try to hold the server's resources: slow request heads, huge heads.

What bounds them is Hypercorn's, configured in :func:`trio_sse.server.serve`: a
connection is idle until its request head is complete, and Hypercorn closes a
connection idle for ``keep_alive_timeout`` (``REQUEST_HEAD_TIMEOUT``) whatever it
receives meanwhile; an incomplete head longer than ``h11_max_incomplete_size``
(``MAX_REQUEST_HEAD_SIZE``) gets 431.
"""

from __future__ import annotations

import contextlib

import pytest
import trio

from tests.wire import TIMEOUT, SSEConnection, running_server
from trio_sse.server import MAX_REQUEST_HEAD_SIZE, REQUEST_HEAD_TIMEOUT

SLOW_HEADS = 20
HEAD = b"GET /events/t HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"


async def drip(stream: trio.SocketStream) -> None:
    """Send ``HEAD`` but its last byte, one byte a second, until the server closes."""
    for byte in HEAD[:-1]:
        try:
            await stream.send_all(bytes([byte]))
        except trio.BrokenResourceError:
            return
        await trio.sleep(1)


async def closed_by_server(stream: trio.SocketStream) -> bool:
    """Wait for the server to close; whether it did so without sending anything."""
    try:
        return await stream.receive_some() == b""
    except trio.BrokenResourceError:
        # Closed with a dripped byte still unread on its side: the kernel sends RST.
        return True


async def slow_head(address: tuple[str, int], closed_after: list[float]) -> None:
    """Drip a request head until the server closes; record when it did."""
    stream = await trio.open_tcp_stream(*address)
    start = trio.current_time()
    async with stream, trio.open_nursery() as nursery:
        nursery.start_soon(drip, stream)
        # The server answers nothing: it just closes.
        assert await closed_by_server(stream)
        closed_after.append(trio.current_time() - start)
        nursery.cancel_scope.cancel()


@pytest.mark.slow
async def test_a_request_head_sent_a_byte_a_second_is_cut_but_streams_are_not() -> None:
    async with running_server() as server:
        # Open before the slow heads, and idle (no heartbeat for 15 s) for longer
        # than the head timeout: a stream must not count as an idle connection.
        stream = await SSEConnection.open(server, "/events/t")
        await server.wait_for_subscribers(1)
        closed_after: list[float] = []
        with trio.fail_after(REQUEST_HEAD_TIMEOUT + TIMEOUT):
            async with trio.open_nursery() as nursery:
                for _ in range(SLOW_HEADS):
                    nursery.start_soon(slow_head, server.host_port, closed_after)
        assert len(closed_after) == SLOW_HEADS
        # Cut by the head timeout, not by anything sooner.
        assert min(closed_after) >= REQUEST_HEAD_TIMEOUT - 0.1
        await server.publish("t", data="still streaming")
        (event,) = await stream.read_events(1)
        assert event.data == "still streaming"
        await stream.close_fin()


@pytest.mark.parametrize(
    "size",
    [
        # Just over the limit, and never completed.
        MAX_REQUEST_HEAD_SIZE + 100,
        # More than Hypercorn reads at once (64 KiB), so incomplete after its first read.
        100_000,
    ],
)
async def test_an_oversized_request_head_gets_431(size: int) -> None:
    async with running_server() as server:
        stream = await trio.open_tcp_stream(*server.host_port)
        async with stream:
            await stream.send_all(b"GET /events/t HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
            # Without the end of the head: it is refused for its size alone.
            with contextlib.suppress(trio.BrokenResourceError):  # refused mid-send
                await stream.send_all(b"a" * size)
            response = b""
            with trio.fail_after(TIMEOUT):
                while data := await stream.receive_some():
                    response += data
        assert response.startswith(b"HTTP/1.1 431 ")
        assert b"connection: close" in response.lower()
        assert server.broker.statistics().subscribers == 0


@pytest.mark.slow
async def test_a_connection_that_served_a_request_gets_the_same_bound() -> None:
    # Hypercorn restarts its idle timer while finishing a response, in the very send
    # that makes quart-trio cancel the request; serve() shields that send, or the
    # timer never restarts and the connection is held as long as the client likes.
    async with running_server() as server:
        stream = await trio.open_tcp_stream(*server.host_port)
        async with stream:
            await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            response = b""
            with trio.fail_after(TIMEOUT):
                while b'"ok"' not in response:
                    response += await stream.receive_some()
            assert response.startswith(b"HTTP/1.1 200 ")
            start = trio.current_time()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(drip, stream)
                with trio.fail_after(REQUEST_HEAD_TIMEOUT + TIMEOUT):
                    assert await closed_by_server(stream)
                nursery.cancel_scope.cancel()
        assert trio.current_time() - start >= REQUEST_HEAD_TIMEOUT - 0.1
