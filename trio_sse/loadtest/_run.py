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
5. **clean**: poll the server's ``/stats`` until ``subscribers`` is back to its value
   before the run; if it is not within ``clean_timeout``, the server is leaking.
"""

from __future__ import annotations

import itertools
import json
import random
import resource
import time
from collections import Counter
from dataclasses import dataclass
from typing import Final

import trio

from .._errors import LoadTestError
from .._file_limit import raise_open_file_limit
from ..protocol import MessageEvent
from ._connection import Address, DropMethod, StreamConnection, StreamFailureError, resolve
from ._http import parse_url
from ._ledger import Ledger
from ._options import LoadTestOptions
from ._publisher import Publisher
from ._record import RunRecord, Sample, SampleCallback
from ._requests import Requester
from ._stats import Histogram

__all__ = ["run_loadtest"]

# One timeline row (and one progress line) per second.
SAMPLE_INTERVAL: Final = 1.0
# How often /stats is read during the run (for the chart) and after it (for the
# time to clean: its resolution).
STATS_INTERVAL: Final = 1.0
CLEAN_POLL_INTERVAL: Final = 0.02
STATS_TIMEOUT: Final = 5.0
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
        self.stats_target = options.stats_target()
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
        self.phase = "ramp"
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
        self.publisher: Publisher

    # -- accounting -----------------------------------------------------------------

    def error(self, kind: str, message: str) -> None:
        self.record.errors[kind] += 1
        self.record.error_examples.setdefault(kind, message)
        self.window_errors += 1

    def on_event(self, ledger: Ledger, event: MessageEvent) -> None:
        record = self.record
        if event.type == "reset":
            record.resets += 1
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
        if ledger.receive(seq, self.publisher.failed):
            latency = (time.monotonic_ns() - sent_ns) / 1e9
            record.latency.record(latency)
            self.window_latency.record(latency)

    def check_caught_up(self, index: int) -> None:
        last = self.draining_last
        if last is None or self.caught_up[index] or index not in self.open:
            return
        if self.ledgers[index].has_caught_up(last, self.publisher.failed):
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
        while True:
            conn = await self.connect(last_event_id)
            if not has_connected:
                self.first_attempt_done()
            if conn is None:
                failures += 1
                await trio.sleep(self.backoff(failures))
                continue
            self.record.connects += 1
            if has_connected:
                self.record.reconnects += 1
            has_connected = True
            opened_at = trio.current_time()
            try:
                drop = await self.read(index, conn, ledger, is_resume=bool(last_event_id))
            except BaseException:
                conn.close_fin()
                raise
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
                self.error("timeout", f"no response head within {self.o.connect_timeout:g} s")
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
        self, index: int, conn: StreamConnection, ledger: Ledger, *, is_resume: bool
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
                        ledger.start_stream(self.publisher.assigned, is_resume=is_resume)
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
            self.record.drops[slot.drop.value] += 1
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

    async def poll_stats(self, address: Address) -> None:
        requester = Requester(address)
        try:
            while True:
                try:
                    self.server_subscribers = await self.fetch_subscribers(requester)
                except LoadTestError:
                    # Unknown, not the last value: a server too busy to answer is a
                    # finding, and the chart shows it as a gap.
                    self.server_subscribers = None
                    self.record.stats_failures += 1
                await trio.sleep(STATS_INTERVAL)
        finally:
            requester.close()

    async def fetch_subscribers(self, requester: Requester) -> int:
        target = self.stats_target
        url = f"http://{target.authority}{target.path}"
        try:
            with trio.fail_after(STATS_TIMEOUT):
                head, body = await requester.request(
                    "GET", target, headers=[("Accept", "application/json")]
                )
        except StreamFailureError as exc:
            raise LoadTestError(f"GET {url} failed: {exc}") from None
        except trio.TooSlowError:
            raise LoadTestError(f"GET {url}: no answer within {STATS_TIMEOUT:g} s") from None
        if head.status != 200:
            raise LoadTestError(f"GET {url} answered {head.status}")
        try:
            value = json.loads(body)["subscribers"]
        except (ValueError, TypeError, KeyError):
            value = None
        if type(value) is not int or value < 0:
            raise LoadTestError(f'GET {url} is not JSON with a "subscribers" count: {body[:80]!r}')
        return value

    # -- the run --------------------------------------------------------------------

    async def run(self) -> RunRecord:
        o, record = self.o, self.record
        try:
            self.address = await resolve(self.target)
            publish_address = await resolve(self.publish_target)
            stats_address = await resolve(self.stats_target)
        except OSError as exc:
            raise LoadTestError(f"cannot resolve a host: {exc}") from None
        stats = Requester(stats_address)
        try:
            record.baseline_subscribers = await self.fetch_subscribers(stats)
            self.server_subscribers = record.baseline_subscribers
            self.publisher = Publisher(
                publish_address,
                self.publish_target,
                rate=o.publish_rate,
                payload=o.payload,
                on_error=self.error,
            )
            self.start = trio.current_time()
            async with trio.open_nursery() as monitor:
                monitor.start_soon(self.sample_every_second)
                monitor.start_soon(self.poll_stats, stats_address)
                await self.load_and_drain(stats)
                await self.check_clean(stats)
                monitor.cancel_scope.cancel()
            last_t = record.samples[-1].t if record.samples else 0.0
            self.take_sample(trio.current_time() - self.start - last_t)
        finally:
            stats.close()
        record.published = self.publisher.assigned
        record.published_ok = self.publisher.acked
        record.failed_seqs = self.publisher.failed
        record.publish_latency = self.publisher.latency
        record.max_rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return record

    async def load_and_drain(self, stats: Requester) -> None:
        o, record = self.o, self.record
        async with trio.open_nursery() as streams:
            async with trio.open_nursery() as load:
                load.start_soon(self.ramp, streams)
                # The ramp ends when every subscriber has tried once, however long
                # the server takes to accept them all. Publishing starts then, so
                # that latency is measured under the steady load, not a connect storm.
                await self.ramp_done.wait()
                record.ramp_seconds = trio.current_time() - self.start
                self.phase = "steady"
                load.start_soon(self.publisher.run)
                steady_start = trio.current_time()
                with trio.move_on_after(o.duration):
                    await self.churn()
                    await trio.sleep_forever()
                record.steady_seconds = trio.current_time() - steady_start
                self.phase = "drain"
                self.publisher.stop()
            # Every publish is answered (or failed): the last seq is final.
            drain_start = trio.current_time()
            self.draining_last = self.publisher.assigned
            for index in range(o.connections):
                self.check_caught_up(index)
            with trio.move_on_after(o.drain_timeout):
                await self.all_caught_up.wait()
            record.is_drained = self.all_caught_up.is_set()
            record.drain_seconds = trio.current_time() - drain_start
            try:
                record.subscribers_at_close = await self.fetch_subscribers(stats)
            except LoadTestError:
                record.stats_failures += 1
            self.phase = "clean"
            streams.cancel_scope.cancel()

    async def check_clean(self, stats: Requester) -> None:
        record = self.record
        closed_at = trio.current_time()
        with trio.move_on_after(self.o.clean_timeout):
            while True:
                try:
                    count = await self.fetch_subscribers(stats)
                except LoadTestError:
                    record.stats_failures += 1
                else:
                    record.subscribers_after = self.server_subscribers = count
                    if count <= record.baseline_subscribers:
                        record.clean_seconds = trio.current_time() - closed_at
                        return
                # Another process: its /stats is the only view of its subscribers.
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
            does not resolve, or a ``/stats`` that does not answer with a count.
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
