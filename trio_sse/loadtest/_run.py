"""One load test, from the first connect to the leak verdict.

The phases, and the task tree that runs them::

    run_loadtest
    └── nursery "monitor": the sampler (one timeline row per second) and the /stats poller
        └── nursery "streams": one task per subscriber, plus one per stalled socket held
            └── nursery "load": the publisher, the ramp, the churn

1. **ramp**: subscriber tasks start at ``ramp`` per second, with at most
   ``max_connecting`` connects in flight; each connects, reads, and reconnects with
   ``Last-Event-ID`` whenever its connection drops or fails. The ramp ends when every
   subscriber has tried once.
2. **steady**: ``duration`` seconds of publishing (``publish_rate`` events/s), and
   of churn: ``churn`` times a second a random open connection is dropped (FIN, RST
   or stall, in turn) by cancelling its read scope; its task drops the socket that
   way and reconnects.
3. **drain**: publishing stops; wait (at most ``drain_timeout``) until every
   subscriber is connected and has every event it should have.
4. **close**: the streams nursery is cancelled: every socket closes (FIN).
5. **clean**: poll the verdict source (the server's ``/stats`` by default, see
   :mod:`._sources`) until its count is back to its value before the run; if it is
   not within ``clean_timeout``, the server is leaking.

With ``is_publishing`` False there is no publisher: the server emits events of its
own, and each subscriber's ledger numbers them by their ids (:mod:`._ids`).

A publish that failed in the load tester's eyes (no answer in time, a broken
connection) may still have been made by the server. Once any subscriber receives its
event, it was made: from then on it is judged like every other event (a subscriber
that should have had it and did not has lost it), instead of being excused as never
published. Only failed publishes that nobody received are excused.
"""

from __future__ import annotations

import itertools
import json
import random
import resource
import time
from collections import Counter
from collections.abc import Container
from dataclasses import dataclass
from typing import Final

import trio

from ..errors import LoadTestError
from ..file_limit import raise_open_file_limit
from ..protocol import MessageEvent
from ._connection import (
    Address,
    DropMethod,
    ErrorKind,
    StreamConnection,
    StreamFailureError,
    resolve,
)
from ._http import parse_url
from ._ids import parse_seq, parse_timestamp
from ._ledger import Ledger
from ._options import LoadTestOptions
from ._publisher import Publisher
from ._record import Phase, RunRecord, Sample, SampleCallback
from ._sources import GaugeSource, JsonCountSource, ProcessSource, SubscriberSource
from ._stats import Histogram

__all__ = ["run_loadtest"]

# One timeline row (and one progress line) per second.
SAMPLE_INTERVAL: Final = 1.0
# How often /stats is read during the run (for the chart) and after it (for the
# time to clean: its resolution).
STATS_INTERVAL: Final = 1.0
CLEAN_POLL_INTERVAL: Final = 0.02
# A subscriber whose connects keep failing waits 0.25, 0.5, 1, 2, 4, then 5 s between
# tries (with jitter), so a dead server is not hammered by 10,000 loops.
_BACKOFF_FIRST: Final = 0.25
_BACKOFF_MAX: Final = 5.0


class _OpenSet:
    """The subscribers with an open connection, with O(1) add, remove and random pick."""

    __slots__ = ("_items", "_positions")

    def __init__(self) -> None:
        self._items: list[int] = []
        self._positions: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item: int) -> bool:
        return item in self._positions

    def add(self, item: int) -> None:
        if item not in self._positions:
            self._positions[item] = len(self._items)
            self._items.append(item)

    def discard(self, item: int) -> None:
        position = self._positions.pop(item, None)
        if position is None:
            return
        last = self._items.pop()
        if last != item:
            self._items[position] = last
            self._positions[last] = position

    def pick(self, rng: random.Random) -> int | None:
        return rng.choice(self._items) if self._items else None


class _Unmade(Container[int]):
    """Seqs excused from the loss count: failed publishes that no subscriber received.

    A view, so a failed publish's event that arrives late (the server made it after
    the load tester gave up) counts from then on, in the drain's check as in the report.
    """

    __slots__ = ("_failed", "_made")

    def __init__(self, failed: Container[int], made: Container[int]) -> None:
        self._failed = failed
        self._made = made

    def __contains__(self, seq: object) -> bool:
        return seq in self._failed and seq not in self._made


