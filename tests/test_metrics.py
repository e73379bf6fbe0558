"""GET /metrics: Prometheus text, read from the broker at scrape time, with bounded labels."""

from __future__ import annotations

from contextlib import AsyncExitStack

from prometheus_client.parser import text_string_to_metric_families

from tests.wire import SSEConnection, running_server
from trio_sse import MemoryBroker
from trio_sse.web import Metrics, StreamEnd
from trio_sse.web._metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_endpoint_reports_streams_and_counters() -> None:
    async with running_server() as server:
        a1 = await SSEConnection.open(server, "/events/a")
        a2 = await SSEConnection.open(server, "/events/a")
        b = await SSEConnection.open(server, "/events/b")
        await server.wait_for_subscribers(3)
        await server.publish("a", data="x")
        await a1.read_events(1)
        response = await server.http.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"] == METRICS_CONTENT_TYPE
        values = samples(response.text)
        assert values[("trio_sse_subscribers", (("topic", "a"),))] == 2
        assert values[("trio_sse_subscribers", (("topic", "b"),))] == 1
        assert values[("trio_sse_published_total", ())] == 1
        assert values[("trio_sse_delivered_total", ())] == 2
        assert values[("trio_sse_dropped_total", ())] == 0
        assert values[("trio_sse_backplane_up", ())] == 1
        assert values[("trio_sse_disconnects_total", (("reason", "client_closed"),))] == 0
        for connection in (a1, a2, b):
            await connection.close_fin()


async def test_subscriber_series_are_bounded() -> None:
    broker = MemoryBroker()
    metrics = Metrics(broker, max_topics=2)
    async with AsyncExitStack() as stack:
        for topic, count in [("big", 3), ("mid", 2), ("t1", 1), ("t2", 1)]:
            for _ in range(count):
                await stack.enter_async_context(broker.subscribe(topic))
        values = samples(metrics.render().decode())
    series = {labels for name, labels in values if name == "trio_sse_subscribers"}
    assert series == {(("topic", "big"),), (("topic", "mid"),), (("topic", "_other"),)}
    assert values[("trio_sse_subscribers", (("topic", "_other"),))] == 2
    await broker.aclose()


def test_every_stream_end_has_its_own_series() -> None:
    metrics = Metrics(MemoryBroker())
    metrics.stream_closed(StreamEnd.CLIENT_CLOSED)
    metrics.stream_closed(StreamEnd.UNAVAILABLE)
    values = samples(metrics.render().decode())
    assert values[("trio_sse_disconnects_total", (("reason", "client_closed"),))] == 1
    # Once counted as "error" when reasons were strings.
    assert values[("trio_sse_disconnects_total", (("reason", "unavailable"),))] == 1
    assert values[("trio_sse_disconnects_total", (("reason", "error"),))] == 0
    reasons = {
        dict(labels)["reason"] for name, labels in values if name == "trio_sse_disconnects_total"
    }
    assert reasons == {
        "client_closed",
        "slow_consumer",
        "shutdown",
        "max_age",
        "auth_expired",
        "unavailable",
        "ended",
        "error",
    }


async def test_streams_report_write_latency_and_disconnect_reasons() -> None:
    async with running_server() as server:
        connection = await SSEConnection.open(server, "/events/a")
        await server.wait_for_subscribers(1)
        await server.publish("a", data="x")
        await connection.read_events(1)
        await connection.close_fin()
        await server.wait_for_subscribers(0)
        values = samples((await server.http.get("/metrics")).text)
        assert values[("trio_sse_publish_to_write_seconds_count", ())] == 1
        # Loopback, nothing else running: far below the histogram's top bucket.
        assert values[("trio_sse_publish_to_write_seconds_bucket", (("le", "10.0"),))] == 1
        assert values[("trio_sse_disconnects_total", (("reason", "client_closed"),))] == 1
