"""`trio-sse serve` as a user runs it: a real process, real signals."""

from __future__ import annotations

import contextlib
import importlib.metadata
import re
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import IO

import httpx
import pytest
import trio

import trio_sse
import trio_sse.cli._serve
from tests.wire import SSEConnection, wait_for_remote_subscribers
from trio_sse.cli import main

SERVE = [sys.executable, "-m", "trio_sse.cli", "serve"]


@asynccontextmanager
async def listening_process(
    command: list[str],
    *,
    # A cold interpreter importing Quart, Hypercorn and coredis takes about a second;
    # on a loaded 2-core CI machine, several.
    startup_timeout: float = 30,
    stop_timeout: float = 10,
    log: IO[bytes] | None = None,
) -> AsyncIterator[tuple[trio.Process, tuple[str, int]]]:
    """Start a server process and wait until it logs the address it listens on.

    Its stderr goes to a file, not a pipe: the server logs every disconnect, and a
    full pipe that nobody reads would block its event loop (logging is synchronous).
    Pass ``log`` to read that file afterwards; a temporary one is used otherwise.
    """
    with contextlib.ExitStack() as stack:
        if log is None:
            log = stack.enter_context(tempfile.TemporaryFile())
        process = await trio.lowlevel.open_process(command, stderr=log)
        try:
            with trio.fail_after(startup_timeout):
                # A file gives no readiness events; re-read it on a short beat.
                while (
                    found := re.search(rb"Running on https?://([\d.]+):(\d+)", _read(log))
                ) is None:
                    assert process.poll() is None, f"server exited early: {_read(log).decode()}"
                    await trio.sleep(0.02)
            yield process, (found[1].decode(), int(found[2]))
        finally:
            if process.returncode is None:
                process.terminate()
            with trio.fail_after(stop_timeout):
                await process.wait()


def _read(log: IO[bytes]) -> bytes:
    log.seek(0)
    return log.read()


async def signal_and_time(
    process: trio.Process,
    conns: list[SSEConnection],
    signum: int,
    *,
    streams_within: float,
    exit_within: float,
) -> tuple[float, float]:
    """Send ``signum``; return seconds until every stream ended and until the exit."""
    start = trio.current_time()
    process.send_signal(signum)
    for conn in conns:
        await conn.read_to_end(timeout=streams_within)
    streams_ended = trio.current_time() - start
    with trio.fail_after(exit_within):
        await process.wait()
    return streams_ended, trio.current_time() - start


