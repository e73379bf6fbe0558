"""Deploys without reconnect storms: ``--drain-window`` and ``--max-stream-age``.

Over real sockets: the drain runs in a real ``trio-sse serve`` process stopped by a
real SIGTERM; the stream age under a real Hypercorn. The bounds below only fail on a
bug (a window not honoured, streams ended all at once, a stream never ended), never
on a slow machine: each leaves seconds of slack.
"""

from __future__ import annotations

import re
import signal
import statistics

import httpx
import pytest
import trio

from tests.test_cli import serve_process
from tests.wire import (
    SSEConnection,
    read_response_head,
    running_server,
    wait_for_remote_subscribers,
)
from trio_sse import create_app
from trio_sse.web import StreamDrain, StreamEnd
from trio_sse.web._stream import jittered_age, jittered_retry

_RETRY = re.compile(rb"^retry: (\d+)$", re.MULTILINE)

STREAMS = 20
WINDOW = 1.5
GRACEFUL = 0.5
# Process start-up is not counted; this covers Hypercorn's and the lifespan's own
# shutdown (about 0.2 s when idle) many times over.
EXIT_SLACK = 3.0


def retries_of(conn: SSEConnection) -> list[int]:
    return [int(value) for value in _RETRY.findall(bytes(conn.body))]


async def _read_until_end(conn: SSEConnection, ended_at: list[float], timeout: float) -> None:
    await conn.read_to_end(timeout=timeout)
    ended_at.append(trio.current_time())


async def _late_stream_status(address: tuple[str, int]) -> int | None:
    """The status a new stream gets; ``None`` if its connection is refused or closed."""
    with trio.fail_after(5):
        try:
            stream = await trio.open_tcp_stream(*address)
        except OSError:
            return None
        async with stream:
            try:
                await stream.send_all(b"GET /events/t HTTP/1.1\r\nHost: x\r\n\r\n")
                head, _ = await read_response_head(stream)
            except (ConnectionError, trio.BrokenResourceError):
                return None
    return int(head.split(b" ")[1])


@pytest.mark.slow
async def test_drain_window_spreads_stream_ends_and_tells_each_a_jittered_retry() -> None:
    args = ["--drain-window", str(WINDOW), "--graceful-timeout", str(GRACEFUL), "--retry", "2000"]
    async with serve_process(*args) as (process, address):
        conns = [await SSEConnection.open(address, "/events/t") for _ in range(STREAMS)]
        try:
            async with httpx.AsyncClient(base_url=f"http://{address[0]}:{address[1]}") as http:
                await wait_for_remote_subscribers(http, STREAMS)
                assert (await http.post("/events/t", json={"data": "hi"})).status_code == 202
            for conn in conns:
                await conn.read_events(1)
            ended_at: list[float] = []
            start = trio.current_time()
            process.send_signal(signal.SIGTERM)
            async with trio.open_nursery() as nursery:
                for conn in conns:
                    nursery.start_soon(_read_until_end, conn, ended_at, WINDOW + EXIT_SLACK)
                # A new stream during the drain is refused, as at any shutdown: the
                # listener is closed (or the request answered 503), never streamed.
                await trio.sleep(0.3)
                assert await _late_stream_status(address) in (None, 503)
            with trio.fail_after(WINDOW + GRACEFUL + EXIT_SLACK):
                await process.wait()
            exited = trio.current_time() - start
        finally:
            for conn in conns:
                await conn.close_fin()
    assert process.returncode == 0
    assert all(conn.ended_cleanly for conn in conns)
    offsets = sorted(at - start for at in ended_at)
    # Spread over the window, not all at once: 20 uniform draws over 1.5 s span far
    # more than 0.2 s (at once, as without a window, they span a few ms).
    assert offsets[-1] - offsets[0] > 0.2, offsets
    assert offsets[-1] < WINDOW + 1.0, offsets
    # Each stream's last line before its end is its own retry, within [retry/2, retry].
    farewells = []
    for conn in conns:
        retries = retries_of(conn)
        assert retries[0] == 2000
        assert len(retries) == 2, retries
        assert 1000 <= retries[1] <= 2000
        assert bytes(conn.body).endswith(b"retry: %d\n" % retries[1])
        farewells.append(retries[1])
    assert len(set(farewells)) > 1, farewells
    assert exited < WINDOW + GRACEFUL + EXIT_SLACK


