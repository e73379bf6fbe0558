"""`trio-sse loadtest` against servers we did not write, besides our own.

The peers (tests/peers/): an sse-starlette app on uvicorn (``POST /events/<topic>``
taking ``data`` as a string only, its count at ``GET /stats`` as ``sse.clients``) and a
Node ``http`` chat server in the classic tutorial's shape (``GET /chat`` greets with
``event: hello``, ``POST /chat`` takes raw text, no count at all: judged by its process).
Each gets the same churning run as ``trio-sse serve``; only the options that fit its
contract differ. A clean run ends CLEAN with exit 0; a deliberately leaking variant of
each ends LEAKING with exit 3 and exactly the ghosts the peer itself logged.

Whole runs of a few hundred connections over real sockets, each server in its own
process: several seconds each, hence ``slow``.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.peers import NODE_CHAT_SERVER, STARLETTE_APP, require_node
from tests.test_cli import listening_process
from tests.test_loadtest_generic import _loadtest

pytestmark = pytest.mark.slow

# Small enough to stay within a few seconds; enough churn that every drop method and
# every peer's resume path (Last-Event-ID against its history) is exercised.
LOAD = [
    *("--connections", "150", "--duration", "1.5", "--publish-rate", "10"),
    *("--churn", "20", "--drop", "mix", "--stall-for", "0.5"),
    *("--drain-timeout", "3", "--quiet"),
]


@dataclass(frozen=True)
class Peer:
    """A server to run the load tester against, and the options its contract needs."""

    name: str
    stream_path: str
    # The publish contract and the verdict's source; "{pid}" is the server's process id.
    options: tuple[str, ...]
    source_kind: str  # the report's server.source.kind

    def command(self, *, leak_every: int = 0) -> list[str]:
        if self.name == "trio-sse":
            return [sys.executable, "-m", "trio_sse.cli", "serve", "--port", "0"]
        leak = ["--leak-every", str(leak_every)]
        if self.name == "sse-starlette":
            return [sys.executable, str(STARLETTE_APP), *leak]
        return [require_node(), str(NODE_CHAT_SERVER), *leak]


OURS = Peer("trio-sse", "/events/load", (), "json")
STARLETTE = Peer(
    "sse-starlette",
    "/events/load",
    ("--payload-as", "string", "--stats-path", "sse.clients"),
    "json",
)
NODE = Peer("node", "/chat", ("--publish-format", "text", "--server-pid", "{pid}"), "process")


@dataclass
class Run:
    code: int
    out: str
    report: dict[str, Any]  # the JSON report (docs/loadtest-report.md)
    log: str  # the server's stderr

    @property
    def events(self) -> dict[str, Any]:
        return dict(self.report.get("events", {}))

    @property
    def server(self) -> dict[str, Any]:
        return dict(self.report.get("server", {}))


async def _run_against(peer: Peer, tmp_path: Path, *extra: str, leak_every: int = 0) -> Run:
    report_path = tmp_path / "r.json"
    with tempfile.TemporaryFile() as log:
        async with listening_process(peer.command(leak_every=leak_every), log=log) as (
            process,
            (host, port),
        ):
            options = [option.replace("{pid}", str(process.pid)) for option in peer.options]
            code, out, err = await _loadtest(
                f"http://{host}:{port}{peer.stream_path}",
                *LOAD,
                *options,
                *extra,
                *("--report", str(report_path)),
            )
        log.seek(0)
        server_log = log.read().decode()
    assert "Traceback" not in err, err
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    return Run(code, out + err, report, server_log)


@pytest.fixture(params=[OURS, STARLETTE, NODE], ids=lambda peer: peer.name)
def peer(request: pytest.FixtureRequest) -> Peer:
    """Each server in turn; a missing ``node`` skips (fails under CI=true) here, outside
    the test's nursery, so that the reason is shown as it is."""
    chosen: Peer = request.param
    if chosen is NODE:
        require_node()
    return chosen


@pytest.fixture
def node() -> str:
    """Debian's ``node``, or a skip (a failure under CI=true)."""
    return require_node()


