"""`trio-sse loadtest` beyond one process: `--processes N`, `--source-address`, and
`trio-sse loadtest merge` of several machines' reports; the chart's fixes.

Whole runs over real sockets (a `trio-sse serve` subprocess, or Hypercorn in this
process), each a few dozen connections for about a second.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import psutil
import pytest
import quart
import trio

from tests.test_cli import serve_process
from tests.test_loadtest import LeakyBroker
from tests.wire import running_server
from trio_sse import MemoryBroker
from trio_sse.app import create_app
from trio_sse.cli import main
from trio_sse.cli._loadtest import merge_command
from trio_sse.loadtest import EXIT_CLEAN, EXIT_LEAKING, LoadTestOptions, build_report
from trio_sse.loadtest._board import SeqBoard
from trio_sse.loadtest._chart import render_html
from trio_sse.loadtest._ledger import Ledger
from trio_sse.loadtest._merge import merge_records
from trio_sse.loadtest._options import parse_source_addresses
from trio_sse.loadtest._record import Phase, RunRecord, Sample
from trio_sse.loadtest._setup import new_record

LOADTEST = [sys.executable, "-m", "trio_sse.cli", "loadtest"]
RUN_TIMEOUT = 60.0
SHORT = [
    *("--connections", "40", "--duration", "1", "--publish-rate", "10"),
    *("--drain-timeout", "2", "--clean-timeout", "5", "--quiet"),
]


async def _loadtest(*args: str) -> tuple[int, str, str]:
    with trio.fail_after(RUN_TIMEOUT):
        result = await trio.run_process(
            [*LOADTEST, *args], capture_stdout=True, capture_stderr=True, check=False
        )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def _read(path: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(path.read_text())
    return report


# -- --processes ---------------------------------------------------------------------


@pytest.mark.slow
async def test_two_processes_against_serve_are_clean_and_count_each_connection_once(
    tmp_path: Path,
) -> None:
    async with serve_process() as (_, (host, port)):
        code, out, err = await _loadtest(
            f"http://{host}:{port}/events/p",
            *SHORT,
            *("--processes", "2", "--churn", "20", "--drop", "mix"),
            *("--report", str(tmp_path / "r.json"), "--chart", str(tmp_path / "c.html")),
        )
    assert code == EXIT_CLEAN, out + err
    report = _read(tmp_path / "r.json")
    assert report["server"]["verdict"] == "clean"
    assert len(report["per_connection"]) == 40
    events = report["events"]
    published = events["published"]
    assert published > 0
    assert (events["lost"], events["undelivered"], events["duplicated"]) == (0, 0, 0)
    # Every subscriber got every event once: each counted once, none twice.
    assert events["delivered"] == sum(row["delivered"] for row in report["per_connection"])
    assert all(row["floor"] is not None for row in report["per_connection"])
    workers = [row for row in report["processes"] if row["index"] >= 0]
    assert [row["index"] for row in workers] == [0, 1]
    assert sum(row["connections"] for row in workers) == 40
    assert sum(row["delivered"] for row in workers) == events["delivered"]
    assert sum(report["churn"]["drops"].values()) > 0
    assert report["connections"]["connects"] == sum(row["connects"] for row in workers)
    assert "2 processes" in out
    assert "chart written to" in out


@pytest.mark.slow
async def test_a_leaking_server_is_caught_with_two_processes(tmp_path: Path) -> None:
    broker = LeakyBroker(every=10)
    async with running_server(broker=broker) as server:
        code, out, err = await _loadtest(
            f"{server.url}/events/leak",
            *SHORT,
            *("--processes", "2", "--churn", "20", "--drop", "fin,rst"),
            *("--clean-timeout", "4", "--report", str(tmp_path / "r.json")),
        )
        assert server.broker.statistics().subscribers == broker.ghosts
    assert code == EXIT_LEAKING, out + err
    assert broker.ghosts >= 4
    assert f"LEAKING ({broker.ghosts} ghost subscribers)" in out
    assert _read(tmp_path / "r.json")["server"]["ghosts"] == broker.ghosts


@pytest.mark.slow
async def test_a_worker_that_dies_fails_the_run_clearly_and_the_others_are_stopped(
    tmp_path: Path,
) -> None:
    async with serve_process() as (_, (host, port)):
        command = [
            *LOADTEST,
            f"http://{host}:{port}/events/d",
            *("--connections", "20", "--processes", "2", "--duration", "30", "--quiet"),
        ]
        with trio.fail_after(RUN_TIMEOUT), (tmp_path / "err").open("wb") as err:
            async with trio.open_nursery() as nursery:
                process = await nursery.start(
                    partial(
                        trio.run_process,
                        command,
                        stdout=subprocess.DEVNULL,
                        stderr=err,
                        check=False,
                    )
                )
                parent = psutil.Process(process.pid)
                while len(parent.children()) < 2:  # noqa: ASYNC110 - another process
                    await trio.sleep(0.05)
                children = parent.children()
                # Mid-run (the run lasts 30 s): one worker killed outright.
                await trio.sleep(1.0)
                os.kill(children[0].pid, signal.SIGKILL)
                await process.wait()
    assert process.returncode == 1
    stderr = (tmp_path / "err").read_text()
    assert f"load-test worker 0 (pid {children[0].pid}) exited with status -9" in stderr
    survivors = [child for child in children[1:] if child.is_running()]
    assert not [c for c in survivors if c.status() != psutil.STATUS_ZOMBIE]


# -- --source-address -----------------------------------------------------------------


@pytest.mark.slow
async def test_connections_are_spread_over_the_source_addresses(tmp_path: Path) -> None:
    peers: list[str] = []
    broker = MemoryBroker()
    app = create_app(broker=broker)

    @app.before_request
    async def note_peer() -> None:
        if quart.request.path.startswith("/events/"):
            peers.append(quart.request.remote_addr or "")

    async with running_server(broker=broker, app=app) as server:
        code, out, err = await _loadtest(
            f"{server.url}/events/s",
            *SHORT,
            *("--processes", "2", "--source-address", "127.0.0.2-3"),
            *("--source-address", "127.0.0.4"),
        )
    assert code == EXIT_CLEAN, out + err
    streams = [peer for peer in peers if peer != "127.0.0.1"]  # the publisher's are .1
    counts = {address: streams.count(address) for address in set(streams)}
    assert set(counts) == {"127.0.0.2", "127.0.0.3", "127.0.0.4"}
    # Round-robin over 40 subscribers: 14, 13, 13 first connects.
    assert min(counts.values()) >= 13


def _main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    try:
        code = main(["loadtest", *args])
    except SystemExit as exc:  # argparse's usage errors
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def test_bad_source_addresses_are_refused_before_the_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = "http://127.0.0.1:9/events/x"
    code, err = _main(capsys, url, "--source-address", "127.0.0.300")
    assert code == 2
    assert "not an IP address: '127.0.0.300'" in err
    code, err = _main(capsys, url, "--source-address", "127.0.0.9-3")
    assert code == 2
    assert "A <= B" in err
    # TEST-NET-1: no machine here has it, so it cannot be bound.
    code, err = _main(capsys, url, "--source-address", "192.0.2.1")
    assert code == 1
    assert "cannot bind source address 192.0.2.1" in err
    code, err = _main(capsys, url, "--source-address", "::1")
    assert code == 1
    assert "source address ::1 is IPv6, but the server's address is IPv4" in err


def test_source_address_ranges() -> None:
    assert parse_source_addresses("127.0.0.2") == ["127.0.0.2"]
    assert parse_source_addresses("127.0.0.2-4") == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    assert parse_source_addresses("127.0.0.255-127.0.1.0") == ["127.0.0.255", "127.0.1.0"]
    with pytest.raises(ValueError, match="at most 256"):
        parse_source_addresses("127.0.0.0-127.0.2.0")
    with pytest.raises(ValueError, match="processes must be in"):
        LoadTestOptions(url="http://h/e", processes=0)
    with pytest.raises(ValueError, match="must not exceed connections"):
        LoadTestOptions(url="http://h/e", connections=2, processes=3)


# -- merging several machines' reports --------------------------------------------------


def _merge(*paths: Path, report: Path | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = merge_command(list(paths), out=out, err=err, report_path=report)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.slow
async def test_merge_of_two_machines_reports_of_one_run(tmp_path: Path) -> None:
    async with running_server() as server:
        for name in ("a", "b"):
            code, out, err = await _loadtest(
                f"{server.url}/events/{name}",
                *SHORT,
                *("--run-id", "nightly-7", "--report", str(tmp_path / f"{name}.json")),
            )
            assert code == EXIT_CLEAN, out + err
    a, b = _read(tmp_path / "a.json"), _read(tmp_path / "b.json")
    merged_path = tmp_path / "m.json"
    code, out, err = _merge(tmp_path / "a.json", tmp_path / "b.json", report=merged_path)
    assert code == EXIT_CLEAN, out + err
    merged = _read(merged_path)
    assert merged["connections"]["target"] == 80
    assert len(merged["per_connection"]) == 80
    for key in ("published", "delivered", "lost"):
        assert merged["events"][key] == a["events"][key] + b["events"][key]
    latency_count = a["latency"]["count"] + b["latency"]["count"]
    assert merged["latency"]["count"] == latency_count
    assert merged["latency"]["max"] == max(a["latency"]["max"], b["latency"]["max"])
    assert [part["part_id"] for part in merged["parts"]] == [a["part_id"], b["part_id"]]
    assert "merged from 2 reports" in out

    # Refused: the same report twice, another run, another schema version.
    code, _, err = _merge(tmp_path / "a.json", merged_path)
    assert code == 2
    assert f"part {a['part_id']} is in more than one report" in err
    (tmp_path / "other.json").write_text(json.dumps({**b, "run_id": "other"}))
    code, _, err = _merge(tmp_path / "a.json", tmp_path / "other.json")
    assert code == 2
    assert "different runs (run ids nightly-7, other): give every machine the same --run-id" in err
    old = {**b, "schema_version": 1}
    (tmp_path / "old.json").write_text(json.dumps(old))
    code, _, err = _merge(tmp_path / "a.json", tmp_path / "old.json")
    assert code == 2
    assert "report 2 has schema version 1" in err


# -- pure parts -----------------------------------------------------------------------


def test_the_board_is_shared_by_processes_through_its_file(tmp_path: Path) -> None:
    parent = SeqBoard(2, path=tmp_path / "board")
    worker = SeqBoard(2, own=1, path=tmp_path / "board")
    try:
        parent.set_published(41)
        assert worker.published() == 41
        worker.see(7)
        worker.see(5)
        assert parent.highest_seen() == 7
    finally:
        parent.close()
        worker.close()


def test_merged_records_put_each_workers_ledgers_back_in_run_wide_order() -> None:
    options = LoadTestOptions(url="http://h/e", connections=5, processes=2)
    parent = new_record(options)
    workers = [new_record(options), new_record(options)]
    for index, worker in enumerate(workers):
        worker.ledgers = [Ledger() for _ in range(3 - index)]
        for j, ledger in enumerate(worker.ledgers):
            ledger.start_stream(0, is_resume=False)
            for seq in range(1, index + 2 * j + 2):  # subscriber g gets g + 1 events
                ledger.receive(seq)
        worker.connects = 3 - index
    merged = merge_records(parent, workers)
    assert [ledger.delivered for ledger in merged.ledgers] == [1, 2, 3, 4, 5]
    assert merged.connects == 5
    assert [share.index for share in merged.processes] == [-1, 0, 1]


def _record_with_phases() -> RunRecord:
    record = new_record(LoadTestOptions(url="http://h/e", connections=1))
    record.ledgers = [Ledger()]
    record.baseline_subscribers = 12
    record.clean_seconds = 0.1
    phases = [Phase.RAMP, Phase.STEADY, Phase.DRAIN, Phase.CLEAN]
    for t, phase in zip((1.0, 2.0, 3.0, 3.5), phases, strict=True):
        record.samples.append(Sample(t, phase, 1, 13, 1, 1.0, 0.01, 0.02, 0.02, 0, 0))
    record.phase_starts = {Phase.STEADY: 1.2, Phase.DRAIN: 2.2, Phase.CLEAN: 3.1}
    return record


def test_the_chart_draws_phases_where_they_began_from_the_baseline_with_p99_visible() -> None:
    page = render_html(build_report(_record_with_phases()))
    # Where each phase began (clean at 3.1 s), not a second before its first row.
    for phase, t in (("steady", "1.2"), ("drain", "2.2"), ("clean", "3.1")):
        assert f'data-phase="{phase}" data-t="{t}"' in page
    # The server line starts at t = 0 at the baseline (12), below the run's 13s.
    server = page.split('data-series="server: subscribers')[0].rsplit("<polyline", 1)[1]
    first_x, first_y = server.split('points="')[1].split()[0].split(",")
    last_y = server.split('points="')[1].split('"')[0].split()[-1].split(",")[1]
    assert float(first_x) == pytest.approx(80.0)
    assert float(first_y) > float(last_y)
    # p99 equals max in every second here: p99 drawn wide, max dashed over it.
    assert 'stroke-width="4" stroke-opacity="0.75" data-series="p99"' in page
    assert 'stroke-dasharray="5 3" data-series="max"' in page