@dataclass(slots=True)
class _Slot:
    """The churn's handle on a subscriber: cancel ``scope`` to drop it by ``drop``."""

    scope: trio.CancelScope | None = None
    drop: DropMethod | None = None


class _Run:
    def __init__(self, options: LoadTestOptions, on_sample: SampleCallback | None) -> None:
        self.o = options
        self.target = parse_url(options.url)
        self.publish_target = parse_url(options.publish_url or options.url)
        self.on_sample = on_sample
        n = options.connections
        self.ledgers = [Ledger() for _ in range(n)]
        self.slots = [_Slot() for _ in range(n)]
        self.caught_up = bytearray(n)
        self.caught_up_count = 0
        self.all_caught_up = trio.Event()
        self.draining_last: int | None = None
        self.connecting = trio.CapacityLimiter(options.max_connecting)
        self.first_attempts = 0
        self.ramp_done = trio.Event()
        self.open = _OpenSet()
        self.rng = random.Random()  # noqa: S311 - picks connections to drop, not secrets
        self.phase = Phase.RAMP
        # --no-publish: the highest sequence number any subscriber has seen.
        self.high_seq = 0
        self.no_failures: frozenset[int] = frozenset()
        # Subscribers that received each seq (not counting duplicates): a failed
        # publish's seq found here was made by the server all the same.
        self.received_by: Counter[int] = Counter()
        self.unmade: Container[int] = self.no_failures
        self.server_subscribers: int | None = None
        self.window_latency = Histogram()
        self.window_delivered = 0
        self.window_errors = 0
        self.window_drops = 0
        self.record = RunRecord(
            options=options,
            started_at=time.time(),
            ledgers=self.ledgers,
            latency=Histogram(),
            connect_time=Histogram(),
            publish_latency=Histogram(),
            errors=Counter(),
            error_examples={},
            drops=Counter(),
            samples=[],
        )
        self.start = 0.0
        self.address: Address
        self.publisher: Publisher | None = None
        self.source: SubscriberSource

    def last_seq(self) -> int:
        """The last event every subscriber connected now must get (0: none yet)."""
        if self.publisher is not None:
            return self.publisher.assigned
        return self.high_seq

    @property
    def failed(self) -> Container[int]:
        """Seqs never published, as far as anyone saw (see :class:`_Unmade`): never missing."""
        return self.unmade

    # -- accounting -----------------------------------------------------------------

    def error(self, kind: ErrorKind, message: str) -> None:
        self.record.errors[kind] += 1
        self.record.error_examples.setdefault(kind, message)
        self.window_errors += 1

    def on_event(self, ledger: Ledger, event: MessageEvent) -> None:
        record = self.record
        if event.type == "reset":
            record.resets += 1
            return
        if self.publisher is None:
            self.on_server_event(ledger, event)
            return
        try:
            payload = json.loads(event.data)
            seq, sent_ns = payload["seq"], payload["t"]
        except (ValueError, TypeError, KeyError):
            record.foreign += 1
            return
        if (
            type(seq) is not int
            or type(sent_ns) is not int
            or not 1 <= seq <= self.publisher.assigned
        ):
            record.foreign += 1
            return
        self.window_delivered += 1
        delivered = ledger.delivered
        is_live = ledger.receive(seq)
        if ledger.delivered != delivered:
            self.received_by[seq] += 1
        if is_live:
            self.record_latency((time.monotonic_ns() - sent_ns) / 1e9)

    def on_server_event(self, ledger: Ledger, event: MessageEvent) -> None:
        """An event the server made (``--no-publish``): its id is its sequence number."""
        seq = parse_seq(event.last_event_id)
        if seq is None:
            self.record.foreign += 1
            return
        if not ledger.is_started:
            # Everything after the first event a subscriber gets must arrive.
            ledger.start_stream(seq - 1, is_resume=False)
        self.high_seq = max(self.high_seq, seq)
        self.window_delivered += 1
        if ledger.receive(seq) and self.o.timestamp_path is not None:
            sent = parse_timestamp(event.data, self.o.timestamp_path)
            if sent is not None:
                self.record_latency(time.time() - sent)

    def record_latency(self, latency: float) -> None:
        self.record.latency.record(latency)
        self.window_latency.record(latency)

    def check_caught_up(self, index: int) -> None:
        last = self.draining_last
        if last is None or self.caught_up[index] or index not in self.open:
            return
        if self.ledgers[index].has_caught_up(last, self.failed):
            self.caught_up[index] = 1
            self.caught_up_count += 1
            if self.caught_up_count == len(self.ledgers):
                self.all_caught_up.set()

    # -- subscribers ----------------------------------------------------------------

    async def subscriber(self, index: int, streams: trio.Nursery) -> None:
        ledger = self.ledgers[index]
        last_event_id = ""
        failures = 0
        has_connected = False
        # When the last stream was lost: the reconnect time runs from there.
        lost_at: float | None = None
        while True:
            conn = await self.connect(last_event_id)
            if not has_connected:
                self.first_attempt_done()
            if conn is None:
                failures += 1
                await trio.sleep(self.backoff(failures))
                continue
            self.record.connects += 1
            if lost_at is not None:
                self.record.reconnect_time.record(trio.current_time() - lost_at)
            if has_connected:
                self.record.reconnects += 1
            has_connected = True
            opened_at = trio.current_time()
            try:
                drop = await self.read(index, conn, ledger, last_event_id)
            except BaseException:
                conn.close_fin()
                raise
            lost_at = trio.current_time()
            last_event_id = conn.decoder.last_event_id
            if drop is None:  # the stream failed; the error is counted
                conn.close_fin()
                # A stream that ran a while before failing is retried at once.
                failures = 1 if trio.current_time() - opened_at > _BACKOFF_MAX else failures + 1
                await trio.sleep(self.backoff(failures) if failures > 1 else 0)
                continue
            failures = 0
            if drop is DropMethod.FIN:
                conn.close_fin()
            elif drop is DropMethod.RST:
                conn.close_rst()
            else:
                streams.start_soon(self.hold_stalled, conn.detach_socket())

    async def connect(self, last_event_id: str) -> StreamConnection | None:
        """Open a stream, or count the error and return None.

        At most ``max_connecting`` attempts are in flight: beyond what the server
        accepts, more would only overflow its accept queue (dropped SYNs, then resets),
        and the connect time would measure the flood instead of the server.
        """
        async with self.connecting:
            started = trio.current_time()
            try:
                with trio.fail_after(self.o.connect_timeout):
                    conn = await StreamConnection.open(
                        self.address, self.target, last_event_id=last_event_id
                    )
            except StreamFailureError as exc:
                self.error(exc.kind, str(exc))
                return None
            except trio.TooSlowError:
                self.error(
                    ErrorKind.TIMEOUT, f"no response head within {self.o.connect_timeout:g} s"
                )
                return None
        self.record.connect_time.record(trio.current_time() - started)
        return conn

    def first_attempt_done(self) -> None:
        self.first_attempts += 1
        if self.first_attempts == self.o.connections:
            self.ramp_done.set()

    def backoff(self, failures: int) -> float:
        delay = min(_BACKOFF_FIRST * 2.0 ** (failures - 1), _BACKOFF_MAX)
        return delay * self.rng.uniform(0.5, 1.0)

    async def read(
        self, index: int, conn: StreamConnection, ledger: Ledger, last_event_id: str
    ) -> DropMethod | None:
        """Read until the churn drops this connection (return how) or it fails (None)."""
        slot = self.slots[index]
        has_started = False
        with trio.CancelScope() as scope:
            slot.scope, slot.drop = scope, None
            self.open.add(index)
            self.record.peak_connections = max(self.record.peak_connections, len(self.open))
            try:
                while True:
                    try:
                        events = await conn.receive()
                    except StreamFailureError as exc:
                        self.error(exc.kind, str(exc))
                        return None
                    if not has_started and conn.has_body:
                        has_started = True
                        if self.publisher is not None or ledger.is_started:
                            # Without a publisher, a first stream starts at its
                            # first event instead (see on_server_event).
                            ledger.start_stream(
                                self.last_seq(),
                                is_resume=bool(last_event_id),
                                last_event_id=last_event_id,
                            )
                    for event in events:
                        self.on_event(ledger, event)
                    if self.draining_last is not None:
                        # Events, or a fresh start (a new floor), may complete it.
                        self.check_caught_up(index)
            finally:
                self.open.discard(index)
                slot.scope = None
        return slot.drop

    async def hold_stalled(self, sock: trio.socket.SocketType) -> None:
        """Keep a stalled socket open, unread, for ``stall_for`` seconds (or to the close)."""
        try:
            await trio.sleep(self.o.stall_for)
        finally:
            # With unread data queued on it, Linux sends RST here rather than FIN.
            sock.close()

    async def ramp(self, streams: trio.Nursery) -> None:
        for index in range(self.o.connections):
            await trio.sleep_until(self.start + index / self.o.ramp)
            streams.start_soon(self.subscriber, index, streams)

    async def churn(self) -> None:
        if self.o.churn <= 0:
            return
        methods = itertools.cycle(self.o.drop)
        ticks = 0
        churn_start = trio.current_time()
        while True:
            ticks += 1
            await trio.sleep_until(churn_start + ticks / self.o.churn)
            index = self.open.pick(self.rng)
            if index is None:
                continue
            slot = self.slots[index]
            assert slot.scope is not None
            slot.drop = next(methods)
            slot.scope.cancel()
            # Out of the pool at once, so that it is not picked twice.
            self.open.discard(index)
            self.record.drops[slot.drop] += 1
            self.window_drops += 1

    # -- monitoring -----------------------------------------------------------------

    async def sample_every_second(self) -> None:
        tick = self.start
        while True:
            tick += SAMPLE_INTERVAL
            await trio.sleep_until(tick)
            self.take_sample(SAMPLE_INTERVAL)

    def take_sample(self, window: float) -> None:
        latency, self.window_latency = self.window_latency, Histogram()
        sample = Sample(
            t=round(trio.current_time() - self.start, 3),
            phase=self.phase,
            connections=len(self.open),
            server_subscribers=self.server_subscribers,
            delivered=self.window_delivered,
            events_per_s=self.window_delivered / window if window > 0 else 0.0,
            latency_p50=latency.percentile(50) if latency.count else None,
            latency_p99=latency.percentile(99) if latency.count else None,
            latency_max=latency.max if latency.count else None,
            errors=self.window_errors,
            drops=self.window_drops,
        )
        self.window_delivered = self.window_errors = self.window_drops = 0
        self.record.samples.append(sample)
        if self.on_sample is not None:
            self.on_sample(sample, self.record)

    def make_source(self, *, stats: Address, metrics: Address) -> SubscriberSource:
        o = self.o
        if o.server_pid is not None:
            return ProcessSource(o.server_pid, self.target.port)
        if o.metrics_gauge is not None:
            return GaugeSource(metrics, o.metrics_target(), o.metrics_gauge)
        return JsonCountSource(stats, o.stats_target(), o.stats_path)

    async def poll_stats(self) -> None:
        # A source of its own: the clean check reads the main one meanwhile.
        source = self.make_source(stats=self.stats_address, metrics=self.metrics_address)
        try:
            while True:
                try:
                    self.server_subscribers = await source.read()
                except LoadTestError as exc:
                    # Unknown, not the last value: a server too busy to answer is a
                    # finding, and the chart shows it as a gap.
                    self.server_subscribers = None
                    self.record.stats_failures += 1
                    self.record.stats_error = str(exc)
                self.sample_server_rss()
                await trio.sleep(STATS_INTERVAL)
        finally:
            source.close()

    def sample_server_rss(self) -> None:
        if isinstance(self.source, ProcessSource):
            rss = self.source.rss_kib()
            if rss is not None:
                peak = self.record.server_rss_kib_peak
                self.record.server_rss_kib_peak = rss if peak is None else max(peak, rss)

    async def fetch_subscribers(self) -> int:
        try:
            return await self.source.read()
        except LoadTestError as exc:
            self.record.stats_error = str(exc)
            raise

    # -- the run --------------------------------------------------------------------

    async def run(self) -> RunRecord:
        o, record = self.o, self.record
        try:
            self.address = await resolve(self.target)
            publish_address = await resolve(self.publish_target)
            self.stats_address = await resolve(o.stats_target())
            self.metrics_address = await resolve(o.metrics_target())
        except OSError as exc:
            raise LoadTestError(f"cannot resolve a host: {exc}") from None
        self.source = self.make_source(stats=self.stats_address, metrics=self.metrics_address)
        record.source_kind, record.source = self.source.kind, self.source.description
        try:
            record.baseline_subscribers = await self.fetch_subscribers()
            self.server_subscribers = record.baseline_subscribers
            if isinstance(self.source, ProcessSource):
                record.server_rss_kib_before = self.source.rss_kib()
                self.sample_server_rss()
            if o.is_publishing:
                self.publisher = Publisher(
                    publish_address,
                    self.publish_target,
                    rate=o.publish_rate,
                    payload=o.payload,
                    on_error=self.error,
                    publish_format=o.publish_format,
                    template=o.body_template(),
                    payload_as=o.payload_as,
                    headers=o.publish_headers,
                    timeout=o.publish_timeout,
                )
                self.unmade = _Unmade(self.publisher.failed, self.received_by)
            self.start = record.clock_start = trio.current_time()
            async with trio.open_nursery() as monitor:
                monitor.start_soon(self.sample_every_second)
                monitor.start_soon(self.poll_stats)
                await self.load_and_drain()
                await self.check_clean()
                monitor.cancel_scope.cancel()
            last_t = record.samples[-1].t if record.samples else 0.0
            self.take_sample(trio.current_time() - self.start - last_t)
        finally:
            self.source.close()
        if isinstance(self.source, ProcessSource):
            record.server_rss_kib_after = self.source.rss_kib()
        if self.publisher is not None:
            record.published = self.publisher.assigned
            record.published_ok = self.publisher.acked
            record.failed_seqs = self.publisher.failed
            record.made_failed_seqs = {s for s in self.publisher.failed if s in self.received_by}
            record.publishes = self.publisher.records
            record.received_by = self.received_by
            record.publish_latency = self.publisher.latency
        record.max_rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return record

    async def load_and_drain(self) -> None:
        o, record = self.o, self.record
        async with trio.open_nursery() as streams:
            async with trio.open_nursery() as load:
                load.start_soon(self.ramp, streams)
                # The ramp ends when every subscriber has tried once, however long
                # the server takes to accept them all. Publishing starts then, so
                # that latency is measured under the steady load, not a connect storm.
                await self.ramp_done.wait()
                record.ramp_seconds = trio.current_time() - self.start
                self.phase = Phase.STEADY
                if self.publisher is not None:
                    load.start_soon(self.publisher.run)
                steady_start = trio.current_time()
                with trio.move_on_after(o.duration):
                    await self.churn()
                    await trio.sleep_forever()
                record.steady_seconds = trio.current_time() - steady_start
                self.phase = Phase.DRAIN
                if self.publisher is not None:
                    self.publisher.stop()
            # Every publish is answered (or failed): the last seq is final. Without a
            # publisher, the highest id seen so far is what everyone must reach.
            drain_start = trio.current_time()
            self.draining_last = self.last_seq()
            if self.publisher is None:
                record.last_seq = self.draining_last
            for index in range(o.connections):
                self.check_caught_up(index)
            with trio.move_on_after(o.drain_timeout):
                await self.all_caught_up.wait()
            record.is_drained = self.all_caught_up.is_set()
            record.drain_seconds = trio.current_time() - drain_start
            try:
                record.subscribers_at_close = await self.fetch_subscribers()
            except LoadTestError:
                record.stats_failures += 1
            self.phase = Phase.CLEAN
            streams.cancel_scope.cancel()

    async def check_clean(self) -> None:
        record = self.record
        closed_at = trio.current_time()
        with trio.move_on_after(self.o.clean_timeout):
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


async def run_loadtest(
    options: LoadTestOptions, *, on_sample: SampleCallback | None = None
) -> RunRecord:
    """Run one load test (see the module docs for its phases).

    Raises this process's soft open-file limit to its hard limit first.

    Args:
        options: What to run.
        on_sample: Called with each one-second sample as it is taken (live progress).

    Returns:
        The measurements; :func:`trio_sse.loadtest.build_report` summarises them.

    Raises:
        LoadTestError: The run cannot start: too few file descriptors, a host that
            does not resolve, or a verdict source that does not answer with a count.
    """
    # Checked before anything is allocated per connection.
    needed = options.file_descriptors_needed()
    limit = raise_open_file_limit()
    if limit.soft < needed:
        raise LoadTestError(
            f"{options.connections} connections need about {needed} file descriptors, but "
            f"this process may open {limit.soft} (hard limit {limit.hard}). Raise the hard "
            "limit (as root: `ulimit -Hn 65536` in the shell that starts it, LimitNOFILE= in "
            "a systemd unit, or nofile in /etc/security/limits.conf), or lower --connections."
        )
    return await _Run(options, on_sample).run()
