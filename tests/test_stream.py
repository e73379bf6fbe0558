"""SSE streams across the wire: a real Hypercorn on 127.0.0.1:0, raw socket clients."""

from __future__ import annotations

import json
import logging

import pytest
import quart
import trio
import trio.testing
from quart_trio import QuartTrio

from tests.wire import SSEConnection, count_tasks, running_server, task_count_returns_to
from trio_sse import BrokerUnavailableError, MemoryBroker, ServerSentEvent, event_stream
from trio_sse.server import REQUEST_HEAD_TIMEOUT


async def test_stream_headers_and_an_immediate_first_write() -> None:
    async with running_server(retry=1500) as server:
        conn = await SSEConnection.open(server, "/events/news")
        assert conn.status == 200
        assert conn.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert conn.headers["cache-control"] == "no-cache"
        assert conn.headers["x-accel-buffering"] == "no"
        # No hop-by-hop headers of ours; Hypercorn adds the chunked framing itself.
        assert "connection" not in conn.headers
        assert conn.headers["transfer-encoding"] == "chunked"
        # Something arrives before any event: the retry hint and an opening comment.
        await conn.read_until(lambda c: b": stream open\n" in c.body)
        assert conn.body == b"retry: 1500\n: stream open\n"
        await conn.close_fin()


async def test_idle_stream_gets_heartbeat_comments() -> None:
    async with running_server(heartbeat=0.05) as server:
        conn = await SSEConnection.open(server, "/events/idle")
        await conn.read_until(lambda c: c.body.count(b": heartbeat\n") >= 3, timeout=2)
        assert conn.events == []  # comments dispatch nothing
        await conn.close_fin()


async def test_heartbeat_zero_disables_heartbeats() -> None:
    async with running_server(heartbeat=0) as server:
        conn = await SSEConnection.open(server, "/events/idle")
        await conn.read_until(lambda c: b": stream open" in c.body)
        with trio.move_on_after(0.3):
            await conn.read_until(lambda c: b"heartbeat" in c.body, timeout=1)
            pytest.fail("a heartbeat was sent with heartbeat=0")
        await conn.close_fin()


async def test_streams_outlive_quarts_response_timeout() -> None:
    async with running_server(heartbeat=0.05) as server:
        # Quart cuts responses after RESPONSE_TIMEOUT; streams must opt out.
        server.app.config["RESPONSE_TIMEOUT"] = 0.2
        conn = await SSEConnection.open(server, "/events/long")
        await trio.sleep(0.6)  # three times the timeout, on purpose: time is the subject
        await conn.read_until(lambda c: c.body.count(b"heartbeat") >= 6, timeout=2)
        assert not conn.ended_cleanly
        assert not conn.eof
        await conn.close_fin()


async def test_publish_reaches_every_subscriber_in_order() -> None:
    async with running_server() as server:
        conns = [await SSEConnection.open(server, "/events/chat") for _ in range(3)]
        await server.wait_for_subscribers(3)
        ids = [await server.publish("chat", data=f"m{i}", event="message") for i in range(5)]
        ids.append(await server.publish("chat", data={"user": "ana", "n": [1, 2]}))
        for conn in conns:
            events = await conn.read_events(6)
            assert [e.data for e in events[:5]] == [f"m{i}" for i in range(5)]
            assert [e.last_event_id for e in events] == ids
            assert json.loads(events[5].data) == {"user": "ana", "n": [1, 2]}
            assert events[5].type == "message"
            await conn.close_fin()


async def test_multiline_data_round_trips() -> None:
    async with running_server() as server:
        conn = await SSEConnection.open(server, "/events/t")
        await server.wait_for_subscribers(1)
        await server.publish("t", data="line 1\r\nline 2\rline 3\n\nend")
        (event,) = await conn.read_events(1)
        assert event.data == "line 1\nline 2\nline 3\n\nend"
        await conn.close_fin()


@pytest.mark.parametrize("how", ["header", "query", "header-beats-query"])
async def test_resume_with_last_event_id(how: str) -> None:
    async with running_server() as server:
        ids = [await server.publish("t", data=str(i)) for i in range(6)]
        if how == "header":
            conn = await SSEConnection.open(
                server, "/events/t", headers=[("Last-Event-ID", ids[1])]
            )
        elif how == "query":
            conn = await SSEConnection.open(server, f"/events/t?lastEventId={ids[1]}")
        else:
            # A browser reconnects to its original URL; the header holds the newer id.
            conn = await SSEConnection.open(
                server, f"/events/t?lastEventId={ids[0]}", headers=[("Last-Event-ID", ids[1])]
            )
        replayed = await conn.read_events(4)
        ids.append(await server.publish("t", data="live"))
        live = await conn.read_events(5)
        assert [e.last_event_id for e in live] == ids[2:]
        assert [e.data for e in replayed] == ["2", "3", "4", "5"]
        await conn.close_fin()


async def test_unknown_last_event_id_gets_a_reset_event() -> None:
    async with running_server() as server:
        newest = await server.publish("t", data="x")
        conn = await SSEConnection.open(server, "/events/t", headers=[("Last-Event-ID", "bogus")])
        (event,) = await conn.read_events(1)
        assert event.type == "reset"
        assert json.loads(event.data)["last_event_id"] == "bogus"
        assert event.last_event_id == newest
        await conn.close_fin()


