"""`trio-sse loadtest` against a local `trio-sse serve`, with the server's memory and CPU.

Starts `trio-sse serve --port 0` (its log in a temporary file), runs
`trio-sse loadtest` against it with the options given (defaults below: 10,000
connections with churn), samples the server's RSS and CPU time from /proc while it
runs, then stops the server and prints both. The server is pinned to CPU 0 and the
load tester to CPU 1 (`taskset`, when both are there). Linux only (/proc).

    PYTHONPATH=. python benchmarks/loadtest_serve.py [loadtest options...]

The exit status is the load test's.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import trio

from tests.test_cli import SERVE, listening_process

DEFAULT_OPTIONS = [
    *("--connections", "10000", "--ramp", "2000", "--duration", "30"),
    *("--publish-rate", "1", "--churn", "100", "--drop", "mix"),
]
# The server gets one core and the load tester the other, as in `nox -s bench`.
SERVER_CPU, CLIENT_CPU = 0, 1
_CLOCK_TICKS = 100  # USER_HZ on Linux


def _sample(pid: int) -> tuple[int, float]:
    """The process's RSS (KiB) and CPU time (s) so far."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
    # Fields 14 and 15 of /proc/PID/stat (after the command name in parentheses).
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return rss, (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def _pinned(command: list[str], cpu: int) -> list[str]:
    if shutil.which("taskset") is None or not {SERVER_CPU, CLIENT_CPU} <= os.sched_getaffinity(0):
        return command
    return ["taskset", "-c", str(cpu), *command]


async def main(options: list[str]) -> int:
    serve = _pinned([*SERVE, "--port", "0"], SERVER_CPU)
    async with listening_process(serve) as (server, (host, port)):
        idle_rss, _ = _sample(server.pid)
        peak_rss = idle_rss
        command = [sys.executable, "-m", "trio_sse.cli", "loadtest"]
        command = _pinned([*command, f"http://{host}:{port}/events/load", *options], CLIENT_CPU)
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                nonlocal peak_rss
                while True:
                    peak_rss = max(peak_rss, _sample(server.pid)[0])
                    await trio.sleep(0.5)

            nursery.start_soon(watch)
            result = await trio.run_process(command, check=False)
            nursery.cancel_scope.cancel()
        _, cpu = _sample(server.pid)
    print(
        f"server (trio-sse serve): RSS {idle_rss / 1024:.0f} MiB idle, "
        f"{peak_rss / 1024:.0f} MiB peak; CPU {cpu:.1f} s over the run"
    )
    return result.returncode


if __name__ == "__main__":
    sys.exit(trio.run(main, sys.argv[1:] or DEFAULT_OPTIONS))
