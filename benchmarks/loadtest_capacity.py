"""How many connections this machine's load tester holds and churns, and what each costs it.

Starts one `trio-sse serve --port 0`, then runs `trio-sse loadtest` against it at
each connection count given (smallest first), with `--processes` workers and
several loopback source addresses, churning and publishing throughout. After each
step it prints the verdict, the errors, the connect time, and the load tester's own
cost from its report: CPU seconds (all its processes) and peak RSS (summed over its
processes), each also per connection. It stops at the first step that is not clean
or has connection errors: that count is past this machine's ceiling, and the
errors say what stopped it (file limit, ports, the server or the tester's CPU).

    PYTHONPATH=. python benchmarks/loadtest_capacity.py [--steps 2000,5000,10000]
        [--processes 2] [--source-addresses 127.0.0.2-5] [--duration 10] [--churn 50]

The machine's limits are printed first: the open-file limits, the ephemeral port
range. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
from pathlib import Path
from typing import Any

import trio

from tests.test_cli import SERVE, listening_process


def _limits() -> str:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    ports = int(high) - int(low) + 1
    return (
        f"open files: soft {soft}, hard {hard}; ephemeral ports {low}-{high} ({ports} per address)"
    )


async def _step(
    url: str, connections: int, args: argparse.Namespace, report: Path
) -> tuple[int, dict[str, Any]]:
    command = [
        *(sys.executable, "-m", "trio_sse.cli", "loadtest", url),
        *("--connections", str(connections), "--processes", str(args.processes)),
        *("--source-address", args.source_addresses),
        *("--ramp", str(args.ramp), "--duration", str(args.duration)),
        *("--publish-rate", "1", "--churn", str(args.churn), "--drop", "mix"),
        *("--drain-timeout", "30", "--clean-timeout", "60", "--quiet"),
        *("--report", str(report)),
    ]
    print("$", " ".join(command[1:]), flush=True)
    result = await trio.run_process(command, check=False, capture_stdout=True)
    path = trio.Path(report)
    if not await path.exists():
        return result.returncode, {}
    loaded: dict[str, Any] = json.loads(await path.read_text())
    return result.returncode, loaded


def _row(connections: int, code: int, report: dict[str, Any]) -> str:
    if not report:
        return f"{connections:>7,}  exit {code}: no report"
    server = report["server"]
    errors = report["errors"]
    conns = report["connections"]
    cpu = float(report["loadtest_cpu_seconds"])
    rss = int(report["loadtest_max_rss_kib"])
    kinds = ", ".join(f"{k} {v}" for k, v in errors["by_kind"].items()) or "none"
    return (
        f"{connections:>7,}  exit {code}  {server['verdict']:<8} peak {conns['peak']:>7,}  "
        f"connect p99 {conns['connect_time']['p99'] * 1e3:7.1f} ms  errors {kinds}  "
        f"tester CPU {cpu:6.1f} s ({cpu / connections * 1e3:.2f} ms/conn)  "
        f"RSS {rss / 1024:6.0f} MiB ({rss / connections:.1f} KiB/conn)"
    )


async def main(args: argparse.Namespace) -> int:
    print(_limits())
    steps = [int(step) for step in args.steps.split(",")]
    async with listening_process([*SERVE, "--port", "0"]) as (_, (host, port)):
        url = f"http://{host}:{port}/events/capacity"
        with tempfile.TemporaryDirectory() as directory:
            for connections in steps:
                report_path = Path(directory) / f"{connections}.json"
                code, report = await _step(url, connections, args, report_path)
                print(_row(connections, code, report), flush=True)
                errors = report.get("errors", {}) if report else {}
                if code != 0 or errors.get("total"):
                    print(f"stopped: {connections:,} connections is past this machine's ceiling")
                    return 1
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="2000,5000,10000")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--source-addresses", default="127.0.0.2-5")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--ramp", type=float, default=1000.0)
    parser.add_argument("--churn", type=float, default=50.0)
    sys.exit(trio.run(main, parser.parse_args()))
