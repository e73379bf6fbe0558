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
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest
from playwright.sync_api import Page

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
