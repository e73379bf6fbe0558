"""Several ``trio-sse serve`` worker processes on one listening socket, supervised.

The parent binds the socket and passes it to every worker as an inherited file
descriptor; the kernel hands each accepted connection to one of them. Workers share
nothing else, which is why they need a backplane (Redis) to share topics.

Lifecycle:

* Each of the ``count`` worker slots is supervised: a worker that exits without
  being asked to (SIGKILL, the OOM killer, a crash, even status 0) is logged with
  its exit status or signal and restarted after a back-off of 0.5 s that doubles
  up to 10 s; a worker that lived 30 s resets its slot's back-off. The other
  workers keep serving meanwhile.
* A crash loop ends it: 5 worker deaths (counted across all slots) within 60 s
  make the parent log why, stop the remaining workers and exit 1.
* Each worker reports on a pipe of its own once it accepts connections; the parent
  then logs ``worker PID serving``, and logs ``Running on URL`` once, for the first.
* The parent turns its first SIGINT or SIGTERM into one SIGTERM per worker, and
  each worker shuts down as a single ``trio-sse serve`` does (streams end cleanly).
* Workers run in a session of their own, so a terminal's Ctrl-C reaches only the
  parent and each worker gets exactly one signal.
* If the parent dies (even by SIGKILL), the write end of a pipe that only it holds
  closes; each worker reads EOF on its end and shuts down. No worker is orphaned.
"""

from __future__ import annotations

import logging
import os
import signal
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Final

import trio

__all__ = [
    "CRASH_LOOP_DEATHS",
    "CRASH_LOOP_WINDOW",
    "RESTART_BACKOFF_FIRST",
    "RESTART_BACKOFF_MAX",
    "RESTART_BACKOFF_RESET_AFTER",
    "ReadyReport",
    "run_workers",
    "until_signal_or_orphaned",
]

logger = logging.getLogger("trio_sse.workers")
# A worker logs its own shutdown as any single server does.
_server_logger = logging.getLogger("trio_sse.server")

# After this, a worker that has not exited is killed: its own shutdown takes about
# a second, but a client that stopped reading can hold it up to TCP_USER_TIMEOUT.
_KILL_AFTER_MIN: Final = 5.0

RESTART_BACKOFF_FIRST: Final = 0.5
"""Seconds before a dead worker's first replacement starts."""
RESTART_BACKOFF_MAX: Final = 10.0
"""The back-off doubles per death of the same slot, up to this many seconds."""
RESTART_BACKOFF_RESET_AFTER: Final = 30.0
"""A worker that lived this many seconds resets its slot's back-off."""
CRASH_LOOP_DEATHS: Final = 5
"""This many worker deaths, across all slots, within ``CRASH_LOOP_WINDOW`` ..."""
CRASH_LOOP_WINDOW: Final = 60.0
"""... seconds make the parent give up and exit 1."""

# A worker's readiness report is its URL and a newline.
_READY_MAX_BYTES: Final = 4096


async def _first_signal(signals: AsyncIterator[int], log: logging.Logger) -> None:
    async for signum in signals:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        return


def _describe(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


class _DeathWindow:
    """Worker deaths within the last ``window`` seconds (bounded by the crash-loop rule)."""

    def __init__(self, window: float) -> None:
        self._window = window
        self._times: deque[float] = deque()

    def record(self, now: float) -> int:
        """Count a death at ``now``; return the deaths within the window up to it."""
        self._times.append(now)
        while self._times[0] <= now - self._window:
            self._times.popleft()
        return len(self._times)


class _Supervisor:
    """Starts workers, restarts the dead ones, and tells a crash loop."""

    def __init__(self, command: Sequence[str], *, listen_fd: int, lifeline_fd: int) -> None:
        self._command = [*command, "--lifeline-fd", str(lifeline_fd)]
        self._pass_fds = (listen_fd, lifeline_fd)
        # Workers started and not yet seen to exit: the ones to stop at the end.
        self.live: list[trio.Process] = []
        self._deaths = _DeathWindow(CRASH_LOOP_WINDOW)
        self._announced = False
        self.gave_up = False

    async def _start(self) -> tuple[trio.Process, int]:
        ready_read, ready_write = os.pipe()
        try:
            process = await trio.lowlevel.open_process(
                [*self._command, "--ready-fd", str(ready_write)],
                pass_fds=(*self._pass_fds, ready_write),
                start_new_session=True,
            )
        except BaseException:
            os.close(ready_read)
            raise
        finally:
            # The worker holds the only write end: its death is EOF on ready_read.
            os.close(ready_write)
        # No checkpoint since the start: a cancellation cannot lose the process.
        self.live.append(process)
        return process, ready_read

    async def _await_ready(self, ready_fd: int, pid: int) -> None:
        report = b""
        async with trio.lowlevel.FdStream(ready_fd) as stream:
            while len(report) < _READY_MAX_BYTES and (chunk := await stream.receive_some()):
                report += chunk
        url = report[:_READY_MAX_BYTES].decode("utf-8", "replace").strip()
        if not url:
            return  # it died before it could serve
        logger.info("worker %d serving", pid)
        if not self._announced:
            self._announced = True
            logger.info("Running on %s (CTRL + C to quit)", url)

    async def run_slot(self, give_up: Callable[[], None]) -> None:
        """Keep one worker running; call ``give_up`` on a crash loop."""
        backoff = RESTART_BACKOFF_FIRST
        while True:
            process, ready_fd = await self._start()
            started = trio.current_time()
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._await_ready, ready_fd, process.pid)
                    await process.wait()
                    nursery.cancel_scope.cancel()
            finally:
                # Even when shutdown cancels us just after its exit: a dead worker
                # is neither stopped nor reported as stopped uncleanly.
                if process.returncode is not None:
                    self.live.remove(process)
            now = trio.current_time()
            lived = now - started
            status = _describe(process.returncode)
            logger.error("worker %d died (%s) after %.1f s", process.pid, status, lived)
            deaths = self._deaths.record(now)
            if deaths >= CRASH_LOOP_DEATHS:
                logger.critical(
                    "crash loop: %d worker deaths within %.0f s; the last: worker %d (%s) "
                    "after %.1f s; giving up",
                    deaths,
                    CRASH_LOOP_WINDOW,
                    process.pid,
                    status,
                    lived,
                )
                self.gave_up = True
                give_up()
                return
            if lived >= RESTART_BACKOFF_RESET_AFTER:
                backoff = RESTART_BACKOFF_FIRST
            logger.warning(
                "starting a replacement in %.1f s (%d worker deaths in the last %.0f s)",
                backoff,
                deaths,
                CRASH_LOOP_WINDOW,
            )
            await trio.sleep(backoff)
            backoff = min(backoff * 2, RESTART_BACKOFF_MAX)


