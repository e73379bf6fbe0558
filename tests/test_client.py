"""The client: the reconnect policy (pure), the event source on httpx.MockTransport with
an autojump clock (timing, statuses, headers), and against a real Hypercorn server.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
import pytest
import trio
import trio.testing

import trio_sse
from trio_sse.broker import CloseReason, MemoryBroker, Subscription
from trio_sse.client import (
    EventSource,
    ReadyState,
    ReconnectPolicy,
    open_event_source,
)
from trio_sse.protocol import MessageEvent

from .wire import TIMEOUT, running_server

URL = "http://sse.test/events"

# ---------------------------------------------------------------------------------
# The reconnect policy


def constant(value: float) -> Callable[[], float]:
    return lambda: value


def test_policy_first_reconnect_waits_retry_plus_at_most_ten_percent() -> None:
    assert ReconnectPolicy(random=constant(0.0)).delay(3.0, 0) == 3.0
    assert ReconnectPolicy(random=constant(1.0)).delay(3.0, 0) == pytest.approx(3.3)
    # 10% of 30 s is 3 s: capped at 1 s.
    assert ReconnectPolicy(random=constant(1.0)).delay(30.0, 0) == pytest.approx(31.0)
    assert ReconnectPolicy(random=constant(0.5)).delay(0.0, 0) == 0.0


def test_policy_backoff_doubles_then_caps() -> None:
    low = ReconnectPolicy(random=constant(0.0))
    high = ReconnectPolicy(random=constant(1.0))
    assert [low.delay(3.0, n) for n in range(1, 7)] == [3.0, 6.0, 12.0, 15.0, 15.0, 15.0]
    assert [high.delay(3.0, n) for n in range(1, 7)] == [6.0, 12.0, 24.0, 30.0, 30.0, 30.0]
    assert high.delay(3.0, 10_000) == 30.0  # no overflow


def test_policy_never_waits_less_than_retry() -> None:
    rng = random.Random(1234)
    policy = ReconnectPolicy(max_delay=10.0, random=rng.random)
    for retry in (0.0, 0.05, 1.0, 3.0, 9.0, 60.0):
        for failures in range(12):
            delay = policy.delay(retry, failures)
            assert delay >= retry
            if failures == 0:
                assert delay <= retry + min(0.1 * retry, 1.0)
            else:
                assert delay <= max(retry, 10.0)
    # A server-set retry above max_delay wins, without jitter.
    assert policy.delay(60.0, 3) == 60.0


def test_policy_backoff_grows_from_min_backoff_when_retry_is_zero() -> None:
    policy = ReconnectPolicy(min_backoff=0.5, random=constant(0.0))
    assert [policy.delay(0.0, n) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]


@pytest.mark.parametrize(
    ("max_delay", "min_backoff"), [(-1.0, 1.0), (30.0, float("nan")), (float("inf"), 1.0)]
)
def test_policy_rejects_bad_delays(max_delay: float, min_backoff: float) -> None:
    with pytest.raises(ValueError, match="seconds"):
        ReconnectPolicy(max_delay=max_delay, min_backoff=min_backoff)


def test_policy_rejects_negative_arguments() -> None:
    with pytest.raises(ValueError, match="retry"):
        ReconnectPolicy().delay(-1.0, 0)
    with pytest.raises(ValueError, match="failures"):
        ReconnectPolicy().delay(1.0, -1)


# ---------------------------------------------------------------------------------
# The event source on a mock transport

Reply = httpx.Response | Exception


def stream(
    *chunks: bytes,
    hang: bool = False,
    every: float = 0.0,
    content_type: str = "text/event-stream",
    status: int = 200,
) -> httpx.Response:
    """An SSE response whose body is an async generator (httpx streams it under Trio)."""

    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            if every:
                await trio.sleep(every)
            yield chunk
        if hang:
            await trio.sleep_forever()

    return httpx.Response(status, headers={"Content-Type": content_type}, content=body())


@dataclass
class Server:
    """A scripted mock server: one reply per request, recorded with the request time."""

    replies: list[Reply | Callable[[httpx.Request], Reply]]
    requests: list[httpx.Request] = field(default_factory=list)
    times: list[float] = field(default_factory=list)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.times.append(trio.current_time())
        await trio.lowlevel.checkpoint()
        reply = self.replies.pop(0) if self.replies else stream(hang=True)
        if callable(reply):
            reply = reply(request)
        if isinstance(reply, Exception):
            raise reply
        return reply

    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.times, self.times[1:], strict=False)]


@asynccontextmanager
async def mock_source(
    replies: Iterable[Reply | Callable[[httpx.Request], Reply]], **options: object
) -> AsyncIterator[tuple[EventSource, Server]]:
    server = Server(list(replies))
    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(server.handle)) as http,
        open_event_source(URL, http_client=http, **options) as source,  # type: ignore[arg-type]
    ):
        yield source, server


def state_of(source: EventSource) -> ReadyState:
    # A function, so that mypy does not narrow the property across awaits.
    return source.ready_state


async def take(source: EventSource, count: int) -> list[MessageEvent]:
    events: list[MessageEvent] = []
    with trio.fail_after(3600):  # virtual time under autojump_clock
        while len(events) < count:
            events.append(await anext(source))
    return events


def raw_header(request: httpx.Request, name: bytes) -> bytes | None:
    values = [value for key, value in request.headers.raw if key.lower() == name]
    assert len(values) <= 1
    return values[0] if values else None


def refused(request: httpx.Request) -> Exception:
    return httpx.ConnectError("connection refused", request=request)


async def test_source_sends_sse_headers_and_custom_headers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with mock_source(
        [stream(b"data: x\n\n", hang=True)], headers={"Authorization": "Bearer t0ken"}
    ) as (source, server):
        assert state_of(source) is ReadyState.CONNECTING
        [event] = await take(source, 1)
        assert state_of(source) is ReadyState.OPEN
    assert event == MessageEvent("message", "x", "")
    request = server.requests[0]
    assert request.method == "GET"
    assert request.url == URL
    assert request.headers["Accept"] == "text/event-stream"
    assert request.headers["Cache-Control"] == "no-cache"
    assert request.headers["Authorization"] == "Bearer t0ken"
    assert "Last-Event-ID" not in request.headers
    assert source.ready_state is ReadyState.CLOSED


async def test_source_reconnects_after_clean_end_with_last_event_id_after_server_retry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    replies = [
        stream(b"retry: 500\n", b"id: 1\ndata: a\n\n", b"id: 2\ndata: b\n\n"),
        stream(b"data: c\n\n", hang=True),
    ]
    async with mock_source(replies) as (source, server):
        events = await take(source, 3)
        assert source.retry == 500
    assert [(e.data, e.last_event_id) for e in events] == [("a", "1"), ("b", "2"), ("c", "2")]
    assert server.requests[1].headers["Last-Event-ID"] == "2"
    assert server.requests[1].url == URL
    # Never sooner than retry; the first reconnect's jitter adds at most 10%.
    [gap] = server.gaps()
    assert 0.5 <= gap <= 0.55


async def test_source_waits_default_retry_of_three_seconds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with mock_source([stream(b"data: a\n\n"), stream(b"data: b\n\n", hang=True)]) as (
        source,
        server,
    ):
        await take(source, 2)
    [gap] = server.gaps()
    assert 3.0 <= gap <= 3.3
    assert "Last-Event-ID" not in server.requests[1].headers


async def test_source_keeps_last_event_id_across_streams_without_ids(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The second stream opens with a BOM split across chunks, a comment block and an
    # id-less event: the id from the first stream must survive all of it.
    replies = [
        stream(b"id: \xc3\xa9t\xc3\xa9\ndata: a\n\n"),
        stream(b"\xef\xbb", b"\xbf: hi\n\n", b"data: b\n\n"),
        stream(b"\xef\xbb\xbf\xef\xbb\xbfdata: c\n\n", b"id\ndata: d\n\n", hang=True),
    ]
    async with mock_source(replies) as (source, server):
        events = await take(source, 3)
        assert source.last_event_id == ""
    assert [(e.data, e.last_event_id) for e in events] == [("a", "été"), ("b", "été"), ("d", "")]
    # "encoded as UTF-8", not as httpx's default ASCII
    assert raw_header(server.requests[1], b"last-event-id") == "été".encode()
    assert raw_header(server.requests[2], b"last-event-id") == "été".encode()


async def test_source_sends_initial_last_event_id(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with mock_source([stream(b"data: x\n\n", hang=True)], last_event_id="41") as (
        source,
        server,
    ):
        [event] = await take(source, 1)
    assert event.last_event_id == "41"
    assert server.requests[0].headers["Last-Event-ID"] == "41"


async def test_source_stops_for_good_on_204(autojump_clock: trio.testing.MockClock) -> None:
    replies = [stream(b"data: a\n\n"), httpx.Response(204)]
    async with mock_source(replies) as (source, server):
        events = [event async for event in source]
        assert source.ready_state is ReadyState.CLOSED
    assert [e.data for e in events] == ["a"]
    assert len(server.requests) == 2


@pytest.mark.parametrize(
    ("reply", "status", "content_type"),
    [
        (httpx.Response(500, text="boom"), 500, "text/plain; charset=utf-8"),
        (httpx.Response(404), 404, None),
        (stream(b"data: x\n\n", content_type="text/html"), 200, "text/html"),
        (stream(content_type="text/event-streams"), 200, "text/event-streams"),
    ],
)
async def test_source_raises_on_a_bad_response_without_reconnecting(
    autojump_clock: trio.testing.MockClock,
    reply: httpx.Response,
    status: int,
    content_type: str | None,
) -> None:
    errors: list[trio_sse.SSEError] = []
    async with mock_source([reply], on_error=errors.append) as (source, server):
        with pytest.raises(trio_sse.BadResponseError) as caught:
            await anext(source)
        assert source.ready_state is ReadyState.CLOSED
        with pytest.raises(StopAsyncIteration):
            await anext(source)
    assert caught.value.status_code == status
    assert caught.value.content_type == content_type
    assert errors == [caught.value]
    assert len(server.requests) == 1


async def test_source_accepts_content_type_parameters_in_any_case(
    autojump_clock: trio.testing.MockClock,
) -> None:
    reply = stream(b"data: x\n\n", hang=True, content_type="Text/Event-Stream ; charset=UTF-8")
    async with mock_source([reply]) as (source, _):
        assert [e.data for e in await take(source, 1)] == ["x"]


async def test_source_idle_timeout_drops_a_silent_stream_and_reconnects(
    autojump_clock: trio.testing.MockClock,
) -> None:
    replies = [
        # A chunk every 4 s (an event, then heartbeats) keeps a 5 s idle timeout at
        # bay for 24 s...
        stream(b"id: 7\ndata: a\n\n", *[b": beat\n\n"] * 5, every=4.0, hang=True),
        stream(b"data: b\n\n", hang=True),
    ]
    errors: list[trio_sse.SSEError] = []
    async with mock_source(replies, idle_timeout=5.0, on_error=errors.append) as (source, server):
        events = await take(source, 2)
    assert [e.data for e in events] == ["a", "b"]
    # ...then 5 s of silence kill it: reconnect 24 + 5 s + retry (3 s + <= 10%) later.
    [gap] = server.gaps()
    assert 32.0 <= gap <= 32.3
    assert server.requests[1].headers["Last-Event-ID"] == "7"
    assert len(errors) == 1
    assert isinstance(errors[0], trio_sse.ConnectionLostError)
    assert "no bytes" in str(errors[0])


async def test_source_idle_timeout_covers_waiting_for_headers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def never(request: httpx.Request) -> httpx.Response:
        await trio.sleep_forever()

    server = Server([])
    calls = 0

    async def handle(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return await never(request)
        return await server.handle(request)

    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http,
        open_event_source(URL, http_client=http, idle_timeout=2.0) as source,
    ):
        server.replies.append(stream(b"data: x\n\n", hang=True))
        start = trio.current_time()
        await take(source, 1)
    # 2 s idle, then a back-off after one failed attempt: retry 3 s up to 6 s.
    assert 5.0 <= server.times[0] - start <= 8.0


async def test_source_backs_off_on_failures_and_resets_after_an_open_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    replies: list[Reply | Callable[[httpx.Request], Reply]] = [
        refused,
        refused,
        refused,
        stream(b"data: a\n\n"),
        refused,
        stream(b"data: b\n\n", hang=True),
    ]
    opened: list[float] = []
    async with mock_source(
        replies, policy=ReconnectPolicy(random=constant(1.0)), on_open=lambda: opened.append(1)
    ) as (source, server):
        await take(source, 2)
    # 3 failures: 6, 12, 24 s; open, clean end: 3 + 0.3 s; one failure: 6 s.
    assert server.gaps() == pytest.approx([6.0, 12.0, 24.0, 3.3, 6.0])
    assert len(opened) == 2


async def test_source_raises_after_max_retries(autojump_clock: trio.testing.MockClock) -> None:
    errors: list[trio_sse.SSEError] = []
    async with mock_source([refused] * 10, max_retries=2, on_error=errors.append) as (
        source,
        server,
    ):
        with pytest.raises(trio_sse.RetriesExhaustedError) as caught:
            await anext(source)
        assert source.ready_state is ReadyState.CLOSED
    assert len(server.requests) == 3  # the first attempt and 2 reconnects
    assert isinstance(caught.value.__cause__, trio_sse.ConnectionLostError)
    assert isinstance(caught.value.__cause__.__cause__, httpx.ConnectError)
    assert [type(e) for e in errors] == [
        trio_sse.ConnectionLostError,
        trio_sse.ConnectionLostError,
        trio_sse.RetriesExhaustedError,
    ]


async def test_source_with_max_retries_zero_never_reconnects(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with mock_source([stream(b"data: a\n\n")], max_retries=0) as (source, server):
        assert [e.data for e in await take(source, 1)] == ["a"]
        with pytest.raises(trio_sse.RetriesExhaustedError):
            await anext(source)
    assert len(server.requests) == 1


async def test_source_follows_redirects_but_reconnects_to_the_original_url(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def route(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/events":
            return httpx.Response(307, headers={"Location": "http://other.test/moved"})
        return stream(b"id: 1\ndata: x\n\n")

    async with mock_source([route] * 4) as (source, server):
        await take(source, 2)
    assert [str(r.url) for r in server.requests] == [
        URL,
        "http://other.test/moved",
        URL,
        "http://other.test/moved",
    ]
    assert server.requests[3].headers["Last-Event-ID"] == "1"


async def test_source_reconnects_after_a_network_error_mid_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"id: 1\ndata: a\n\ndata: lost"
        raise httpx.ReadError("connection reset")

    replies = [
        httpx.Response(200, headers={"Content-Type": "text/event-stream"}, content=broken()),
        stream(b"data: b\n\n", hang=True),
    ]
    states: list[ReadyState] = []
    sources: list[EventSource] = []
    async with mock_source(replies, on_error=lambda e: states.append(sources[0].ready_state)) as (
        source,
        server,
    ):
        sources.append(source)
        events = await take(source, 2)
    assert [e.data for e in events] == ["a", "b"]
    assert states == [ReadyState.CONNECTING]
    assert server.requests[1].headers["Last-Event-ID"] == "1"
    assert 3.0 <= server.gaps()[0] <= 3.3


async def test_source_raises_protocol_error_for_an_oversized_event(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with mock_source([stream(b"data: " + b"x" * 100)], max_event_size=50) as (source, _):
        with pytest.raises(trio_sse.EventTooLargeError):
            await anext(source)
        assert source.ready_state is ReadyState.CLOSED


async def test_source_cancelled_read_loses_nothing_and_resumes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    replies = [stream(b"id: 1\ndata: a\n\n", hang=True), stream(b"data: b\n\n", hang=True)]
    async with mock_source(replies) as (source, server):
        await take(source, 1)
        with trio.move_on_after(10):
            await anext(source)
        assert source.ready_state is ReadyState.CONNECTING
        [event] = await take(source, 1)
    assert event.data == "b"
    assert server.requests[1].headers["Last-Event-ID"] == "1"


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("ftp://x/", {}, "http"),
        ("http://a b/", {}, "bad host"),
        ("http:///path", {}, "bad host"),
        ("http://[/", {}, "invalid url"),
        ("http://[::1/", {}, "invalid url"),
        ("http://[zz::1]/", {}, "IPv6"),
        ("http://example.com:65536/", {}, "invalid url"),
        ("http://x/", {"last_event_id": "a\nb"}, "control characters"),
        ("http://x/", {"last_event_id": "a\x01b"}, "control characters"),
        ("http://x/", {"headers": {"last-event-id": "1"}}, "last_event_id="),
        ("http://x/", {"idle_timeout": 0}, "idle_timeout"),
        ("http://x/", {"max_retries": -1}, "max_retries"),
    ],
)
def test_open_event_source_rejects_bad_arguments(
    url: str, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        open_event_source(url, **options)  # type: ignore[arg-type]


async def test_source_must_be_entered_before_iterating() -> None:
    with pytest.raises(RuntimeError, match="async with"):
        await anext(open_event_source(URL))


# ---------------------------------------------------------------------------------
# Against a real server


class DroppingBroker(MemoryBroker):
    """A memory broker whose live subscriptions a test can end (a clean end of stream)."""

    def __init__(self) -> None:
        super().__init__()
        self.live: list[Subscription] = []

    @asynccontextmanager
    async def subscribe(
        self,
        topic: str,
        *,
        last_event_id: str | None = None,
        subject: str | None = None,
        backlog: int = 0,
    ) -> AsyncIterator[Subscription]:
        inner = super().subscribe(
            topic, last_event_id=last_event_id, subject=subject, backlog=backlog
        )
        async with inner as subscription:
            self.live.append(subscription)
            try:
                yield subscription
            finally:
                self.live.remove(subscription)


async def wait_for(condition: Callable[[], bool]) -> None:
    with trio.fail_after(TIMEOUT):
        while not condition():  # noqa: ASYNC110 (no change notification to wait on)
            await trio.sleep(0.001)


async def test_source_reads_events_from_a_real_server() -> None:
    async with running_server() as server:
        opened = trio.Event()
        received: list[MessageEvent] = []
        async with open_event_source(f"{server.url}/events/news", on_open=opened.set) as source:

            async def read() -> None:
                with trio.fail_after(TIMEOUT):
                    while len(received) < 3:
                        received.append(await anext(source))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                with trio.fail_after(TIMEOUT):
                    await opened.wait()
                await server.wait_for_subscribers(1)
                ids = [await server.publish("news", data=f"n{i}") for i in range(3)]
    assert [(e.data, e.last_event_id) for e in received] == [(f"n{i}", ids[i]) for i in range(3)]


async def test_source_resumes_from_last_event_id_with_no_gap_and_no_duplicate() -> None:
    broker = DroppingBroker()
    async with running_server(broker=broker, retry=50) as server:
        errors: list[trio_sse.SSEError] = []
        received: list[MessageEvent] = []
        async with open_event_source(
            f"{server.url}/events/t", idle_timeout=TIMEOUT, on_error=errors.append
        ) as source:

            async def read(count: int) -> None:
                with trio.fail_after(TIMEOUT):
                    while len(received) < count:
                        received.append(await anext(source))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read, 2)
                await server.wait_for_subscribers(1)
                ids = [await server.publish("t", data=d) for d in ("a", "b")]
            # The server ends the stream cleanly, then events arrive while the client
            # is away; they must be replayed from Last-Event-ID.
            broker.live[0].close(CloseReason.SHUTDOWN)
            await server.wait_for_subscribers(0)
            ids += [await server.publish("t", data=d) for d in ("c", "d")]
            await read(4)
            assert source.ready_state is ReadyState.OPEN
            ids.append(await server.publish("t", data="e"))
            await read(5)
    assert [(e.data, e.last_event_id) for e in received] == list(zip("abcde", ids, strict=True))
    assert len(errors) == 1
    assert "ended the stream" in str(errors[0])
