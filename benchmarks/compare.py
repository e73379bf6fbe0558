"""`nox -s bench`: trio-sse, sse-starlette and Go's net/http side by side, each on one core.

    PYTHONPATH=. python benchmarks/compare.py [--quick]
                                              [--scenarios fanout,fanout0,latency,idle,churn]
                                              [--servers trio-sse,sse-starlette,go]
                                              [--write-interval S] [--write docs/benchmarks.md]

Each scenario runs against `trio-sse serve` and, in the same run, against the peer
fixtures (benchmarks/peer_starlette.py: sse-starlette on uvicorn; benchmarks/peer_go:
the same contract on Go's standard library), each a fresh process pinned to CPU 0
with `taskset`, while this client runs on CPU 1. The scenarios are in
benchmarks/scenarios.py. Prints a side-by-side table with trio-sse's ratio to each
peer and the project's targets; with --write, also writes it as Markdown.
The Go peer is built once per run with `go build` (Debian: apt-get install golang-go).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import trio

from benchmarks import scenarios
from benchmarks.scenarios import Target
from tests.test_cli import listening_process

SCENARIOS = ("fanout", "fanout0", "latency", "idle", "churn")
# fanout0: the same fan-out with trio-sse's batching window off (--write-interval 0), so
# that every delivery is one write, as it is for the peers: the cost of a write.
TRIO_SSE = "trio-sse"
STARLETTE = "sse-starlette"
GO = "go"
# The names --servers takes, in the table's order, and each one's column heading.
LABELS = {TRIO_SSE: "trio-sse", STARLETTE: "sse-starlette", GO: "Go net/http"}
GO_PEER = Path(__file__).with_name("peer_go")
SERVER_CPU = 0
CLIENT_CPU = 1


def build_go_peer(directory: Path) -> tuple[Path, str]:
    """`go build` benchmarks/peer_go into ``directory``; return the binary and Go's version."""
    go = shutil.which("go")
    if go is None:
        sys.exit(
            "compare.py: the Go peer needs the Go toolchain (Debian: apt-get install golang-go);"
            f" or leave it out: --servers {TRIO_SSE},{STARLETTE}"
        )
    binary = directory / "peer_go"
    try:
        subprocess.run([go, "build", "-o", str(binary), "."], cwd=GO_PEER, check=True)  # noqa: S603
        # "go version go1.19.8 linux/amd64"
        about = subprocess.run(  # noqa: S603
            [go, "version"], check=True, capture_output=True, text=True
        ).stdout
    except subprocess.CalledProcessError as exc:
        sys.exit(f"compare.py: building the Go peer in {GO_PEER} failed: {exc}")
    return binary, about.split()[2]


def server_command(name: str, args: argparse.Namespace, scenario: str = "") -> list[str]:
    if name == TRIO_SSE:
        command = [sys.executable, "-m", "trio_sse.cli", "serve", "--port", "0"]
        write_interval = 0 if scenario == "fanout0" else args.write_interval
        if write_interval is not None:
            command += ["--write-interval", str(write_interval)]
    elif name == GO:
        command = [str(args.go_binary), "-port", "0"]
    else:
        command = [sys.executable, str(Path(__file__).with_name("peer_starlette.py"))]
    if args.pinned:
        command = ["taskset", "-c", str(SERVER_CPU), *command]
    return command


@asynccontextmanager
async def running(name: str, args: argparse.Namespace, scenario: str) -> AsyncIterator[Target]:
    command = server_command(name, args, scenario)
    async with listening_process(command) as (process, (host, port)):
        yield Target(host, port, process.pid)


@dataclass(frozen=True)
class Goal:
    """One of the project's targets for a measure, and whether a run meets it."""

    text: str
    # The servers whose figures the test takes, in order (trio-sse's first).
    needs: tuple[str, ...]
    met: Callable[..., bool]

    def cell(self, figures: Mapping[str, float | None]) -> str:
        values = [figures.get(name) for name in self.needs]
        if any(value is None for value in values):
            return self.text
        return f"{self.text} ({'met' if self.met(*values) else 'MISSED'})"


@dataclass(frozen=True)
class Row:
    """One line of the table: a measure, each server's figure, and the targets."""

    measure: str
    unit: str
    figures: Mapping[str, float | None]  # by server name
    goals: tuple[Goal, ...] = ()
    digits: int = 1

    def cells(self, servers: Sequence[str]) -> list[str]:
        def show(value: float | None) -> str:
            return "n/a" if value is None else f"{value:,.{self.digits}f}"

        def ratio(peer: str) -> str:
            ours, theirs = self.figures.get(TRIO_SSE), self.figures.get(peer)
            return "n/a" if ours is None or not theirs else f"{ours / theirs:.2f}x"

        return [
            f"{self.measure} ({self.unit})" if self.unit else self.measure,
            *(show(self.figures.get(name)) for name in servers),
            *(ratio(peer) for peer in ratio_peers(servers)),
            "; ".join(goal.cell(self.figures) for goal in self.goals),
        ]


