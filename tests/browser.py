"""Helpers for the tests in a real headless Chromium (tests/test_browser.py).

The browser is Debian's ``chromium``, driven by Playwright for Python: Playwright's
own browser downloads are not used. Servers run as separate processes, started the
way a user starts them, so that a test can also stop and restart them.

Locally the browser tests skip when no Chromium is installed; with ``CI=true`` they
fail instead, so CI can never pass without running them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO

import pytest
import trio
from playwright.sync_api import Page
from quart_trio import QuartTrio

from trio_sse import MemoryBroker, ServerSentEvent, serve

ROOT = Path(__file__).resolve().parent.parent

# Flags for a headless browser in a container: no sandbox (we may run as root), no
# GPU, and none of the background traffic a fresh profile starts (updates, sync).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]

# Screenshots land here, for a person (or CI's artifact upload) to look at.
ARTIFACTS = Path(os.environ.get("TRIO_SSE_ARTIFACTS", ROOT / "tests" / "artifacts"))

# A server process gets this long to start listening (a cold interpreter on a busy
# 2-core machine can take a few seconds).
START_TIMEOUT = 20.0


def chromium_executable() -> str:
    """The Chromium to drive: ``$TRIO_SSE_CHROMIUM``, or ``chromium`` on the PATH.

    Skips the test if there is none, or fails it when ``CI=true``.
    """
    path = os.environ.get("TRIO_SSE_CHROMIUM") or shutil.which("chromium")
    if path is None or not os.access(path, os.X_OK):
        message = "chromium is not installed (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; with CI=true the browser tests must run")
        pytest.skip(message)
    return path


def screenshot(page: Page, name: str) -> Path:
    """Save a full-page screenshot as ``<ARTIFACTS>/<name>.png``; return its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    url: str
    port: int


@contextmanager
def server_process(command: list[str]) -> Iterator[ServerProcess]:
    """Run ``command`` (a server that logs "Running on http://HOST:PORT") until the block ends.

    Its output goes to a file, not a pipe: a full pipe nobody reads would block the
    server's event loop. The server gets SIGTERM at the end, as from a user.
    """
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=log, stderr=log, cwd=ROOT)
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while (found := re.search(rb"Running on (http://[\d.]+:(\d+))", _read(log))) is None:
                if process.poll() is not None:
                    raise RuntimeError(f"server exited early: {_read(log).decode()}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"server did not start: {_read(log).decode()}")
                # A file gives no readiness events; re-read it on a short beat.
                time.sleep(0.02)
            yield ServerProcess(process, found[1].decode(), int(found[2]))
        finally:
            stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM ``process`` and wait for it to exit (it must, within 10 s)."""
    if process.poll() is None:
        process.terminate()
    process.wait(timeout=10)


def example(name: str, *args: str) -> list[str]:
    """The command that runs ``examples/<name>/server.py``, as the README says."""
    return [sys.executable, str(ROOT / "examples" / name / "server.py"), *args]


def reference_server(*args: str) -> list[str]:
    """The command that runs ``trio-sse serve``."""
    return [sys.executable, "-m", "trio_sse.cli", "serve", *args]


def _read(log: IO[bytes]) -> bytes:
    log.seek(0)
    return log.read()


class InProcessServer:
    """A server in a thread of this process that can stop and start again, its broker kept.

    Like a server whose history outlives a restart (a shared broker such as Redis does
    that across processes): while it is stopped, a test can still publish into the
    broker, and the restarted server replays those events to reconnecting clients.

    Each start builds a fresh app with ``make_app(broker)`` and serves it on the same
    port; a stop cancels the open streams, as a crash would.
    """

    def __init__(self, make_app: Callable[[MemoryBroker], QuartTrio]) -> None:
        self._make_app = make_app
        self.broker = MemoryBroker()
        self.port = 0
        self._token: trio.lowlevel.TrioToken | None = None
        self._serving = threading.Event()
        self._stopped = threading.Event()
        self._resume: trio.Event | None = None
        self._shutdown: trio.Event | None = None
        self._is_closing = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="in-process-server")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start serving (again) and wait until the port listens."""
        self._serving.clear()
        self._stopped.clear()
        if not self._thread.is_alive():
            self._thread.start()
        else:
            assert self._resume is not None
            self._call(self._resume.set)
        self._wait(self._serving)

    def stop(self) -> None:
        """Stop serving (open streams are cancelled) and wait until the port is closed."""
        self._stopped.clear()
        assert self._shutdown is not None
        self._call(self._shutdown.set)
        self._wait(self._stopped)

    def publish(self, topic: str, event: ServerSentEvent) -> str:
        """Publish into the broker from the test's thread, serving or not."""
        event_id: str = trio.from_thread.run(
            partial(self.broker.publish, topic, event), trio_token=self._token
        )
        return event_id

    def close(self) -> None:
        if self._thread.is_alive():
            self._is_closing = True
            if not self._stopped.is_set():
                self.stop()
            assert self._resume is not None
            self._call(self._resume.set)
            self._thread.join(timeout=10)
        if self._error is not None:
            raise self._error

    def _call(self, function: Callable[[], object]) -> None:
        trio.from_thread.run_sync(function, trio_token=self._token)

    def _wait(self, event: threading.Event) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        # Bounded, and gives up early if the server thread died.
        while not event.wait(0.05):
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError("the in-process server stopped") from self._error
            if time.monotonic() > deadline:
                raise TimeoutError("the in-process server did not change state")

    def _run(self) -> None:
        try:
            trio.run(self._serve_until_closed)
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            self._error = exc

    async def _serve_until_closed(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        while not self._is_closing:
            self._shutdown = trio.Event()
            self._resume = trio.Event()
            async with trio.open_nursery() as nursery:
                urls = await nursery.start(
                    partial(
                        serve,
                        self._make_app(self.broker),
                        host="127.0.0.1",
                        port=self.port,
                        graceful_timeout=0.2,
                        shutdown_trigger=self._shutdown.wait,
                    )
                )
                self.port = int(urls[0].rsplit(":", 1)[1])
                self._serving.set()
            self._stopped.set()
            await self._resume.wait()
        await self.broker.aclose()


@contextmanager
def in_process_server(make_app: Callable[[MemoryBroker], QuartTrio]) -> Iterator[InProcessServer]:
    """Run an :class:`InProcessServer`, started, for the duration of the block."""
    server = InProcessServer(make_app)
    try:
        server.start()
        yield server
    finally:
        server.close()