@pytest.mark.parametrize("close", ["fin", "rst"])
async def test_disconnect_unsubscribes_within_milliseconds(
    close: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_sse.stream")
    async with running_server() as server:
        conns = [await SSEConnection.open(server, "/events/t") for _ in range(5)]
        await server.wait_for_subscribers(5)
        await server.publish("t", data="one")
        for conn in conns:
            await conn.read_events(1)
        for conn in conns:
            await (conn.close_fin() if close == "fin" else conn.close_rst())
        elapsed = await server.wait_for_subscribers(0, timeout=1)
        assert (await server.stats())["subscribers"] == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "trio_sse.stream"]
    assert len(lines) == 5
    assert all("topic=t reason=client_closed" in line and "events=1" in line for line in lines)
    # Logged for the record; the bound above (1 s) is the pass/fail criterion.
    logging.getLogger(__name__).info("%s: 5 subscribers gone after %.1f ms", close, elapsed * 1e3)


async def test_stalled_reader_blocks_neither_publisher_nor_other_subscribers() -> None:
    # A small queue makes the stalled subscriber overflow quickly. The publisher waits
    # for each event to arrive before the next: without a batching window, so that
    # each arrives at once (tests/test_batching.py covers the window with a stall).
    broker = MemoryBroker(queue_size=16)
    async with running_server(broker=broker, min_write_interval=0) as server:
        stalled = await SSEConnection.open(server, "/events/t", receive_buffer=4096)
        healthy = await SSEConnection.open(server, "/events/t")
        await server.wait_for_subscribers(2)
        payload = "x" * 4000
        with trio.fail_after(10):
            for i in range(200):
                await server.publish("t", data=payload, id=str(i + 1))
                # The healthy reader keeps up; it must see every event promptly.
                events = await healthy.read_events(i + 1, timeout=2)
                assert events[-1].last_event_id == str(i + 1)
        stats = await server.stats()
        assert stats["dropped"] == 1
        assert stats["subscribers"] == 1
        assert stats["published"] == 200
        await healthy.close_fin()
        await stalled.close_rst()


async def test_shutdown_ends_streams_cleanly_and_fast() -> None:
    async with running_server(graceful_timeout=1.0) as server:
        conns = [await SSEConnection.open(server, "/events/t") for _ in range(20)]
        await server.wait_for_subscribers(20)
        await server.publish("t", data="before shutdown")
        start = trio.current_time()
        server.stop.set()
        for conn in conns:
            await conn.read_to_end(timeout=2)
        ended_after = trio.current_time() - start
        for conn in conns:
            assert conn.ended_cleanly  # the terminating chunk, not a cut
            assert [e.data for e in conn.events] == ["before shutdown"]
            await conn.close_fin()
    # Streams end as soon as the broker closes, long before the graceful deadline.
    assert ended_after < 0.5


class _UnreachableBackplaneBroker(MemoryBroker):
    """A broker whose backplane is down, saying where it is, as the Redis broker does."""

    is_down = True

    async def ping(self) -> None:
        await trio.lowlevel.checkpoint()
        if self.is_down:
            raise BrokerUnavailableError("Redis at 10.1.2.3:6380/7 did not answer PING: refused")


async def test_healthz_keeps_the_backplanes_address_out_of_the_public_answer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = _UnreachableBackplaneBroker()
    with caplog.at_level(logging.WARNING, logger="trio_sse"):
        async with running_server(broker=broker) as server:
            answers = [await server.http.get("/healthz") for _ in range(3)]
            broker.is_down = False
            assert (await server.http.get("/healthz")).json() == {"status": "ok"}
    for answer in answers:
        assert answer.status_code == 503
        assert answer.json() == {"status": "unavailable", "error": "the backplane does not answer"}
        assert "10.1.2.3" not in answer.text
    # The detail is for the operator: logged once per outage, not once per probe.
    logged = [r.getMessage() for r in caplog.records if "10.1.2.3:6380/7" in r.getMessage()]
    assert len(logged) == 1


async def test_healthz_reports_draining_during_shutdown() -> None:
    async with running_server(graceful_timeout=1.0) as server:
        assert (await server.http.get("/healthz")).json() == {"status": "ok"}
        await server.broker.aclose()
        response = await server.http.get("/healthz")
        assert response.status_code == 503
        assert response.json() == {"status": "draining"}
        # Draining is not death: liveness stays up.
        response = await server.http.get("/livez")
        assert (response.status_code, response.json()) == (200, {"status": "alive"})
        response = await server.http.get("/events/t")
        assert response.status_code == 503
        assert "shutting down" in response.json()["error"]