def table_servers(args: argparse.Namespace) -> list[str]:
    """The servers run, in the table's order."""
    return [name for name in LABELS if name in args.servers]


def ratio_peers(servers: Sequence[str]) -> list[str]:
    """The servers that trio-sse's figures are divided by: one ratio column each."""
    return [name for name in servers if name != TRIO_SSE] if TRIO_SSE in servers else []


def header(servers: Sequence[str]) -> list[str]:
    return [
        "measure",
        *(LABELS[name] for name in servers),
        *(f"ratio vs {LABELS[peer]}" for peer in ratio_peers(servers)),
        "target",
    ]


def text_table(rows: list[Row], servers: Sequence[str]) -> str:
    lines = [header(servers), *(row.cells(servers) for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def markdown_table(rows: list[Row], servers: Sequence[str]) -> str:
    head = header(servers)
    lines = [head, ["---"] * len(head), *(row.cells(servers) for row in rows)]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def median(values: list[float]) -> float:
    return statistics.median(values)


async def run_scenario(
    scenario: str, name: str, args: argparse.Namespace
) -> dict[str, float | None]:
    """Run one scenario against a fresh server; return its figures by key."""
    async with running(name, args, scenario) as target:
        if scenario in ("fanout", "fanout0"):
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
            key = scenario
            return {
                f"{key}_rate": median([r.deliveries_per_second for r in runs]),
                f"{key}_cpu": median([r.cpu_per_delivery_us for r in runs]),
                f"{key}_client_busy": max(r.client_busy for r in runs),
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
    def row(measure: str, unit: str, key: str, *goals: Goal, digits: int = 1) -> Row:
        by_server = {name: server.get(key) for name, server in figures.items()}
        return Row(measure, unit, by_server, goals, digits)

    def against(peer: str, text: str, met: Callable[[float, float], bool]) -> Goal:
        return Goal(text, (TRIO_SSE, peer), met)

    def alone(text: str, met: Callable[[float], bool]) -> Goal:
        return Goal(text, (TRIO_SSE,), met)

    rows: list[Row] = []
    if "fanout" in args.scenarios:
        rows += [
            row(
                f"fan-out: {args.subscribers} subscribers x {args.events} events of 64 B, "
                "1 sequential publisher",
                "deliveries/s",
                "fanout_rate",
                against(STARLETTE, ">= 7x", lambda a, b: a >= 7 * b),
                against(GO, ">= Go", lambda a, b: a >= b),
                digits=0,
            ),
            row("fan-out: server CPU per delivery", "µs", "fanout_cpu"),
        ]
    if "fanout0" in args.scenarios:
        rows += [
            row(
                "fan-out, trio-sse's batching off: server CPU per delivery",
                "µs",
                "fanout0_cpu",
                against(STARLETTE, "<= 1x", lambda a, b: a <= b),
            ),
        ]
    if "latency" in args.scenarios:
        rows += [
            row(f"latency: {args.subscribers} subscribers at 2 events/s, p50", "ms", "latency_p50"),
            row(
                "latency: p99",
                "ms",
                "latency_p99",
                against(STARLETTE, "<= 1x", lambda a, b: a <= b),
            ),
        ]
    if "idle" in args.scenarios:
        rows += [
            row(
                f"idle: memory per connection ({args.connections} open)",
                "KiB",
                "idle_kib",
                alone("<= 28 KiB", lambda a: a <= 28),
            ),
            row(
                f"idle: time to open {args.connections} connections",
                "s",
                "idle_open",
                against(STARLETTE, "<= 1x", lambda a, b: a <= b),
                digits=2,
            ),
        ]
    if "churn" in args.scenarios:
        rows += [
            row(
                f"churn: 200 drops/s for {args.churn_seconds:g} s (half RST): subscribers left",
                "",
                "churn_left",
                alone("0", lambda a: a == 0),
                digits=0,
            ),
            row(
                "churn: time from the last drop to zero subscribers",
                "ms",
                "churn_zero_ms",
                digits=0,
            ),
            row(
                f"churn: RSS growth over the first {args.churn_warm_up:g} s (warm-up)",
                "MiB",
                "churn_warm_up_mib",
                digits=2,
            ),
            row(
                f"churn: RSS growth over the {args.churn_seconds:g} s after the warm-up",
                "MiB",
                "churn_rss_mib",
                alone("< 1 MiB", lambda a: a < 1.0),
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


def versions(args: argparse.Namespace) -> str:
    names = ["trio", "hypercorn", "quart", "quart-trio", "sse-starlette", "starlette", "uvicorn"]
    names += [n for n in ("uvloop", "httptools") if _installed(n)]
    found = [f"{name} {version(name)}" for name in names]
    if GO in args.servers:
        found.append(f"Go {args.go_version.removeprefix('go')} (`go version`)")
    return ", ".join(found)


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
    servers = table_servers(args)
    labels = [LABELS[name] for name in servers]
    compared = " and ".join([", ".join(labels[:-1]), labels[-1]] if len(labels) > 1 else labels)
    described = {
        TRIO_SSE: "trio-sse: `trio-sse serve` with its defaults"
        + (f" and `--write-interval {args.write_interval}`" if args.write_interval else "")
        + ".",
        STARLETTE: "sse-starlette: `benchmarks/peer_starlette.py` (EventSourceResponse, one "
        "asyncio.Queue per subscriber, default ping) on uvicorn with its defaults.",
        GO: "Go net/http: `benchmarks/peer_go` (standard library only, built with "
        f"{args.go_version}: one buffered channel of 256 events per "
        "subscriber, a subscriber whose channel is full is dropped, a flush per event; "
        "GOMAXPROCS follows the pinning, so 1).",
    }
    goals = "Relative targets compare trio-sse with sse-starlette"
    if GO in servers:
        goals += ", except `>= Go`, which compares it with Go net/http"
    parts = [
        f"# Benchmarks: {compared} side by side",
        "",
        "<!-- Generated by benchmarks/compare.py; do not edit by hand: rerun it. -->",
        "",
        f"Generated by `{command}` on {now}; `nox -s bench` runs it with "
        "`--write docs/benchmarks.md`.",
        "",
        f"- Machine: {machine()}; {pinning}. Load average when the run began: "
        f"{args.load_average}; on a shared machine the absolute figures are noisy, and "
        "the ratios within one run are what to compare.",
        f"- Versions: {versions(args)}.",
        "- " + " ".join(described[name] for name in servers),
        f"- Fan-out figures are the median of {args.runs} run(s); the others are one run each. "
        f"{goals}.",
        "",
        markdown_table(rows, servers),
        "",
        "How each figure is taken (benchmarks/scenarios.py):",
        "",
        "- **fan-out**: deliveries per second from the first POST to the last event "
        "received by the last subscriber; server CPU time from `/proc/PID/stat`.",
        "- **fan-out, batching off**: the same fan-out with `trio-sse serve --write-interval 0`, "
        "so that each delivery is one write, as it is for the peers (whose fan-out run gives "
        "their figure): the cost of a delivery.",
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
        servers = args.servers
        if scenario == "fanout0" and "fanout" in args.scenarios and TRIO_SSE in servers:
            # The peers never batch: their fan-out run already wrote once per delivery.
            servers = [TRIO_SSE]
            for peer in args.servers:
                if peer != TRIO_SSE:
                    figures[peer] |= {
                        key.replace("fanout_", "fanout0_"): value
                        for key, value in figures[peer].items()
                        if key.startswith("fanout_")
                    }
        # Alternate which server goes first, so drift on a shared machine hits both.
        for name in servers if index % 2 == 0 else reversed(servers):
            figures[name].update(await run_scenario(scenario, name, args))
    rows = build_rows(figures, args)
    notes = []
    for name in args.servers:
        for key, what in (("fanout", "fan-out"), ("fanout0", "fan-out with batching off")):
            busy = figures[name].get(f"{key}_client_busy")
            if busy is not None and busy > 0.9 and not (key == "fanout0" and name != TRIO_SSE):
                notes.append(
                    f"the load client was {busy:.0%} busy during {LABELS[name]}'s {what}, so "
                    "that figure may be limited by the client rather than the server"
                )
    print()
    print(text_table(rows, table_servers(args)))
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
        # Each once, in the order given: the first scenario runs them in this order.
        type=lambda s: list(dict.fromkeys(name for name in s.split(",") if name)),
        default=list(LABELS),
        help="comma-separated, from: " + ",".join(LABELS) + " (go: Go's net/http, needs `go`)",
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
        if name not in LABELS:
            parser.error(f"unknown server {name!r}; choose from {', '.join(LABELS)}")
    if not args.servers:
        parser.error("--servers names none")
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


def run() -> None:
    args = parse_args()
    # The Go peer is built before any server starts, into a directory that lasts the run.
    with tempfile.TemporaryDirectory(prefix="trio-sse-bench-") as directory:
        if GO in args.servers:
            args.go_binary, args.go_version = build_go_peer(Path(directory))
            print(f"built the Go peer with {args.go_version}")
        trio.run(main, args)


if __name__ == "__main__":
    run()
