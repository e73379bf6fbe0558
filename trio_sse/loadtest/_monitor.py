"""The monitor: the timeline (one sample a second), the verdict source, and the clean check.

The verdict source (the server's ``/stats`` by default, see :mod:`._sources`) is read
before the run (the baseline), once a second during it (for the chart), at the close,
and then every :data:`CLEAN_POLL_INTERVAL` until its count is back to the baseline; if
it is not within ``clean_timeout``, the server is leaking.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import trio

from ..errors import LoadTestError
from ._connection import Address
from ._http import Target
from ._options import LoadTestOptions
from ._record import Phase, RunRecord, Sample, SampleCallback
from ._sources import GaugeSource, JsonCountSource, ProcessSource, SubscriberSource
from ._tally import Window

__all__ = ["CLEAN_POLL_INTERVAL", "SAMPLE_INTERVAL", "STATS_INTERVAL", "Monitor"]

# One timeline row (and one progress line) per second.
SAMPLE_INTERVAL: Final = 1.0
# How often the verdict source is read during the run (for the chart).
STATS_INTERVAL: Final = 1.0
# How often it is read after the close: the time to clean's resolution.
CLEAN_POLL_INTERVAL: Final = 0.02


class Monitor:
    """Samples the run every second and reads the verdict source.

    Attributes:
        start: The run's start on Trio's clock (samples are timed from it).
    """

    def __init__(
        self,
        options: LoadTestOptions,
        record: RunRecord,
        *,
        target: Target,
        stats: Address,
        metrics: Address,
        window: Window,
        connections: Callable[[], int],
        on_sample: SampleCallback | None,
    ) -> None:
        self._o = options
        self._record = record
        self._target = target
        self._stats = stats
        self._metrics = metrics
        self._window = window
        self._connections = connections
        self._on_sample = on_sample
        self.source = self._make_source()
        self.server_subscribers: int | None = None
        self._phase = Phase.RAMP
        self.start = 0.0
        record.source_kind, record.source = self.source.kind, self.source.description

    def _make_source(self) -> SubscriberSource:
        o = self._o
        if o.server_pid is not None:
            return ProcessSource(o.server_pid, self._target.port)
        if o.metrics_gauge is not None:
            return GaugeSource(self._metrics, o.metrics_target(), o.metrics_gauge)
        return JsonCountSource(self._stats, o.stats_target(), o.stats_path)

    def close(self) -> None:
        self.source.close()

    @property
    def phase(self) -> Phase:
        """The run's phase now; each sample carries it."""
        return self._phase

    def enter(self, phase: Phase) -> None:
        """The run enters ``phase`` now: noted to the millisecond, for the chart's markers."""
        self._phase = phase
        self._record.phase_starts[phase] = round(trio.current_time() - self.start, 3)

    # -- before and after -----------------------------------------------------------

    async def read_baseline(self) -> None:
        """The count before the run (and the server's RSS, from its process)."""
        record = self._record
        record.baseline_subscribers = await self.fetch_subscribers()
        self.server_subscribers = record.baseline_subscribers
        if isinstance(self.source, ProcessSource):
            record.server_rss_kib_before = self.source.rss_kib()
            self._sample_server_rss()

    async def fetch_subscribers(self) -> int:
        try:
            return await self.source.read()
        except LoadTestError as exc:
            self._record.stats_error = str(exc)
            raise

    async def read_at_close(self) -> None:
        """The count with every stream still open, just before the close."""
        try:
            self._record.subscribers_at_close = await self.fetch_subscribers()
        except LoadTestError:
            self._record.stats_failures += 1

    async def check_clean(self) -> None:
        """Poll until the count is back to the baseline, or ``clean_timeout`` passes."""
        record = self._record
        closed_at = trio.current_time()
        with trio.move_on_after(self._o.clean_timeout):
            while True:
                try:
                    count = await self.fetch_subscribers()
                except LoadTestError:
                    record.stats_failures += 1
                else:
                    record.subscribers_after = self.server_subscribers = count
                    if count <= record.baseline_subscribers:
                        record.clean_seconds = trio.current_time() - closed_at
                        return
                # Another process: its own count is the only view of its subscribers.
                await trio.sleep(CLEAN_POLL_INTERVAL)

    def finish(self) -> None:
        """The last (partial) sample, and the server's RSS after the run."""
        samples = self._record.samples
        last_t = samples[-1].t if samples else 0.0
        self.take_sample(trio.current_time() - self.start - last_t)
        if isinstance(self.source, ProcessSource):
            self._record.server_rss_kib_after = self.source.rss_kib()

    # -- during ---------------------------------------------------------------------

    async def run(self) -> None:
        """Sample every second and poll the verdict source, until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._sample_every_second)
            nursery.start_soon(self._poll_stats)

    async def _sample_every_second(self) -> None:
        tick = self.start
        while True:
            tick += SAMPLE_INTERVAL
            await trio.sleep_until(tick)
            self.take_sample(SAMPLE_INTERVAL)

    def take_sample(self, window: float) -> None:
        taken = self._window.take()
        latency = taken.latency
        sample = Sample(
            t=round(trio.current_time() - self.start, 3),
            phase=self._phase,
            connections=self._connections(),
            server_subscribers=self.server_subscribers,
            delivered=taken.delivered,
            events_per_s=taken.delivered / window if window > 0 else 0.0,
            latency_p50=latency.percentile(50) if latency.count else None,
            latency_p99=latency.percentile(99) if latency.count else None,
            latency_max=latency.max if latency.count else None,
            errors=taken.errors,
            drops=taken.drops,
        )
        self._record.samples.append(sample)
        if self._on_sample is not None:
            self._on_sample(sample, self._record)

    async def _poll_stats(self) -> None:
        # A source of its own: the clean check reads the main one meanwhile.
        source = self._make_source()
        record = self._record
        try:
            while True:
                try:
                    self.server_subscribers = await source.read()
                except LoadTestError as exc:
                    # Unknown, not the last value: a server too busy to answer is a
                    # finding, and the chart shows it as a gap.
                    self.server_subscribers = None
                    record.stats_failures += 1
                    record.stats_error = str(exc)
                self._sample_server_rss()
                await trio.sleep(STATS_INTERVAL)
        finally:
            source.close()

    def _sample_server_rss(self) -> None:
        if isinstance(self.source, ProcessSource):
            rss = self.source.rss_kib()
            if rss is not None:
                peak = self._record.server_rss_kib_peak
                self._record.server_rss_kib_peak = rss if peak is None else max(peak, rss)
