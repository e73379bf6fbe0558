"""`nox -s bench`: trio-sse and sse-starlette side by side, the server pinned to one core.

    PYTHONPATH=. python benchmarks/compare.py [--quick] [--scenarios fanout,latency,idle,churn]
                                              [--servers trio-sse,sse-starlette]
                                              [--write-interval S] [--write docs/benchmarks.md]

Each scenario runs against `trio-sse serve` and, in the same run, against the peer
fixture (benchmarks/peer_starlette.py: sse-starlette on uvicorn), each a fresh
process pinned to CPU 0 with `taskset`, while this client runs on CPU 1. The
scenarios are in benchmarks/scenarios.py. Prints a side-by-side table with ratios
and the project's targets; with --write, also writes it as Markdown.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import shutil
import statistics
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import trio

from benchmarks import scenarios
from benchmarks.scenarios import Target
from tests.test_cli import listening_process

SCENARIOS = ("fanout", "latency", "idle", "churn")
TRIO_SSE = "trio-sse"
PEER = "sse-starlette"
SERVER_CPU = 0
CLIENT_CPU = 1


def server_command(name: str, args: argparse.Namespace) -> list[str]:
    if name == TRIO_SSE:
        command = [sys.executable, "-m", "trio_sse.cli", "serve", "--port", "0"]
        if args.write_interval is not None:
            command += ["--write-interval", str(args.write_interval)]
    else:
        command = [sys.executable, str(Path(__file__).with_name("peer_starlette.py"))]
    if args.pinned:
        command = ["taskset", "-c", str(SERVER_CPU), *command]
    return command


@asynccontextmanager
async def running(name: str, args: argparse.Namespace) -> AsyncIterator[Target]:
    async with listening_process(server_command(name, args)) as (process, (host, port)):
        yield Target(host, port, process.pid)


@dataclass(frozen=True)
class Row:
    """One line of the table: a measure, each server's figure, and the target."""

    measure: str
    unit: str
    ours: float | None
    peer: float | None
    target: str = ""
    # Given (ours, peer), whether the target is met; None when there is no target.
    check: Callable[[float, float], bool] | None = None
    digits: int = 1

    def cells(self) -> list[str]:
        def show(value: float | None) -> str:
            return "n/a" if value is None else f"{value:,.{self.digits}f}"

        ratio = "n/a"
        if self.ours is not None and self.peer:
            ratio = f"{self.ours / self.peer:.2f}x"
        verdict = ""
        if self.check is not None and self.ours is not None and self.peer is not None:
            verdict = "met" if self.check(self.ours, self.peer) else "MISSED"
        target = f"{self.target} ({verdict})" if verdict else self.target
        return [
            f"{self.measure} ({self.unit})" if self.unit else self.measure,
            show(self.ours),
            show(self.peer),
            ratio,
            target,
        ]


HEADER = ["measure", TRIO_SSE, PEER, "ratio", "target"]