async def test_no_task_is_left_behind_after_200_connect_disconnect_cycles() -> None:
    async with running_server() as server:
        # The idle server's tasks: Hypercorn's listeners, lifespan, and this test's.
        # Hypercorn reports started before it spawns its listener tasks, so let
        # every task reach its first blocking point before counting.
        await trio.testing.wait_all_tasks_blocked()
        baseline = count_tasks()
        for i in range(200):
            conn = await SSEConnection.open(server, "/events/t")
            if i % 2:
                await conn.read_until(lambda c: b"stream open" in c.body)
                await conn.close_rst()
            else:
                await conn.close_fin()
        await server.wait_for_subscribers(0)
        # Connection handler tasks finish a moment after the subscription closes.
        assert await task_count_returns_to(baseline, within=5)
        assert server.broker.statistics().subscribers == 0


async def test_initial_events_go_to_one_subscriber_only() -> None:
    broker = MemoryBroker()
    app = QuartTrio(__name__)

    @app.get("/s/<name>")
    async def stream(name: str) -> quart.ResponseReturnValue:
        return event_stream(
            broker, "room", initial=[ServerSentEvent(f"welcome {name}", event="hello")]
        )

    async with running_server(app=app, broker=broker) as server:
        alice = await SSEConnection.open(server, "/s/alice")
        bob = await SSEConnection.open(server, "/s/bob")
        await server.wait_for_subscribers(2)
        await broker.publish("room", ServerSentEvent("hi all"))
        a_events = await alice.read_events(2)
        b_events = await bob.read_events(2)
        assert [(e.type, e.data) for e in a_events] == [
            ("hello", "welcome alice"),
            ("message", "hi all"),
        ]
        assert [(e.type, e.data) for e in b_events] == [
            ("hello", "welcome bob"),
            ("message", "hi all"),
        ]
        await alice.close_fin()
        await bob.close_fin()


@pytest.mark.slow
async def test_tcp_user_timeout_frees_a_connection_pinned_by_a_stalled_reader() -> None:
    # Hypercorn's socket write is shielded from cancellation; only the kernel can end a
    # write to a peer that stopped reading. TCP_USER_TIMEOUT (1 s here) makes it do so.
    async with running_server(broker=MemoryBroker(queue_size=8), tcp_user_timeout=1.0) as server:
        await trio.testing.wait_all_tasks_blocked()
        baseline = count_tasks()
        stalled = await SSEConnection.open(server, "/events/t", receive_buffer=4096)
        await server.wait_for_subscribers(1)
        # Published in-process: an HTTP publisher's own keep-alive connection would
        # count too, until the server closes it when idle (what was long mistaken for
        # this connection lingering).
        for i in range(100):  # far more than the socket buffers hold
            await server.broker.publish("t", ServerSentEvent("x" * 8000, id=str(i + 1)))
        assert server.broker.statistics().dropped == 1
        # Dropped from the topic, but its handler is still stuck in the shielded write
        # until the kernel gives up on the connection.
        assert count_tasks() > baseline
        # Either the kernel aborts the connection (TCP_USER_TIMEOUT, 1 s), or, when it
        # took every byte before the stream was dropped, the connection is idle after
        # the response's clean end and Hypercorn closes it after REQUEST_HEAD_TIMEOUT.
        freed = await task_count_returns_to(baseline, within=REQUEST_HEAD_TIMEOUT + 2)
        await stalled.close_rst()
    assert freed, "the stalled connection's handler task is still running"


async def test_nothing_before_the_first_event_can_reset_a_clients_last_event_id() -> None:
    # A blank line dispatches, and dispatch copies the new stream's (empty) last event
    # ID buffer into the client's last event ID. So between the response head and the
    # first event (retry hint, opening comment, heartbeats) no blank line may appear,
    # or a strictly conforming client would lose its resume position.
    async with running_server(heartbeat=0.02, retry=1000) as server:
        newest = await server.publish("t", data="seen")
        conn = await SSEConnection.open(server, "/events/t", headers=[("Last-Event-ID", newest)])
        await conn.read_until(lambda c: c.body.count(b": heartbeat\n") >= 3, timeout=2)
        assert b"\n\n" not in conn.body
        resumed = await server.publish("t", data="next")
        (event,) = await conn.read_events(1)
        assert (event.data, event.last_event_id) == ("next", resumed)
        await conn.close_fin()


async def test_with_one_subscriber_events_are_written_as_they_come_despite_the_window() -> None:
    """One stream's writes are cheap, so the batching window (on by default) holds
    nothing back: latency comes first while the event loop is idle. Batching itself
    is tested on virtual time in test_batching.py, and measured by the benchmarks."""
    broker = MemoryBroker()
    async with running_server(broker=broker, min_write_interval=0.3) as server:
        conn = await SSEConnection.open(server, "/events/t")
        await server.wait_for_subscribers(1)
        await broker.publish("t", ServerSentEvent("first"))
        await conn.read_events(1)
        chunks_before = conn.chunks
        # Ten events, each published once the stream has had a chance to write the
        # one before: each goes out alone, at once.
        for i in range(10):
            await broker.publish("t", ServerSentEvent(str(i)))
            await trio.testing.wait_all_tasks_blocked()
        events = await conn.read_events(11)
        assert [e.data for e in events[1:]] == [str(i) for i in range(10)]
        assert conn.chunks - chunks_before == 10
        await conn.close_fin()
