"""`trio-sse serve --workers N` under supervision: real processes, real signals.

A worker that dies is replaced while the others serve; a worker that cannot start
makes the parent give up with a reason; every log line names its process.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import IO

import pytest
import trio

from tests.redis_server import RedisServer
from tests.test_cli import SERVE, listening_process
from tests.test_redis_serve import WORKERS_START, children_of, is_running
from tests.wire import TIMEOUT
from trio_sse.server._workers import _DeathWindow, _describe

PROBE_INTERVAL = 0.05
PROBE_TIMEOUT = 1.0
# A replacement is started after the first back-off (0.5 s) and must import the
# whole stack, on a busy 2-core machine.
REPLACEMENT_WITHIN = 20.0
# Five deaths, with back-offs of 0.5 + 1 + 2 s between them, plus interpreter starts.
GIVES_UP_WITHIN = 60.0
# "2024-01-01 12:00:00,000 [1234] INFO name: message"
LOG_LINE = re.compile(rb"^\S+ \S+ \[(\d+)\] [A-Z]+ ")


def _read(log: IO[bytes]) -> bytes:
    log.seek(0)
    return log.read()


class Served:
    """A running `serve --workers` parent and its log."""

    def __init__(self, process: trio.Process, log: IO[bytes], address: tuple[str, int]) -> None:
        self.process = process
        self.log = log
        self.address = address

    def text(self) -> bytes:
        return _read(self.log)

    async def workers(self, count: int) -> list[int]:
        with trio.fail_after(TIMEOUT):
            while len(pids := children_of(self.process.pid)) != count:  # noqa: ASYNC110
                await trio.sleep(0.02)
        return pids

    async def wait_for_log(self, pattern: bytes, *, timeout: float) -> re.Match[bytes]:
        with trio.fail_after(timeout):
            # A file gives no readiness events; re-read it on a short beat.
            while (found := re.search(pattern, self.text(), re.MULTILINE)) is None:  # noqa: ASYNC110
                await trio.sleep(0.02)
        return found


@asynccontextmanager
async def serving_workers(command: list[str]) -> AsyncIterator[Served]:
    with tempfile.TemporaryFile() as log:
        async with listening_process(
            command, startup_timeout=WORKERS_START, stop_timeout=20, log=log
        ) as (process, address):
            yield Served(process, log, address)


async def _livez(address: tuple[str, int]) -> bool:
    """One probe on a fresh connection: True for a 200."""
    try:
        with trio.fail_after(PROBE_TIMEOUT):
            stream = await trio.open_tcp_stream(*address)
            async with stream:
                await stream.send_all(
                    b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                )
                received = b""
                while b"\r\n" not in received:
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        return False
                    received += chunk
                return received.startswith(b"HTTP/1.1 200")
    except (OSError, trio.BrokenResourceError, trio.TooSlowError):
        return False


@pytest.mark.slow
async def test_a_killed_worker_is_replaced_while_livez_keeps_answering(
    redis_server: RedisServer,
) -> None:
    command = [*SERVE, "--port", "0", "--broker", redis_server.url, "--workers", "2"]
    async with serving_workers(command) as served:
        killed, survivor = await served.workers(2)
        await served.wait_for_log(rb"worker %d serving" % survivor, timeout=WORKERS_START)
        await served.wait_for_log(rb"worker %d serving" % killed, timeout=WORKERS_START)
        outcomes: list[bool] = []
        async with trio.open_nursery() as nursery:

            async def probe() -> None:
                while True:
                    outcomes.append(await _livez(served.address))
                    await trio.sleep(PROBE_INTERVAL)

            nursery.start_soon(probe)
            os.kill(killed, signal.SIGKILL)
            # The parent logs each worker it started once that worker serves.
            found = await served.wait_for_log(
                rb"worker (?!%d |%d )(\d+) serving" % (killed, survivor),
                timeout=REPLACEMENT_WITHIN,
            )
            replacement = int(found[1])
            assert replacement in children_of(served.process.pid)
            # With the survivor stopped, only the replacement can take a connection.
            os.kill(survivor, signal.SIGSTOP)
            try:
                assert await _livez(served.address)
            finally:
                os.kill(survivor, signal.SIGCONT)
            nursery.cancel_scope.cancel()
        assert served.process.poll() is None
        log = served.text()
        assert rb"worker %d died (killed by SIGKILL)" % killed in log
        answered = sum(outcomes) / len(outcomes)
        assert answered >= 0.9, f"{sum(outcomes)} of {len(outcomes)} probes answered"
        served.process.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            await served.process.wait()
    assert served.process.returncode == 0
    assert not [pid for pid in (survivor, replacement) if is_running(pid)]


@pytest.mark.slow
async def test_workers_that_die_at_start_make_the_parent_give_up(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    # Python imports sitecustomize at every start: the parent goes on, a worker
    # (the only one given --listen-fd) exits at once, before it can serve.
    (tmp_path / "sitecustomize.py").write_text(
        "import os\n"
        "if b'--listen-fd' in open('/proc/self/cmdline', 'rb').read().split(b'\\0'):\n"
        "    os._exit(3)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    command = [*SERVE, "--port", "0", "--broker", redis_server.url, "--workers", "2"]
    result = await trio.to_thread.run_sync(
        partial(
            subprocess.run,
            command,
            capture_output=True,
            text=True,
            env=env,
            timeout=GIVES_UP_WITHIN,
            check=False,
        )
    )
    assert result.returncode == 1
    stderr = result.stderr
    assert "Traceback" not in stderr
    assert stderr.count("died (exit status 3)") == 5
    assert re.search(r"crash loop: 5 worker deaths within \d+ s; the last: worker \d+", stderr)
    assert "Running on" not in stderr


@pytest.mark.slow
async def test_every_log_line_names_its_process_and_running_on_is_said_once(
    redis_server: RedisServer,
) -> None:
    command = [*SERVE, "--port", "0", "--broker", redis_server.url, "--workers", "2"]
    async with serving_workers(command) as served:
        workers = await served.workers(2)
        for pid in workers:
            await served.wait_for_log(rb"worker %d serving" % pid, timeout=WORKERS_START)
        assert await _livez(served.address)
        served.process.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            await served.process.wait()
        log = served.text()
    assert served.process.returncode == 0
    lines = log.splitlines()
    assert lines
    pids = set()
    for line in lines:
        match = LOG_LINE.match(line)
        assert match, f"a log line without a pid: {line!r}"
        pids.add(int(match[1]))
    # The parent logs, and so does each worker (at least its shutdown).
    assert pids == {served.process.pid, *workers}
    assert log.count(b"Running on") == 1


def test_deaths_are_counted_within_a_sliding_window() -> None:
    window = _DeathWindow(60.0)
    assert [window.record(t) for t in (0.0, 10.0, 20.0, 30.0)] == [1, 2, 3, 4]
    # The death at 0 s has left the window by 60 s; the others have not.
    assert window.record(60.0) == 4
    assert window.record(65.0) == 5
    assert window.record(200.0) == 1


def test_an_exit_is_described_by_its_status_or_signal() -> None:
    assert _describe(1) == "exit status 1"
    assert _describe(0) == "exit status 0"
    assert _describe(-signal.SIGKILL) == "killed by SIGKILL"
    assert _describe(-200) == "killed by signal 200"