async def test_a_churning_run_against_each_server_is_clean(peer: Peer, tmp_path: Path) -> None:
    run = await _run_against(peer, tmp_path, "--clean-timeout", "10")
    assert run.code == 0, run.out
    events, server = run.events, run.server
    connects = run.report["connections"]["connects"]
    assert connects > 150  # churned connections came back
    assert sorted(run.report["churn"]["drops"]) == ["fin", "rst", "stall"]
    assert all(count > 0 for count in run.report["churn"]["drops"].values())
    # Every event published reached every subscriber, across every drop and resume.
    assert events["published"] == events["published_ok"]
    assert events["published"] > 5
    assert (events["lost"], events["undelivered"], events["duplicated"]) == (0, 0, 0)
    # Each subscriber got every event after its floor: the last seq handed out when its
    # stream opened (0 for most; a subscriber whose first connection was dropped before
    # its first event starts afresh, as a browser would, with no id to resume from).
    for row in run.report["per_connection"]:
        assert row["delivered"] >= events["published"] - row["floor"], row
    assert events["per_connection"]["delivered_median"] == events["published"]
    assert events["replayed"] > 0  # resumes replayed from the peer's history
    assert server["source"]["kind"] == peer.source_kind
    assert (server["verdict"], server["ghosts"]) == ("clean", 0)
    assert f"CLEAN [by {server['source']['description']}]" in run.out
    if peer is NODE:
        # Each stream's `event: hello` is no event of the tester's: counted, not judged.
        assert events["foreign"] == connects
        # The tutorial's close log: every client that left was noticed.
        assert len(re.findall(r"client \d+ closed", run.log)) == connects
    else:
        assert events["foreign"] == 0


async def test_the_sse_starlette_app_refuses_object_data_and_the_run_proves_nothing(
    tmp_path: Path,
) -> None:
    # The first run, against the real peer: the tester's default JSON object
    # `data` is refused (400) by an app that takes a string; exit 4, not 0 as before.
    peer = Peer("sse-starlette", STARLETTE.stream_path, ("--stats-path", "sse.clients"), "json")
    run = await _run_against(
        peer, tmp_path, *("--connections", "5", "--duration", "0.5", "--drain-timeout", "0.5")
    )
    assert run.code == 4, run.out
    assert "every publish was refused" in run.out
    assert "400" in run.out
    assert "must be a string" in run.out
    assert "INCONCLUSIVE" in run.out
    assert run.report["run"]["is_conclusive"] is False


async def test_an_sse_starlette_app_that_never_forgets_some_clients_is_leaking(
    tmp_path: Path,
) -> None:
    run = await _run_against(
        STARLETTE, tmp_path, *("--clean-timeout", "4", "--drain-timeout", "1"), leak_every=10
    )
    ghosts = len(re.findall(r"stream \d+ will never be forgotten", run.log))
    assert ghosts >= 15  # one stream in ten of 150 and more
    assert run.code == 3, run.out
    assert run.server["verdict"] == "leaking"
    assert run.server["ghosts"] == ghosts
    assert f"LEAKING ({ghosts} ghost subscribers) [by GET http://" in run.out
    assert '/stats, JSON "sse.clients"]' in run.out


@pytest.mark.usefixtures("node")
async def test_a_node_chat_server_that_never_closes_some_sockets_is_leaking(tmp_path: Path) -> None:
    # Dropped with FIN only: a parked socket that its client reset is gone from the
    # kernel's tables too, so only the ones left in CLOSE_WAIT are ghosts /proc can see.
    run = await _run_against(
        NODE,
        tmp_path,
        *("--drop", "fin", "--clean-timeout", "4", "--drain-timeout", "1"),
        leak_every=10,
    )
    parked = len(re.findall(r"client \d+ parked", run.log))
    assert parked >= 15
    assert run.code == 3, run.out
    assert run.server["verdict"] == "leaking"
    assert run.server["ghosts"] == parked
    assert f"LEAKING ({parked} ghost subscribers) [by open sockets on port " in run.out
    # The server's own log never saw those clients leave.
    connects = run.report["connections"]["connects"]
    assert len(re.findall(r"client \d+ closed", run.log)) == connects - parked
