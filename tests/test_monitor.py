"""The monitoring example (examples/monitor/server.py): its sampler, its stream, its page.

The page itself, in a real browser, is in tests/test_browser.py.
"""

from __future__ import annotations

import json
from functools import partial
from types import ModuleType
from typing import Any

import pytest
import trio

from tests.examples import load_example, run_on_a_taken_port
from tests.wire import TIMEOUT, SSEConnection, running_server
from trio_sse import MemoryBroker, ServerSentEvent
from trio_sse.broker import parse_position
from trio_sse.protocol import Decoder, MessageEvent

FIELDS = {
    "time",
    "process_cpu",
    "system_cpu",
    "process_rss",
    "system_memory_used",
    "system_memory_total",
    "connections",
    "published_per_second",
    "delivered_per_second",
}


def load_monitor() -> ModuleType:
    return load_example("monitor/server.py", "monitor_server")


async def test_sampler_reads_cpu_memory_and_the_brokers_connections_and_rates() -> None:
    monitor = load_monitor()
    broker = MemoryBroker()
    sampler = monitor.MetricsSampler(broker)
    async with broker.subscribe("news"), broker.subscribe("news"):
        for _ in range(10):
            await broker.publish("news", ServerSentEvent("x"))
        sample = sampler.sample()
    assert set(sample) == FIELDS
    assert all(isinstance(value, int | float) for value in sample.values())
    assert sample["connections"] == 2
    assert sample["published_per_second"] > 0
    # Each event went to both subscribers.
    assert sample["delivered_per_second"] == pytest.approx(
        2 * sample["published_per_second"], rel=1e-3
    )
    assert 0 < sample["process_rss"] < sample["system_memory_total"]
    assert 0 < sample["system_memory_used"] <= sample["system_memory_total"]
    # Rates cover the time since the previous sample: nothing happened since.
    assert sampler.sample()["published_per_second"] == 0


async def test_publish_samples_beats_every_interval_and_stops_when_the_broker_closes(
    autojump_clock: trio.abc.Clock,
) -> None:
    monitor = load_monitor()
    broker = MemoryBroker()
    sampler = monitor.MetricsSampler(broker)
    decoder = Decoder()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            async with broker.subscribe(monitor.TOPIC) as subscription:
                nursery.start_soon(partial(monitor.publish_samples, broker, sampler, interval=1))
                start = trio.current_time()
                events: list[MessageEvent] = []
                while len(events) < 3:
                    for frame in await subscription.receive_batch():
                        events += decoder.feed(frame)
                assert trio.current_time() - start == pytest.approx(3)
            await broker.aclose()
            # The nursery now exits only if the sampler returns by itself.
    assert [event.type for event in events] == ["sample"] * 3
    assert all(set(json.loads(event.data)) == FIELDS for event in events)
    assert list(sampler.recent_ids) == [event.last_event_id for event in events]


async def test_metrics_stream_replays_the_last_window_then_resumes_by_id() -> None:
    monitor = load_monitor()
    broker = MemoryBroker()
    sampler = monitor.MetricsSampler(broker)
    app = monitor.create_monitor_app(broker, sampler)
    async with running_server(app=app, broker=broker) as server:
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                async with broker.subscribe(monitor.TOPIC) as subscription:
                    nursery.start_soon(
                        partial(monitor.publish_samples, broker, sampler, interval=0.01)
                    )
                    seen = 0
                    while seen < 5:
                        seen += len(await subscription.receive_batch())
                nursery.cancel_scope.cancel()
        ids = list(sampler.recent_ids)
        assert len(ids) >= 5
        # A new dashboard gets the window at once, oldest first, with no live wait.
        fresh = await SSEConnection.open(server, "/samples")
        window = await fresh.read_events(len(ids) - 1)
        assert [event.last_event_id for event in window] == ids[1:]
        assert {event.type for event in window} == {"sample"}
        # A reconnecting one gets only what it missed.
        again = await SSEConnection.open(server, "/samples", headers=[("Last-Event-ID", ids[2])])
        await again.read_events(len(ids) - 3)
        assert [event.last_event_id for event in again.events] == ids[3:]
        for conn in (fresh, again):
            await conn.close_fin()


async def test_monitor_serves_its_page_and_the_reference_routes() -> None:
    monitor = load_monitor()
    broker = MemoryBroker()
    app = monitor.create_monitor_app(broker, monitor.MetricsSampler(broker))
    async with running_server(app=app, broker=broker) as server:
        page = await server.http.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert '<script src="/static/monitor.js"' in page.text
        for name, kind in (("monitor.js", "javascript"), ("monitor.css", "text/css")):
            asset = await server.http.get(f"/static/{name}")
            assert asset.status_code == 200
            assert kind in asset.headers["content-type"]
        assert (await server.http.get("/static/..%2Fserver.py")).status_code == 404
        assert (await server.http.get("/stats")).json()["published"] == 0


@pytest.mark.slow
def test_monitor_says_in_one_line_that_its_port_is_taken() -> None:
    result = run_on_a_taken_port("monitor/server.py")
    assert result.returncode == 1
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("server.py: cannot listen on 127.0.0.1:")
    assert "address already in use" in line.lower()


