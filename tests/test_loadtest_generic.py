"""`trio-sse loadtest` beyond our own server's contract: runs that prove nothing, any
publish contract, verdict sources other than `/stats`, CI thresholds, the report schema.

Whole runs over real sockets, kept to a few dozen connections and about a second.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import trio

from tests.test_cli import serve_process
from tests.wire import running_server

LOADTEST = [sys.executable, "-m", "trio_sse.cli", "loadtest"]
RUN_TIMEOUT = 60.0
# A short run: enough to publish a few events and churn a few connections.
SHORT = [
    *("--connections", "20", "--duration", "1", "--publish-rate", "5"),
    *("--drain-timeout", "1", "--clean-timeout", "5", "--quiet"),
]


async def _loadtest(*args: str) -> tuple[int, str, str]:
    with trio.fail_after(RUN_TIMEOUT):
        result = await trio.run_process(
            [*LOADTEST, *args], capture_stdout=True, capture_stderr=True, check=False
        )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


# -- a run that proves nothing fails ------------------------------------------------


async def test_every_publish_refused_exits_4_with_the_reason() -> None:
    async with serve_process("--publish-token", "s3cret-token-0123456789") as (_, (host, port)):
        code, out, err = await _loadtest(f"http://{host}:{port}/events/refused", *SHORT)
    assert code == 4, out + err
    assert "every publish was refused" in out
    assert "401" in out
    assert "INCONCLUSIVE" in out


async def test_no_stream_ever_opened_exits_4_with_the_reason(tmp_path: Path) -> None:
    async with running_server() as server:
        code, out, err = await _loadtest(
            f"{server.url}/no/such/stream",
            *SHORT,
            *("--stats-url", f"{server.url}/stats", "--report", str(tmp_path / "r.json")),
        )
    assert code == 4, out + err
    assert "no stream ever opened" in out
    assert "404" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["run"]["is_conclusive"] is False
    assert any("no stream ever opened" in problem for problem in report["run"]["problems"])


async def test_nothing_delivered_exits_4_with_the_reason() -> None:
    async with running_server() as server:
        # Events go to another topic: every publish succeeds, no subscriber gets one.
        code, out, err = await _loadtest(
            f"{server.url}/events/heard",
            *SHORT,
            *("--publish-url", f"{server.url}/events/elsewhere"),
        )
    assert code == 4, out + err
    assert "nothing was delivered" in out


async def test_an_unreadable_verdict_source_exits_1_with_the_reason() -> None:
    async with running_server() as server:
        code, out, err = await _loadtest(
            f"{server.url}/events/x", *SHORT, "--stats-url", f"{server.url}/metrics"
        )
    assert code == 1, out + err
    assert "is not JSON" in err
    assert "Traceback" not in err