async def run_workers(
    command: Sequence[str], *, count: int, listen_fd: int, stop_timeout: float
) -> int:
    """Run and supervise ``count`` copies of ``command`` until a signal or a crash loop.

    Args:
        command: The worker's command line; ``--lifeline-fd FD --ready-fd FD`` is
            appended.
        count: Number of workers.
        listen_fd: The shared listening socket, passed to every worker.
        stop_timeout: Seconds the workers get to exit after SIGTERM before SIGKILL.

    Returns:
        0 if the workers were stopped by a signal and all exited cleanly; 1 after a
        crash loop, or if a worker did not stop cleanly.
    """
    lifeline_read, lifeline_write = os.pipe()
    supervisor = _Supervisor(command, listen_fd=listen_fd, lifeline_fd=lifeline_read)
    signalled = False
    try:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            try:
                async with trio.open_nursery() as nursery:
                    stop = nursery.cancel_scope.cancel
                    for _ in range(count):
                        nursery.start_soon(supervisor.run_slot, stop)

                    async def on_signal() -> None:
                        nonlocal signalled
                        await _first_signal(signals, logger)
                        signalled = True
                        stop()

                    nursery.start_soon(on_signal)
            finally:
                await _stop_all(supervisor.live, max(stop_timeout, _KILL_AFTER_MIN))
    finally:
        os.close(lifeline_read)
        os.close(lifeline_write)
    # Every worker still listed was stopped by us. One still starting up (before its
    # own handler is installed) dies of the SIGTERM we sent it: that is clean too.
    failed = [p for p in supervisor.live if p.returncode not in (0, -signal.SIGTERM)]
    for process in failed:
        logger.error("worker %d stopped uncleanly (%s)", process.pid, _describe(process.returncode))
    return 0 if signalled and not supervisor.gave_up and not failed else 1


async def _stop_all(processes: list[trio.Process], kill_after: float) -> None:
    for process in processes:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
    # Cleanup that must finish even when we are being cancelled; bounded, and the
    # kill below makes the final wait short.
    with trio.move_on_after(kill_after, shield=True):
        for process in processes:
            await process.wait()
    with trio.CancelScope(shield=True):
        for process in processes:
            if process.returncode is None:
                logger.error(
                    "worker %d did not stop in %.0f s; killing it", process.pid, kill_after
                )
                process.kill()
                await process.wait()


class ReadyReport:
    """A worker's side of the readiness pipe, as the ``task_status`` of ``serve``.

    When the server accepts connections, it tells the parent its URL and closes
    the pipe. A few bytes on a fresh pipe never block. If the parent is already
    gone, the lifeline stops this worker; there is nobody to tell then.
    """

    def __init__(self, ready_fd: int) -> None:
        self._fd = ready_fd

    def started(self, value: list[str] | None = None) -> None:
        """Report the first of the server's URLs, once."""
        url = value[0] if value else "?"
        try:
            with open(self._fd, "wb") as ready:
                ready.write(url.encode()[: _READY_MAX_BYTES - 1] + b"\n")
        except OSError:
            pass


async def until_signal_or_orphaned(lifeline_fd: int | None) -> None:
    """A worker's shutdown trigger: its first SIGINT/SIGTERM, or its parent's death.

    Args:
        lifeline_fd: The read end of the parent's lifeline pipe; EOF on it means the
            parent is gone. ``None`` waits for a signal only.
    """
    async with trio.open_nursery() as nursery:

        async def lifeline(fd: int) -> None:
            async with trio.lowlevel.FdStream(fd) as stream:
                while await stream.receive_some():
                    pass
            logger.warning("the parent process is gone; shutting down")
            nursery.cancel_scope.cancel()

        async def signals() -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
                await _first_signal(received, _server_logger)
            nursery.cancel_scope.cancel()

        nursery.start_soon(signals)
        if lifeline_fd is not None:
            nursery.start_soon(lifeline, lifeline_fd)
