"""A live monitoring dashboard over SSE: the server's own CPU, memory, connections and traffic.

    python examples/monitor/server.py [--host 127.0.0.1] [--port 8001] [--interval 1.0]

Then open http://127.0.0.1:8001/ in a browser. The page (``static/``: plain HTML, CSS
and JavaScript, charts drawn in SVG by the page itself, nothing fetched from
elsewhere) shows the last minute and moves on every second.

* Every ``--interval`` seconds the server samples process and system CPU and memory
  (psutil) and the broker's counters (open SSE connections, events published and
  delivered per second, its own samples left out), and publishes the sample as an
  ``event: sample`` on the ``metrics`` topic.
* ``GET /samples`` streams the samples: a new subscriber first gets the samples of
  the last minute (replayed from the broker's history), so its charts start full; a
  reconnecting one gets exactly those it missed (``Last-Event-ID``).
* ``GET /samples?topic=news&topic=orders`` streams the samples and those topics on
  one connection (at most 31 of them), as ``GET /events?topic=...`` of the reference
  app does: each event's type names its topic (``metrics:sample``, ``news``,
  ``news:<type>``) and its id is the stream's position in every topic. A new
  subscriber gets the last minute of samples, and the other topics from now on.
* ``GET /`` is the dashboard: its charts, and the events of the topics it watches
  (``/?topic=NAME``, repeated; ``news`` by default), all on ONE stream. Every route of
  the reference app is here too (``/events/<topic>``, ``/stats``, ``/healthz``), so
  there is traffic to watch:

      trio-sse listen http://127.0.0.1:8001/events/news
      trio-sse publish http://127.0.0.1:8001/events/news --data hello

Only trio_sse's public API is used, plus psutil.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import math
import socket
import time
from functools import partial
from pathlib import Path
from typing import Final

import psutil
import quart
import trio
from quart_trio import QuartTrio

import trio_sse
from trio_sse.broker import DEFAULT_HISTORY, format_position
from trio_sse.server import bind_or_exit

TOPIC: Final = "metrics"
EVENT_TYPE: Final = "sample"
DEFAULT_INTERVAL: Final = 1.0
# The dashboard draws one minute; at the default interval that is 60 samples.
WINDOW: Final = 60
# Topics a dashboard may watch beside the samples: one stream of at most 32 topics,
# as `trio-sse serve` allows by default (--max-topics-per-stream).
MAX_WATCHED: Final = 31
# Dashboards reconnect after a second: a longer outage shows as a gap in the charts.
RETRY: Final = 1000
STATIC: Final = Path(__file__).resolve().parent / "static"
# The page runs its own script only, whatever arrives in a sample.
PAGE_CSP: Final = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)


class MetricsSampler:
    """Reads the numbers of one sample; each covers the time since the previous one.

    Args:
        broker: The broker whose connections and traffic are reported.
    """

    def __init__(self, broker: trio_sse.Broker) -> None:
        self._broker = broker
        self._process = psutil.Process()
        # psutil's CPU percentages compare with the previous call; this is the first.
        self._process.cpu_percent(None)
        psutil.cpu_percent(None)
        # Trio's clock, not time.monotonic(): the same in production, and a test's
        # autojump clock then gives exact rates.
        self._then = trio.current_time()
        self._before = broker.statistics()
        # The monitor's own samples since the last sample: its own traffic, which
        # the rates leave out (a dashboard shows the app's traffic, not its own).
        self._own_published = 0
        self._own_delivered = 0
        self.recent_ids: collections.deque[str] = collections.deque(maxlen=WINDOW)
        """Ids of the samples published in the last window, oldest first."""

    def count_own(self, event_id: str, *, delivered: int) -> None:
        """Note a sample published as ``event_id`` and queued to ``delivered`` dashboards.

        The next :meth:`sample` leaves it out of the published and delivered rates.
        """
        self.recent_ids.append(event_id)
        self._own_published += 1
        self._own_delivered += delivered

    def sample(self) -> dict[str, float]:
        """Read a sample: CPU in percent, memory in bytes, rates per second."""
        now = trio.current_time()
        stats = self._broker.statistics()
        elapsed = max(now - self._then, 1e-6)
        published = stats.published - self._before.published - self._own_published
        # max(): a dashboard dropped as slow got fewer samples than counted.
        delivered = max(0, stats.delivered - self._before.delivered - self._own_delivered)
        memory = psutil.virtual_memory()
        sample = {
            "time": round(time.time(), 3),
            "process_cpu": self._process.cpu_percent(None),
            "system_cpu": psutil.cpu_percent(None),
            "process_rss": self._process.memory_info().rss,
            "system_memory_used": memory.total - memory.available,
            "system_memory_total": memory.total,
            "connections": stats.subscribers,
            "published_per_second": round(published / elapsed, 2),
            "delivered_per_second": round(delivered / elapsed, 2),
        }
        self._then, self._before = now, stats
        self._own_published = self._own_delivered = 0
        return sample


async def publish_samples(
    broker: trio_sse.Broker, sampler: MetricsSampler, *, interval: float = DEFAULT_INTERVAL
) -> None:
    """Publish a sample every ``interval`` seconds until cancelled or the broker closes."""
    next_at = trio.current_time()
    while True:
        # A late wake-up (a busy loop) starts a new beat instead of a burst.
        next_at = max(next_at + interval, trio.current_time())
        await trio.sleep_until(next_at)
        event = trio_sse.ServerSentEvent(json.dumps(sampler.sample()), event=EVENT_TYPE)
        # The in-memory broker queues the sample to each dashboard as it publishes.
        dashboards = broker.statistics().subscribers_per_topic.get(TOPIC, 0)
        try:
            event_id = await broker.publish(TOPIC, event)
        except trio_sse.BrokerClosedError:
            return  # shutting down: the streams are ending, nobody is left to tell
        sampler.count_own(event_id, delivered=dashboards)


def create_monitor_app(broker: trio_sse.Broker, sampler: MetricsSampler) -> QuartTrio:
    """The reference app on ``broker``, plus the dashboard and its ``/samples`` stream."""
    app = trio_sse.create_app(broker=broker)

    @app.get("/")
    async def page() -> quart.ResponseReturnValue:
        response = await quart.send_from_directory(STATIC, "index.html")
        response.headers["Content-Security-Policy"] = PAGE_CSP
        response.headers["Cache-Control"] = "no-cache"
        return response

    @app.get("/static/<path:name>")
    async def static_file(name: str) -> quart.ResponseReturnValue:
        return await quart.send_from_directory(STATIC, name)

    @app.get("/samples")
    async def samples() -> quart.ResponseReturnValue:
        watched = quart.request.args.getlist("topic")
        last_event_id = trio_sse.last_event_id_of(quart.request)
        if not watched:
            if last_event_id is None and sampler.recent_ids:
                # A new dashboard starts with the last window, replayed by the broker
                # together with the subscription: no sample is missed or sent twice.
                last_event_id = sampler.recent_ids[0]
            return trio_sse.event_stream(broker, TOPIC, last_event_id=last_event_id, retry=RETRY)
        if len(watched) > MAX_WATCHED:
            quart.abort(400, f"at most {MAX_WATCHED} topics beside {TOPIC!r}, got {len(watched)}")
        if TOPIC in watched or len(set(watched)) != len(watched):
            quart.abort(400, f"each topic once, and not {TOPIC!r} (always streamed)")
        if last_event_id is None and sampler.recent_ids:
            # The same window of samples; the watched topics from now on (no position).
            last_event_id = format_position([sampler.recent_ids[0], *[None] * len(watched)])
        # One stream for all: a page has only 6 connections per server over HTTP/1.1.
        return trio_sse.event_stream(
            broker, [TOPIC, *watched], last_event_id=last_event_id, retry=RETRY
        )

    return app


async def main(sock: socket.socket, interval: float) -> None:
    """Serve the dashboard on ``sock`` (bound by :func:`trio_sse.server.bind_or_exit`)."""
    # Per-topic history must hold the window that /samples replays to a new page.
    broker = trio_sse.MemoryBroker(history=max(WINDOW, DEFAULT_HISTORY))
    sampler = MetricsSampler(broker)
    app = create_monitor_app(broker, sampler)
    async with trio.open_nursery() as nursery:
        # The sampler belongs to this nursery, beside the server: it stops when the
        # broker closes at shutdown, or is cancelled below once the server is down.
        nursery.start_soon(partial(publish_samples, broker, sampler, interval=interval))
        await trio_sse.serve(app, sock=sock, on_shutdown=broker.aclose)
        nursery.cancel_scope.cancel()


def _interval(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument(
        "--interval", type=_interval, default=DEFAULT_INTERVAL, help="seconds between samples"
    )
    args = parser.parse_args()
    sock = bind_or_exit(args.host, args.port, prog=parser.prog)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    trio.run(main, sock, args.interval)
