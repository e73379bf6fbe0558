"""``--processes N``: the parent that publishes and judges, and N workers that hold the streams.

One core runs one Trio loop; past a few thousand busy streams the load tester, not
the server, sets the pace. So the streams are split over N worker processes
(:mod:`._worker`), each with its own ``trio.run``, while this parent keeps everything
that must be single to be judged right:

* **one publisher**, here: seqs are numbered in one place, and each goes on the
  shared :class:`~._board.SeqBoard` before its POST is sent, so every worker's ledger
  takes its floor from the same number at the moment its stream's first bytes
  arrive, exactly as in one process;
* **one verdict source**, read here before, during and after the run;
* **one clock of phases**: the workers ramp (each its own share, at the run-wide
  times), then wait for ``steady``, ``drain`` (with the final seq and the failed
  publishes) and ``close`` from here.

At the end each worker writes its record; :func:`._merge.merge_records` puts their
ledgers back in run-wide order and adds up their counts, so the report is judged
over every ledger at once, as one process would judge it. The per-process figures
(connections, CPU, memory) are kept in the report's ``processes``.

The workers run in this task's nursery: a worker that dies (or exits non-zero) fails
the run with a :class:`~trio_sse.LoadTestError` naming it, and cancellation (Ctrl-C)
terminates every worker.
"""

from __future__ import annotations

import base64
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any, Final

import trio

from ..errors import LoadTestError
from ._board import SeqBoard
from ._merge import merge_records
from ._monitor import Monitor
from ._options import LoadTestOptions
from ._publisher import Publisher
from ._record import Phase, RunRecord, SampleCallback
from ._setup import finish_record, make_publisher, new_record, resolve_all
from ._stats import Histogram
from ._tally import Tally, Window
from ._worker import Lines, WorkerPlan, decode_message, encode_message

__all__ = ["run_parent"]

WORKER_COMMAND: Final = [
    sys.executable,
    "-c",
    "import sys; from trio_sse.loadtest._worker import main; sys.exit(main())",
]

# How long a worker may take, beyond the run's own timeouts, to answer a command
# (start up, report its drain, close its sockets, write its record).
WORKER_GRACE: Final = 30.0


class _Worker:
    """The parent's handle on one worker process."""

    def __init__(self, index: int, window: Window) -> None:
        self.index = index
        self._window = window
        self.connections = 0
        self.ramp_done = trio.Event()
        self.drained = trio.Event()
        self.is_drained = False
        self.closed = trio.Event()
        self.done = trio.Event()
        self._process: trio.Process | None = None

    async def start(self, nursery: trio.Nursery, plan: WorkerPlan) -> None:
        """Spawn the worker, hand it its plan, and read its messages in ``nursery``."""
        process: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                WORKER_COMMAND,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                check=False,
            )
        )
        self._process = process
        await self.send_line(base64.b64encode(pickle.dumps(plan)) + b"\n")
        nursery.start_soon(self._read)

    async def send_line(self, line: bytes) -> None:
        assert self._process is not None
        assert self._process.stdin is not None
        try:
            await self._process.stdin.send_all(line)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise LoadTestError(await self._died()) from None

    async def send(self, kind: str, **fields: Any) -> None:
        await self.send_line(encode_message(kind, **fields))

    async def _died(self) -> str:
        assert self._process is not None
        with trio.move_on_after(WORKER_GRACE):
            await self._process.wait()
        status = self._process.returncode
        return (
            f"load-test worker {self.index} (pid {self._process.pid}) exited with status "
            f"{status} before the end of the run; its error, if any, is above"
        )

    async def _read(self) -> None:
        assert self._process is not None
        assert self._process.stdout is not None
        lines = Lines(self._process.stdout)
        while (line := await lines.next()) is not None:
            self._on_message(decode_message(line))
        if not self.done.is_set():
            raise LoadTestError(await self._died())

    def _on_message(self, message: dict[str, Any]) -> None:
        kind = message["kind"]
        if kind == "sample":
            self.connections = int(message["connections"])
            self._window.add(
                Window(
                    Histogram.from_data(message["latency"]),
                    int(message["delivered"]),
                    int(message["errors"]),
                    int(message["drops"]),
                )
            )
        elif kind == "ramp_done":
            self.ramp_done.set()
        elif kind == "drained":
            self.is_drained = bool(message["is_drained"])
            self.drained.set()
        elif kind == "closed":
            self.closed.set()
        elif kind == "done":
            self.done.set()
        else:
            raise LoadTestError(f"load-test worker {self.index} sent {kind!r}")


async def _all(events: list[trio.Event], *, within: float, what: str) -> None:
    try:
        with trio.fail_after(within):
            for event in events:
                await event.wait()
    except trio.TooSlowError:
        raise LoadTestError(f"a load-test worker did not {what} within {within:g} s") from None


