"""Several ``trio-sse serve`` worker processes on one listening socket.

The parent binds the socket and passes it to every worker as an inherited file
descriptor; the kernel hands each accepted connection to one of them. Workers share
nothing else, which is why they need a backplane (Redis) to share topics.

Lifecycle:

* The parent turns its first SIGINT or SIGTERM into one SIGTERM per worker, and
  each worker shuts down as a single ``trio-sse serve`` does (streams end cleanly).
* Workers run in a session of their own, so a terminal's Ctrl-C reaches only the
  parent and each worker gets exactly one signal.
* If a worker exits on its own, the parent stops the others and exits 1.
* If the parent dies (even by SIGKILL), the write end of a pipe that only it holds
  closes; each worker reads EOF on its end and shuts down. No worker is orphaned.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Final

import trio

__all__ = ["run_workers", "until_signal_or_orphaned"]

logger = logging.getLogger("trio_sse.workers")
# A worker logs its own shutdown as any single server does.
_server_logger = logging.getLogger("trio_sse.server")

# After this, a worker that has not exited is killed: its own shutdown takes about
# a second, but a client that stopped reading can hold it up to TCP_USER_TIMEOUT.
_KILL_AFTER_MIN: Final = 5.0


async def _then(wait: Callable[[], Awaitable[object]], done: Callable[[], None]) -> None:
    await wait()
    done()


async def _first_signal(signals: AsyncIterator[int], log: logging.Logger) -> None:
    async for signum in signals:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        return


async def run_workers(
    command: Sequence[str], *, count: int, listen_fd: int, stop_timeout: float
) -> int:
    """Run ``count`` copies of ``command`` until a signal, or until one exits.

    Args:
        command: The worker's command line; ``--lifeline-fd FD`` is appended.
        count: Number of workers.
        listen_fd: The shared listening socket, passed to every worker.
        stop_timeout: Seconds the workers get to exit after SIGTERM before SIGKILL.

    Returns:
        0 if the workers were stopped by a signal and all exited 0, else 1.
    """
    lifeline_read, lifeline_write = os.pipe()
    full_command = [*command, "--lifeline-fd", str(lifeline_read)]
    processes: list[trio.Process] = []
    signalled = False
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        try:
            for _ in range(count):
                # One at a time into the list, so that a failed start still stops
                # the workers already running.
                process = await trio.lowlevel.open_process(
                    full_command, pass_fds=(listen_fd, lifeline_read), start_new_session=True
                )
                processes.append(process)
            os.close(lifeline_read)
            lifeline_read = -1
            async with trio.open_nursery() as nursery:
                stop = nursery.cancel_scope.cancel
                for process in processes:
                    nursery.start_soon(_then, process.wait, stop)

                async def on_signal() -> None:
                    nonlocal signalled
                    await _first_signal(signals, logger)
                    signalled = True
                    stop()

                nursery.start_soon(on_signal)
        finally:
            if lifeline_read >= 0:
                os.close(lifeline_read)
            await _stop_all(processes, max(stop_timeout, _KILL_AFTER_MIN))
            os.close(lifeline_write)
    # A worker still starting up (before its own handler is installed) dies of the
    # SIGTERM we sent it: that is a clean stop too.
    clean = (0, -signal.SIGTERM) if signalled else (0,)
    failed = [p for p in processes if p.returncode not in clean]
    for process in failed:
        logger.error("worker %d exited with status %s", process.pid, process.returncode)
    return 0 if signalled and not failed else 1


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