async def test_samples_do_not_count_the_monitors_own_samples_as_traffic(
    autojump_clock: trio.abc.Clock,
) -> None:
    monitor = load_monitor()
    broker = MemoryBroker()
    sampler = monitor.MetricsSampler(broker)
    decoder = Decoder()
    events: list[MessageEvent] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, broker.subscribe(monitor.TOPIC) as dashboard:
            nursery.start_soon(partial(monitor.publish_samples, broker, sampler, interval=1))
            while len(events) < 4:
                for frame in await dashboard.receive_batch():
                    events += decoder.feed(frame)
                if len(events) == 2:
                    # Real traffic between the 2nd and 3rd samples: 3 events, 1 subscriber.
                    async with broker.subscribe("news") as news:
                        for _ in range(3):
                            await broker.publish("news", ServerSentEvent("x"))
                        await news.receive_batch()
            nursery.cancel_scope.cancel()
    samples = [json.loads(event.data) for event in events]
    # Sample 2 covers sample 1's publish and delivery to the dashboard: none counts.
    assert [s["published_per_second"] for s in samples] == [0, 0, 3, 0]
    assert [s["delivered_per_second"] for s in samples] == [0, 0, 3, 0]


async def publish_samples_until(
    monitor: ModuleType, broker: MemoryBroker, sampler: Any, count: int
) -> None:
    """Publish samples quickly until ``count`` are in the sampler's window."""
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            async with broker.subscribe(monitor.TOPIC) as subscription:
                nursery.start_soon(partial(monitor.publish_samples, broker, sampler, interval=0.01))
                seen = 0
                while seen < count:
                    seen += len(await subscription.receive_batch())
            nursery.cancel_scope.cancel()


async def test_samples_and_watched_topics_share_one_stream_that_resumes_by_one_id() -> None:
    monitor = load_monitor()
    broker = MemoryBroker()
    sampler = monitor.MetricsSampler(broker)
    app = monitor.create_monitor_app(broker, sampler)
    async with running_server(app=app, broker=broker) as server:
        await publish_samples_until(monitor, broker, sampler, 4)
        ids = list(sampler.recent_ids)
        # Published before the dashboard came: a watched topic starts from now.
        await broker.publish("news", ServerSentEvent("old"))
        dashboard = await SSEConnection.open(server, "/samples?topic=news&topic=orders")
        assert dashboard.status == 200
        # The window of samples at once, each named by its topic and type.
        window = await dashboard.read_events(len(ids) - 1)
        assert {event.type for event in window} == {"metrics:sample"}
        assert [parse_position(e.last_event_id, 3)[0] for e in window] == ids[1:]
        await server.wait_for_subscribers(3)  # one per topic of the stream
        news_id = await broker.publish("news", ServerSentEvent("hello"))
        orders_id = await broker.publish("orders", ServerSentEvent("{}", event="paid"))
        news, orders = (await dashboard.read_events(len(ids) + 1))[-2:]
        assert (news.type, news.data) == ("news", "hello")
        assert (orders.type, orders.data) == ("orders:paid", "{}")
        assert parse_position(orders.last_event_id, 3) == [ids[-1], news_id, orders_id]
        # One Last-Event-ID resumes all three: only what came after it.
        missed = await broker.publish("news", ServerSentEvent("while away"))
        again = await SSEConnection.open(
            server,
            "/samples?topic=news&topic=orders",
            headers=[("Last-Event-ID", orders.last_event_id)],
        )
        (resumed,) = await again.read_events(1)
        assert (resumed.type, resumed.data) == ("news", "while away")
        assert parse_position(resumed.last_event_id, 3) == [ids[-1], missed, orders_id]
        for conn in (dashboard, again):
            await conn.close_fin()


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("topic=metrics", "not 'metrics'"),
        ("topic=news&topic=news", "each topic once"),
        ("&".join(f"topic=t{i}" for i in range(32)), "at most 31 topics beside 'metrics', got 32"),
        ("topic=bad%20name", "topic"),
    ],
)
async def test_samples_refuses_a_bad_list_of_topics(query: str, problem: str) -> None:
    monitor = load_monitor()
    broker = MemoryBroker()
    app = monitor.create_monitor_app(broker, monitor.MetricsSampler(broker))
    async with running_server(app=app, broker=broker) as server:
        response = await server.http.get(f"/samples?{query}")
    assert response.status_code == 400
    assert problem in response.json()["error"]
    assert broker.statistics().subscribers == 0


async def test_a_dashboard_of_several_topics_is_not_counted_as_traffic() -> None:
    monitor = load_monitor()
    broker = MemoryBroker()
    sampler = monitor.MetricsSampler(broker)
    app = monitor.create_monitor_app(broker, sampler)
    async with running_server(app=app, broker=broker) as server:
        dashboard = await SSEConnection.open(server, "/samples?topic=news")
        await server.wait_for_subscribers(2)
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(monitor.publish_samples, broker, sampler, interval=0.02))
                events = await dashboard.read_events(5)
                nursery.cancel_scope.cancel()
        await dashboard.close_fin()
    samples = [json.loads(event.data) for event in events]
    # Nothing but the samples themselves was published or delivered.
    assert [s["published_per_second"] for s in samples] == [0] * 5
    assert [s["delivered_per_second"] for s in samples] == [0] * 5
    # The page's one stream holds a subscription per topic: the figure counts those.
    assert {s["connections"] for s in samples} == {2}