def text_table(rows: list[Row]) -> str:
    lines = [HEADER, *(row.cells() for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        for line in lines
    )


def markdown_table(rows: list[Row]) -> str:
    lines = [HEADER, ["---"] * len(HEADER), *(row.cells() for row in rows)]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def median(values: list[float]) -> float:
    return statistics.median(values)


async def run_scenario(
    scenario: str, name: str, args: argparse.Namespace
) -> dict[str, float | None]:
    """Run one scenario against a fresh server; return its figures by key."""
    async with running(name, args) as target:
        if scenario == "fanout":
            runs = await scenarios.fanout(
                target,
                subscriber_count=args.subscribers,
                events=args.events,
                payload=64,
                runs=args.runs,
            )
            for run in runs:
                print(
                    f"  {name} fan-out run: {run.deliveries_per_second:,.0f} deliveries/s, "
                    f"{run.cpu_per_delivery_us:.1f} µs server CPU per delivery, "
                    f"client busy {run.client_busy:.0%}"
                )
            return {
                "fanout_rate": median([r.deliveries_per_second for r in runs]),
                "fanout_cpu": median([r.cpu_per_delivery_us for r in runs]),
                "fanout_client_busy": max(r.client_busy for r in runs),
            }
        if scenario == "latency":
            result = await scenarios.latency(
                target,
                subscriber_count=args.subscribers,
                rate=2.0,
                events=args.latency_events,
                payload=64,
            )
            print(
                f"  {name} latency: p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, "
                f"max {result.max_ms:.1f} ms ({result.samples} deliveries)"
            )
            return {"latency_p50": result.p50_ms, "latency_p99": result.p99_ms}
        if scenario == "idle":
            idle = await scenarios.idle(target, connections=args.connections)
            print(
                f"  {name} idle: {args.connections} streams open after {idle.open_seconds:.2f} s; "
                f"RSS {idle.rss_before / 2**20:.1f} -> {idle.rss_after / 2**20:.1f} MiB"
            )
            return {
                "idle_kib": idle.bytes_per_connection / 1024,
                "idle_open": idle.open_seconds,
            }
        churn = await scenarios.churn(
            target, rate=200, seconds=args.churn_seconds, warm_up=args.churn_warm_up
        )
        print(
            f"  {name} churn: {churn.dropped} dropped; {churn.subscribers_left} subscribers left "
            f"after {churn.seconds_to_zero * 1e3:.0f} ms; RSS growth "
            f"{churn.rss_growth / 2**20:.2f} MiB (warm-up: {churn.warm_up_growth / 2**20:.2f} MiB)"
        )
        return {
            "churn_left": churn.subscribers_left,
            "churn_zero_ms": churn.seconds_to_zero * 1e3,
            "churn_rss_mib": churn.rss_growth / 2**20,
            "churn_warm_up_mib": churn.warm_up_growth / 2**20,
        }


def build_rows(figures: dict[str, dict[str, float | None]], args: argparse.Namespace) -> list[Row]:
    ours, peer = figures.get(TRIO_SSE, {}), figures.get(PEER, {})
    rows: list[Row] = []
    if "fanout" in args.scenarios:
        rows += [
            Row(
                f"fan-out: {args.subscribers} subscribers x {args.events} events of 64 B, "
                "1 sequential publisher",
                "deliveries/s",
                ours.get("fanout_rate"),
                peer.get("fanout_rate"),
                ">= 7x",
                lambda a, b: a >= 7 * b,
                digits=0,
            ),
            Row(
                "fan-out: server CPU per delivery",
                "µs",
                ours.get("fanout_cpu"),
                peer.get("fanout_cpu"),
            ),
        ]
    if "latency" in args.scenarios:
        rows += [
            Row(
                f"latency: {args.subscribers} subscribers at 2 events/s, p50",
                "ms",
                ours.get("latency_p50"),
                peer.get("latency_p50"),
            ),
            Row(
                "latency: p99",
                "ms",
                ours.get("latency_p99"),
                peer.get("latency_p99"),
                "<= 1x",
                lambda a, b: a <= b,
            ),
        ]
    if "idle" in args.scenarios:
        rows += [
            Row(
                f"idle: memory per connection ({args.connections} open)",
                "KiB",
                ours.get("idle_kib"),
                peer.get("idle_kib"),
                "<= 0.6x",
                lambda a, b: a <= 0.6 * b,
            ),
            Row(
                f"idle: time to open {args.connections} connections",
                "s",
                ours.get("idle_open"),
                peer.get("idle_open"),
                "<= 1x",
                lambda a, b: a <= b,
                digits=2,
            ),
        ]
    if "churn" in args.scenarios:
        rows += [
            Row(
                f"churn: 200 drops/s for {args.churn_seconds:g} s (half RST): subscribers left",
                "",
                ours.get("churn_left"),
                peer.get("churn_left"),
                "0",
                lambda a, b: a == 0,
                digits=0,
            ),
            Row(
                "churn: time from the last drop to zero subscribers",
                "ms",
                ours.get("churn_zero_ms"),
                peer.get("churn_zero_ms"),
                digits=0,
            ),
            Row(
                f"churn: RSS growth over the first {args.churn_warm_up:g} s (warm-up)",
                "MiB",
                ours.get("churn_warm_up_mib"),
                peer.get("churn_warm_up_mib"),
                digits=2,
            ),
            Row(
                f"churn: RSS growth over the {args.churn_seconds:g} s after the warm-up",
                "MiB",
                ours.get("churn_rss_mib"),
                peer.get("churn_rss_mib"),
                "< 1 MiB",
                lambda a, b: a < 1.0,
                digits=2,
            ),
        ]
    return rows


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    system = f"Linux {platform.release()}, Python {platform.python_version()}"
    return f"{cpu}, {os.cpu_count()} CPUs, {system}"


def versions() -> str:
    names = ["trio", "hypercorn", "quart", "quart-trio", "sse-starlette", "starlette", "uvicorn"]
    names += [n for n in ("uvloop", "httptools") if _installed(n)]
    return ", ".join(f"{name} {version(name)}" for name in names)


def _installed(name: str) -> bool:
    try:
        version(name)
    except Exception:  # noqa: BLE001 - any metadata failure means "not there"
        return False
    return True


def markdown(rows: list[Row], args: argparse.Namespace, notes: list[str]) -> str:
    command = f"python benchmarks/compare.py {args.argv}".rstrip()
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    pinning = (
        f"each server pinned to CPU {SERVER_CPU} (`taskset`), the load client on CPU {CLIENT_CPU}"
        if args.pinned
        else "NOT pinned (taskset or a second CPU is missing): figures are not per-core"
    )
    parts = [
        "# Benchmarks: trio-sse and sse-starlette side by side",
        "",
        "<!-- Generated by benchmarks/compare.py; do not edit by hand: rerun it. -->",
        "",
        f"Generated by `{command}` on {now}; `nox -s bench` runs it with "
        "`--write docs/benchmarks.md`.",
        "",
        f"- Machine: {machine()}; {pinning}. Load average when the run began: "
        f"{args.load_average}; on a shared machine the absolute figures are noisy, and "
        "the ratios within one run are what to compare.",
        f"- Versions: {versions()}.",
        "- trio-sse: `trio-sse serve` with its defaults"
        + (f" and `--write-interval {args.write_interval}`" if args.write_interval else "")
        + ". sse-starlette: `benchmarks/peer_starlette.py` (EventSourceResponse, one "
        "asyncio.Queue per subscriber, default ping) on uvicorn with its defaults.",
        f"- Fan-out figures are the median of {args.runs} run(s); the others are one run each.",
        "",
        markdown_table(rows),
        "",
        "How each figure is taken (benchmarks/scenarios.py):",
        "",
        "- **fan-out**: deliveries per second from the first POST to the last event "
        "received by the last subscriber; server CPU time from `/proc/PID/stat`.",
        "- **latency**: from just before each POST to a subscriber reading the event, "
        "over every delivery; the publish request is included.",
        "- **idle**: RSS (`/proc/PID/status`) after all connections are open, minus RSS "
        "before, per connection; the open time runs from the first connect until `/stats` "
        "counts every subscriber, with up to 256 connects in flight.",
        "- **churn**: each connection is held 1 s, then closed by RST or FIN in turn. A fresh "
        "server's RSS rises during its first seconds of churn, then levels off; so RSS growth "
        f"is reported for a {args.churn_warm_up:g} s warm-up churn and, against the target, "
        f"for the {args.churn_seconds:g} s of churn after it, at the same rate.",
    ]
    if notes:
        parts += ["", "Notes from this run:", "", *(f"- {note}" for note in notes)]
    return "\n".join(parts) + "\n"


def raise_fd_limit() -> None:
    # 5,000 connections need 5,000 descriptors here and in the server, which inherits this.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def main(args: argparse.Namespace) -> None:
    raise_fd_limit()
    figures: dict[str, dict[str, float | None]] = {name: {} for name in args.servers}
    for index, scenario in enumerate(args.scenarios):
        print(f"{scenario}:")
        # Alternate which server goes first, so drift on a shared machine hits both.
        for name in args.servers if index % 2 == 0 else reversed(args.servers):
            figures[name].update(await run_scenario(scenario, name, args))
    rows = build_rows(figures, args)
    notes = []
    for name in args.servers:
        busy = figures[name].get("fanout_client_busy")
        if busy is not None and busy > 0.9:
            notes.append(
                f"the load client was {busy:.0%} busy during {name}'s fan-out, so that "
                "figure may be limited by the client rather than the server"
            )
    print()
    print(text_table(rows))
    for note in notes:
        print(f"note: {note}")
    if args.write is not None:
        args.write.write_text(markdown(rows, args, notes))
        print(f"wrote {args.write}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one fan-out run, shorter scenarios")
    parser.add_argument(
        "--scenarios",
        type=lambda s: [name for name in s.split(",") if name],
        default=list(SCENARIOS),
        help="comma-separated, from: " + ",".join(SCENARIOS),
    )
    parser.add_argument(
        "--servers",
        type=lambda s: [name for name in s.split(",") if name],
        default=[TRIO_SSE, PEER],
        help=f"comma-separated, from: {TRIO_SSE},{PEER}",
    )
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--write-interval", type=float, default=None, help="for trio-sse serve")
    parser.add_argument("--write", type=Path, default=None, help="write the Markdown report here")
    args = parser.parse_args(argv)
    for scenario in args.scenarios:
        if scenario not in SCENARIOS:
            parser.error(f"unknown scenario {scenario!r}; choose from {', '.join(SCENARIOS)}")
    for name in args.servers:
        if name not in (TRIO_SSE, PEER):
            parser.error(f"unknown server {name!r}; choose from {TRIO_SSE}, {PEER}")
    args.runs = 1 if args.quick else 3
    args.latency_events = 6 if args.quick else 20
    args.churn_seconds = 5.0 if args.quick else 10.0
    args.churn_warm_up = 5.0 if args.quick else 20.0
    args.argv = " ".join(sys.argv[1:] if argv is None else argv)
    with open("/proc/loadavg") as loadavg:
        args.load_average = " ".join(loadavg.read().split()[:3])
    cpus = os.sched_getaffinity(0)
    args.pinned = shutil.which("taskset") is not None and {SERVER_CPU, CLIENT_CPU} <= cpus
    if args.pinned:
        os.sched_setaffinity(0, {CLIENT_CPU})
    return args


if __name__ == "__main__":
    trio.run(main, parse_args())