def serve_process(*args: str) -> AbstractAsyncContextManager[tuple[trio.Process, tuple[str, int]]]:
    """`trio-sse serve --port 0 ...`, listening."""
    return listening_process([*SERVE, "--port", "0", *args])


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_signal_ends_every_stream_cleanly_and_exits_within_2s(signum: int) -> None:
    async with serve_process() as (process, address):
        conns = [await SSEConnection.open(address, "/events/t") for _ in range(50)]
        async with httpx.AsyncClient(base_url=f"http://{address[0]}:{address[1]}") as http:
            await wait_for_remote_subscribers(http, 50)
            assert (await http.post("/events/t", json={"data": "bye"})).status_code == 202
        for conn in conns:
            await conn.read_events(1)
        streams_ended, exited = await signal_and_time(
            process, conns, signum, streams_within=2, exit_within=2
        )
        for conn in conns:
            assert conn.ended_cleanly
            await conn.close_fin()
    assert process.returncode == 0
    assert streams_ended < 0.5
    assert exited < 2.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "-1"], "must be >= 0"),
        (["--port", "70000"], "must be <= 65535"),
        (["--heartbeat", "soon"], "expected a number"),
        (["--heartbeat", "nan"], "must be >= 0"),
        (["--history", "-3"], "must be >= 0"),
        (["--queue-size", "0"], "must be >= 1"),
        (["--write-interval", "-0.5"], "must be >= 0"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--workers", "2"], "--workers > 1 needs a shared broker"),
        (["--workers", "0"], "must be >= 1"),
        (["--broker", "http://127.0.0.1:6379"], "expected 'memory' or a Redis URL"),
    ],
)
def test_bad_arguments_exit_non_zero_with_a_message(
    args: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, stderr = refused_serve(args, monkeypatch, capsys)
    assert code == 2
    assert message in stderr


def refused_serve(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    """`trio-sse serve ARGS`, refused: its exit status and stderr.

    In this process (``main()``), which saves a process start-up (over a second of
    CPU) per case; ``test_a_refused_argument_exits_2_through_the_real_command`` runs
    the command itself. Should a refusal regress, the first step after the checks
    (setting up logging) fails the test, instead of serving forever.
    """

    def past_the_checks(*_: object) -> None:
        raise AssertionError(f"serve {args} was not refused")

    monkeypatch.setattr(trio_sse.cli._serve, "_configure_logging", past_the_checks)
    try:
        code = main(["serve", *args])
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    return code, capsys.readouterr().err


def test_a_refused_argument_exits_2_through_the_real_command() -> None:
    result = subprocess.run(
        [*SERVE, "--port", "-1"], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 2
    assert "must be >= 0" in result.stderr


@pytest.mark.slow
async def test_port_in_use_is_a_clear_error() -> None:
    async with serve_process() as (_, (_, port)):
        command = [*SERVE, "--port", str(port)]
        result = await trio.to_thread.run_sync(
            partial(subprocess.run, command, capture_output=True, text=True, timeout=30)
        )
    assert result.returncode == 1
    assert "cannot listen on 127.0.0.1:" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
async def test_an_unreachable_redis_is_a_clear_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        url = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
        for workers in ["1", "2"]:
            command = [*SERVE, "--port", "0", "--broker", url, "--workers", workers]
            result = await trio.to_thread.run_sync(
                partial(subprocess.run, command, capture_output=True, text=True, timeout=30)
            )
            assert result.returncode == 1
            assert f"cannot use the broker {url}" in result.stderr
            assert "Traceback" not in result.stderr


@pytest.mark.slow
async def test_a_broker_password_is_not_printed() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"redis://:hunter2@127.0.0.1:{sock.getsockname()[1]}/0"
        command = [*SERVE, "--port", "0", "--broker", url]
        result = await trio.to_thread.run_sync(
            partial(subprocess.run, command, capture_output=True, text=True, timeout=30)
        )
    assert result.returncode == 1
    assert "cannot use the broker redis://:***@127.0.0.1:" in result.stderr
    assert "hunter2" not in result.stderr


async def test_the_hypercorn_cli_serves_the_reference_app() -> None:
    hypercorn = [sys.executable, "-m", "hypercorn", "--worker-class", "trio"]
    command = [*hypercorn, "--bind", "127.0.0.1:0", "trio_sse.app:app"]
    async with listening_process(command) as (_, address):
        conn = await SSEConnection.open(address, "/events/cli")
        async with httpx.AsyncClient(base_url=f"http://{address[0]}:{address[1]}") as http:
            await wait_for_remote_subscribers(http, 1)
            await http.post("/events/cli", json={"data": "via the hypercorn CLI"})
        (event,) = await conn.read_events(1)
        assert event.data == "via the hypercorn CLI"
        await conn.close_fin()


def test_version_is_the_package_version() -> None:
    command = [*SERVE[:-1], "--version"]
    result = subprocess.run(command, check=True, capture_output=True, text=True, timeout=30)
    assert result.stdout.strip() == f"trio-sse {trio_sse.__version__}"
    assert importlib.metadata.version("trio-sse") == trio_sse.__version__


def test_serve_help_gives_every_option_a_help_and_each_default_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    # One entry per option: its flags at the start of a line, then its help.
    # (A blank line ends an entry: a group's title and description follow.)
    entries = [
        entry.split("\n\n")[0]
        for entry in re.split(r"\n(?=  -)", text.split("options:", 1)[1])
        if entry.strip()
    ]
    assert len(entries) > 30
    for entry in entries:
        flags, _, help_text = entry.strip().partition("  ")
        assert help_text.strip(), f"{flags} has no help"
        assert "(default: None)" not in entry, entry
        assert "(default: False)" not in entry, entry
        assert entry.count("default") <= 1, entry


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--publish-token", "short"], {}, "--publish-token must be at least 16 characters"),
        ([], {"TRIO_SSE_PUBLISH_TOKEN": "short"}, "$TRIO_SSE_PUBLISH_TOKEN must be at least 16"),
        (["--subscribe-auth"], {}, "--subscribe-auth needs --jwt-key"),
    ],
)
def test_auth_errors_name_the_flag_or_variable(
    args: list[str],
    env: dict[str, str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("TRIO_SSE_PUBLISH_TOKEN", "TRIO_SSE_JWT_KEY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "publish_token" not in err
    assert "subscribe_requires_token" not in err
