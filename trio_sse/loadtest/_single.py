"""One load test in one process, from the first connect to the leak verdict.

The phases, and the task tree that runs them::

    run_single
    └── nursery "monitor": the sampler (one timeline row per second) and the poller
        └── nursery "streams": one task per subscriber, plus one per stalled socket held
            └── nursery "load": the publisher, the ramp, the churn

1. **ramp**: subscriber tasks start at ``ramp`` per second (:mod:`._subscribers`).
   The ramp ends when every subscriber has tried once.
2. **steady**: ``duration`` seconds of publishing (``publish_rate`` events/s), and
   of churn.
3. **drain**: publishing stops; wait (at most ``drain_timeout``) until every
   subscriber is connected and has every event it should have.
4. **close**: the streams nursery is cancelled: every socket closes (FIN).
5. **clean**: poll the verdict source until its count is back to its value before
   the run (:mod:`._monitor`).

With ``is_publishing`` False there is no publisher: the server emits events of its
own, and each subscriber's ledger numbers them by their ids (:mod:`._ids`).
"""

from __future__ import annotations

import trio

from ._board import SeqBoard
from ._monitor import Monitor
from ._options import LoadTestOptions
from ._publisher import Publisher
from ._record import Phase, RunRecord, SampleCallback
from ._setup import finish_record, make_publisher, new_record, resolve_all
from ._subscribers import Subscribers
from ._tally import Tally

__all__ = ["run_single"]


async def run_single(options: LoadTestOptions, on_sample: SampleCallback | None) -> RunRecord:
    """Run ``options`` in this process (see the module docs)."""
    addresses = await resolve_all(options)
    record = new_record(options)
    board = SeqBoard(1)
    tally = Tally(options, record, board)
    subscribers = Subscribers(
        options,
        tally,
        address=addresses.stream,
        target=addresses.target,
        numbers=range(options.connections),
        churn=options.churn,
        max_connecting=options.max_connecting,
    )
    monitor = Monitor(
        options,
        record,
        target=addresses.target,
        stats=addresses.stats,
        metrics=addresses.metrics,
        window=tally.window,
        connections=lambda: len(subscribers.open),
        on_sample=on_sample,
    )
    publisher: Publisher | None = None
    try:
        await monitor.read_baseline()
        if options.is_publishing:
            publisher = make_publisher(options, addresses, tally, board)
        monitor.start = record.clock_start = trio.current_time()
        async with trio.open_nursery() as monitoring:
            monitoring.start_soon(monitor.run)
            await _load_and_drain(
                options,
                record=record,
                subscribers=subscribers,
                monitor=monitor,
                publisher=publisher,
                tally=tally,
            )
            await monitor.check_clean()
            monitoring.cancel_scope.cancel()
        monitor.finish()
    finally:
        monitor.close()
    finish_record(record, publisher, tally)
    return record


async def _load_and_drain(
    options: LoadTestOptions,
    *,
    record: RunRecord,
    subscribers: Subscribers,
    monitor: Monitor,
    publisher: Publisher | None,
    tally: Tally,
) -> None:
    async with trio.open_nursery() as streams:
        async with trio.open_nursery() as load:
            load.start_soon(subscribers.ramp, streams, monitor.start)
            # The ramp ends when every subscriber has tried once, however long the
            # server takes to accept them all. Publishing starts then, so that latency
            # is measured under the steady load, not a connect storm.
            await subscribers.ramp_done.wait()
            record.ramp_seconds = trio.current_time() - monitor.start
            monitor.enter(Phase.STEADY)
            if publisher is not None:
                load.start_soon(publisher.run)
            steady_start = trio.current_time()
            with trio.move_on_after(options.duration):
                await subscribers.churn()
                await trio.sleep_forever()
            record.steady_seconds = trio.current_time() - steady_start
            monitor.enter(Phase.DRAIN)
            if publisher is not None:
                publisher.stop()
        # Every publish is answered (or failed): the last seq is final. Without a
        # publisher, the highest id seen so far is what everyone must reach.
        drain_start = trio.current_time()
        last = tally.last_seq()
        if publisher is None:
            record.last_seq = last
        subscribers.start_drain(last)
        with trio.move_on_after(options.drain_timeout):
            await subscribers.all_caught_up.wait()
        record.is_drained = subscribers.all_caught_up.is_set()
        record.drain_seconds = trio.current_time() - drain_start
        await monitor.read_at_close()
        monitor.enter(Phase.CLEAN)
        streams.cancel_scope.cancel()