def _first_error(group: BaseExceptionGroup[BaseException]) -> LoadTestError | None:
    """The run's reason to fail, from a nursery's group: the first LoadTestError in it."""
    for exc in group.exceptions:
        if isinstance(exc, LoadTestError):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = _first_error(exc)
            if found is not None:
                return found
    return None


async def run_parent(options: LoadTestOptions, on_sample: SampleCallback | None) -> RunRecord:
    """Run ``options`` over ``options.processes`` workers (see the module docs).

    Raises:
        LoadTestError: As :func:`~trio_sse.loadtest.run_loadtest`, or a worker died.
    """
    try:
        return await _run_parent(options, on_sample)
    except BaseExceptionGroup as group:
        # One worker's death cancels the rest: that death is the reason, not the
        # cancellations it caused.
        error = _first_error(group)
        if error is None:
            raise
        raise error from None


async def _run_parent(options: LoadTestOptions, on_sample: SampleCallback | None) -> RunRecord:
    addresses = await resolve_all(options)
    record = new_record(options)
    directory = Path(tempfile.mkdtemp(prefix="trio-sse-loadtest-"))
    board = SeqBoard(options.processes, path=directory / "board")
    try:
        tally = Tally(options, record, board)
        workers = [_Worker(i, tally.window) for i in range(options.processes)]
        monitor = Monitor(
            options,
            record,
            target=addresses.target,
            stats=addresses.stats,
            metrics=addresses.metrics,
            window=tally.window,
            connections=lambda: sum(w.connections for w in workers),
            on_sample=on_sample,
        )
        publisher: Publisher | None = None
        try:
            await monitor.read_baseline()
            if options.is_publishing:
                publisher = make_publisher(options, addresses, tally, board)
            monitor.start = record.clock_start = trio.current_time()
            start_monotonic = time.monotonic()
            async with trio.open_nursery() as nursery:
                for worker in workers:
                    plan = WorkerPlan(
                        options=options,
                        index=worker.index,
                        address=addresses.stream,
                        target=addresses.target,
                        board_path=directory / "board",
                        record_path=directory / f"worker-{worker.index}.pickle",
                        run_id=record.run_id,
                        start_monotonic=start_monotonic,
                    )
                    await worker.start(nursery, plan)
                async with trio.open_nursery() as monitoring:
                    monitoring.start_soon(monitor.run)
                    await _phases(
                        options,
                        record=record,
                        workers=workers,
                        monitor=monitor,
                        publisher=publisher,
                        tally=tally,
                    )
                    await monitor.check_clean()
                    monitoring.cancel_scope.cancel()
                monitor.finish()
                for worker in workers:
                    await worker.send("finish")
                await _all([w.done for w in workers], within=WORKER_GRACE, what="finish")
        finally:
            monitor.close()
        finish_record(record, publisher, tally)
        parts = [
            pickle.loads((directory / f"worker-{w.index}.pickle").read_bytes())  # noqa: S301
            for w in workers
        ]
        return merge_records(record, parts)
    finally:
        board.close()
        shutil.rmtree(directory, ignore_errors=True)


async def _phases(
    options: LoadTestOptions,
    *,
    record: RunRecord,
    workers: list[_Worker],
    monitor: Monitor,
    publisher: Publisher | None,
    tally: Tally,
) -> None:
    # The ramp ends when every worker's share has tried once (however long the
    # server takes): no timeout beyond the workers' own connect timeouts.
    for worker in workers:
        await worker.ramp_done.wait()
    record.ramp_seconds = trio.current_time() - monitor.start
    monitor.enter(Phase.STEADY)
    for worker in workers:
        await worker.send("steady")
    async with trio.open_nursery() as load:
        if publisher is not None:
            load.start_soon(publisher.run)
        steady_start = trio.current_time()
        await trio.sleep(options.duration)
        record.steady_seconds = trio.current_time() - steady_start
        monitor.enter(Phase.DRAIN)
        if publisher is not None:
            publisher.stop()
    # Every publish is answered (or failed): the last seq is final.
    drain_start = trio.current_time()
    last = tally.last_seq()
    if publisher is None:
        record.last_seq = last
    failed = sorted(publisher.failed) if publisher is not None else []
    for worker in workers:
        await worker.send("drain", last=last, failed=failed)
    await _all(
        [w.drained for w in workers],
        within=options.drain_timeout + WORKER_GRACE,
        what="report its drain",
    )
    record.is_drained = all(w.is_drained for w in workers)
    record.drain_seconds = trio.current_time() - drain_start
    await monitor.read_at_close()
    monitor.enter(Phase.CLEAN)
    for worker in workers:
        await worker.send("close")
    await _all([w.closed for w in workers], within=WORKER_GRACE, what="close its streams")
