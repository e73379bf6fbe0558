"""Prometheus metrics for the reference app (``GET /metrics``), via prometheus-client.

Each app gets its own registry (several apps in one process, as in tests, never
collide). The broker's counters are read when Prometheus scrapes, not counted on
the publish path, which stays free of metric updates:

* ``trio_sse_subscribers{topic}``: open streams per topic, for the ``max_topics``
  busiest topics; the rest are summed under ``topic="_other"``, so a client that
  opens thousands of topics cannot blow up the series count;
* ``trio_sse_published_total``, ``trio_sse_delivered_total``, ``trio_sse_dropped_total``;
* ``trio_sse_history_retained_bytes``: bytes of replay history held in this process
  (brokers that keep history here only);
* ``trio_sse_streams_refused_total``: requests refused by the stream caps;
* ``trio_sse_disconnects_total{reason}``: how streams ended (``client_closed``,
  ``slow_consumer``, ``shutdown``, ``max_age``, ``auth_expired``, ``unavailable``, ``ended``,
  ``error``: the values of :class:`~trio_sse.web.StreamEnd`);
* ``trio_sse_publish_to_write_seconds``: from ``publish()`` to the write that
  carries the event to a subscriber, observed once per write (its oldest event).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterator
from typing import Final

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter
from prometheus_client import generate_latest as _generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ..broker import Broker
from ._observer import StreamEnd

__all__ = ["CONTENT_TYPE", "DEFAULT_MAX_TOPIC_LABELS", "DISCONNECT_REASONS", "Metrics"]

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
# Enough for every topic of a chat or a dashboard, few enough that a scrape stays
# small whatever clients do.
DEFAULT_MAX_TOPIC_LABELS: Final = 100
DISCONNECT_REASONS: Final = tuple(reason.value for reason in StreamEnd)
_OTHER_TOPICS: Final = "_other"
# From a loopback write (~1 ms) to a stalled proxy (seconds).
_LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class _BrokerCollector(Collector):
    def __init__(
        self,
        broker: Broker,
        refused: Callable[[], int],
        backplane_up: Callable[[], bool],
        max_topics: int,
    ) -> None:
        self._broker = broker
        self._refused = refused
        self._backplane_up = backplane_up
        self._max_topics = max_topics

    def collect(self) -> Iterator[Metric]:
        stats = self._broker.statistics()
        subscribers = GaugeMetricFamily(
            "trio_sse_subscribers", "Open event streams, by topic.", labels=["topic"]
        )
        busiest = sorted(stats.subscribers_per_topic.items(), key=lambda item: -item[1])
        for topic, count in busiest[: self._max_topics]:
            subscribers.add_metric([topic], count)
        rest = sum(count for _, count in busiest[self._max_topics :])
        if rest:
            subscribers.add_metric([_OTHER_TOPICS], rest)
        yield subscribers
        yield GaugeMetricFamily(
            "trio_sse_topics", "Topics with subscribers or history.", stats.topics
        )
        yield CounterMetricFamily("trio_sse_published", "Events published.", stats.published)
        if stats.retained_bytes is not None:
            yield GaugeMetricFamily(
                "trio_sse_history_retained_bytes",
                "Bytes of replay history held in this process.",
                stats.retained_bytes,
            )
        yield CounterMetricFamily(
            "trio_sse_delivered",
            "Events queued to subscribers (one per subscriber).",
            stats.delivered,
        )
        yield CounterMetricFamily(
            "trio_sse_dropped", "Subscribers dropped because they fell behind.", stats.dropped
        )
        yield CounterMetricFamily(
            "trio_sse_streams_refused", "Stream requests refused by the caps.", self._refused()
        )
        yield GaugeMetricFamily(
            "trio_sse_backplane_up",
            "1 if the broker's backplane is reachable (always 1 in memory).",
            1 if self._backplane_up() else 0,
        )


class Metrics:
    """The metrics of one app: a registry, the disconnect and latency instruments.

    Args:
        broker: Read at scrape time.
        refused: Returns the number of stream requests refused so far.
        backplane_up: Returns whether the backplane is reachable.
        max_topics: How many topics get their own ``trio_sse_subscribers`` series.
    """

    def __init__(
        self,
        broker: Broker,
        *,
        refused: Callable[[], int] = lambda: 0,
        backplane_up: Callable[[], bool] = lambda: True,
        max_topics: int = DEFAULT_MAX_TOPIC_LABELS,
    ) -> None:
        self.registry = CollectorRegistry()
        self._disconnects = Counter(
            "trio_sse_disconnects",
            "Event streams ended, by reason.",
            ["reason"],
            registry=self.registry,
        )
        for reason in DISCONNECT_REASONS:
            self._disconnects.labels(reason)  # every series exists from the start, at 0
        self._latency = _WriteLatency()
        self.registry.register(self._latency)
        self.registry.register(_BrokerCollector(broker, refused, backplane_up, max_topics))

    def stream_closed(self, reason: StreamEnd) -> None:
        """Count one ended stream."""
        self._disconnects.labels(reason.value).inc()

    def written(self, seconds: float) -> None:
        """Observe one write's publish-to-write latency."""
        self._latency.observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return _generate_latest(self.registry)


class _WriteLatency(Collector):
    """``trio_sse_publish_to_write_seconds``: a histogram observed on every write.

    Counted in a plain list rather than with prometheus-client's ``Histogram``, whose
    ``observe`` takes a lock and updates one object per bucket: on the delivery path
    that cost as much as the write's system call. One Trio thread writes, so no lock.
    """

    def __init__(self) -> None:
        self._counts = [0] * (len(_LATENCY_BUCKETS) + 1)  # the last: above every bound
        self._sum = 0.0

    def observe(self, seconds: float) -> None:
        self._counts[bisect.bisect_left(_LATENCY_BUCKETS, seconds)] += 1
        self._sum += seconds

    def collect(self) -> Iterator[Metric]:
        cumulative, buckets = 0, []
        for bound, count in zip((*_LATENCY_BUCKETS, math.inf), self._counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == math.inf else str(bound), cumulative))
        yield HistogramMetricFamily(
            "trio_sse_publish_to_write_seconds",
            "Seconds from publish() to the write carrying the event.",
            buckets=buckets,
            sum_value=self._sum,
        )