AGE = 0.8
EVENTS = 60


async def _publish_numbered(http: httpx.AsyncClient, count: int, interval: float) -> None:
    for n in range(count):
        response = await http.post("/events/aging", json={"data": str(n)})
        assert response.status_code == 202
        await trio.sleep(interval)


@pytest.mark.slow
async def test_max_stream_age_ends_streams_cleanly_and_the_client_resumes_with_no_gap() -> None:
    last = str(EVENTS - 1)
    received: list[str] = []
    lifetimes: list[float] = []
    farewells: list[int] = []
    last_id: str | None = None
    async with running_server(max_stream_age=AGE, retry=500) as server:
        conn = await SSEConnection.open(server, "/events/aging")
        opened = trio.current_time()
        await server.wait_for_subscribers(1)
        async with trio.open_nursery() as nursery:
            # Events keep coming while streams age out and the client reconnects, as
            # an EventSource does: with the last id it got.
            nursery.start_soon(_publish_numbered, server.http, EVENTS, 0.03)
            while True:
                try:
                    await conn.read_until(
                        lambda c: c.ended_cleanly or (bool(c.events) and c.events[-1].data == last),
                        timeout=AGE + 5,
                    )
                finally:
                    await conn.close_fin()
                received += [event.data for event in conn.events]
                if conn.events:
                    last_id = conn.events[-1].last_event_id
                if received and received[-1] == last:
                    break
                lifetimes.append(trio.current_time() - opened)
                retries = retries_of(conn)
                assert retries[0] == 500
                assert len(retries) == 2, retries
                farewells.append(retries[1])
                headers = [] if last_id is None else [("Last-Event-ID", last_id)]
                conn = await SSEConnection.open(server, "/events/aging", headers=headers)
                opened = trio.current_time()
    assert received == [str(n) for n in range(EVENTS)]
    assert lifetimes, "no stream aged out"
    for lived in lifetimes:
        # Jittered within [0.9, 1] of the age; the upper bound leaves a loaded machine room.
        assert 0.9 * AGE <= lived < AGE + 3
    assert all(250 <= farewell <= 500 for farewell in farewells), farewells


async def test_max_stream_age_is_counted_as_its_own_reason() -> None:
    async with running_server(max_stream_age=0.3) as server:
        conn = await SSEConnection.open(server, "/events/t")
        try:
            await conn.read_to_end(timeout=5)
        finally:
            await conn.close_fin()
        metrics = (await server.http.get("/metrics")).text
    assert conn.ended_cleanly
    assert re.search(r'reason="max_age"\} 1(\.0)?$', metrics, re.MULTILINE), metrics


def test_jittered_retry_stays_within_half_and_all_of_the_base() -> None:
    values = [jittered_retry(3000) for _ in range(1000)]
    assert min(values) >= 1500
    assert max(values) <= 3000
    assert len(set(values)) > 100
    assert jittered_retry(0) == 0


def test_jittered_age_stays_within_nine_tenths_and_all_of_the_age() -> None:
    values = [jittered_age(10.0) for _ in range(1000)]
    assert min(values) >= 9.0
    assert max(values) <= 10.0
    assert 9.4 < statistics.mean(values) < 9.6


@pytest.mark.parametrize("window", [-1.0, float("nan"), float("inf")])
def test_a_drain_window_must_be_a_finite_non_negative_number(window: float) -> None:
    with pytest.raises(ValueError, match="window"):
        StreamDrain().start(window)


@pytest.mark.parametrize("age", [-1.0, float("nan")])
def test_a_max_stream_age_must_be_non_negative(age: float) -> None:
    with pytest.raises(ValueError, match="max_stream_age"):
        create_app(max_stream_age=age)


def test_the_reasons_include_max_age() -> None:
    assert StreamEnd("max_age") is StreamEnd.MAX_AGE
