"""Developer sessions. `nox` runs lint, typecheck, tests and docs: the same as CI."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests", "docs"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (with the flake8-async rules) and ruff format."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package, tests, examples and benchmarks."""
    # The benchmarks import their peer server (sse-starlette, uvicorn): the bench extra.
    session.install("-e", ".[test,bench]")
    session.run("mypy")


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite: unit tests and integration tests over real sockets.

    On 4 pytest-xdist workers, even on 2 cores: most tests wait on sockets, timers and
    processes. ``worksteal`` lets an idle worker take tests queued behind a long one;
    tests/conftest.py starts the longest tests first. Arguments after ``--`` go to
    pytest and come last, so ``-n 0`` runs the suite in one process and ``-m "not slow"``
    leaves out the slow tests.
    """
    session.install("-e", ".[test]")
    # The suite starts well over a hundred Python processes (servers, workers, CLIs).
    # Where PYTHONDONTWRITEBYTECODE is set (as on our CI machines) none of them caches
    # its compiled modules, so each compiled the whole package again: 0.1 s of CPU of
    # the 1.2 s a `serve` takes to start. compileall writes the caches regardless.
    session.run("python", "-m", "compileall", "-q", "trio_sse", "tests", "examples")
    session.run("pytest", "-n", "4", "--dist", "worksteal", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """The HTML site (Sphinx, MyST Markdown, API reference from the docstrings) in build/docs/.

    Warnings are errors (``-W --keep-going`` reports them all, then fails), and the whole
    site is rebuilt each time (``-E``) so that no warning hides in a cached page. Open
    build/docs/index.html. Arguments after ``--`` go to sphinx-build.
    """
    session.install("-e", ".[docs]")
    session.run(
        "sphinx-build",
        "-W",
        "--keep-going",
        "-E",
        "-b",
        "html",
        *session.posargs,
        "docs",
        "build/docs",
    )


@nox.session
def browser(session: nox.Session) -> None:
    """Only the tests in a real headless Chromium (also part of `tests`).

    Screenshots of each page are saved under tests/artifacts/ (or $TRIO_SSE_ARTIFACTS).
    """
    session.install("-e", ".[test]")
    session.run("pytest", "tests/test_browser.py", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """The figures in docs/benchmarks.md and docs/performance.md (minutes; needs Redis, Go).

    benchmarks/compare.py runs the four standard scenarios against `trio-sse serve`,
    against sse-starlette on uvicorn and against a Go net/http peer (benchmarks/peer_go,
    standard library only, built with `go build`: Debian's `apt-get install golang-go`),
    each server pinned to one core, prints the table and writes docs/benchmarks.md.
    Arguments after ``--`` go to it, e.g. ``nox -s bench -- --quick --scenarios fanout``
    (``--servers trio-sse,sse-starlette`` leaves the Go peer out). Then the disconnect
    and shutdown timings, the brokers' latency, and a reader's latency next to 100
    clients that never read (benchmarks/slow_clients.py, 20 s). Each script in
    benchmarks/ takes options of its own (see its --help); run one as
    ``PYTHONPATH=. python benchmarks/<name>.py`` from the repository root (they reuse
    the test suite's helpers).
    """
    session.install("-e", ".[test,bench]")
    env = {"PYTHONPATH": "."}
    compare = session.posargs or ["--write", "docs/benchmarks.md"]
    session.run("python", "benchmarks/compare.py", *compare, env=env)
    if not session.posargs:
        session.run("python", "benchmarks/disconnect.py", env=env)
        session.run("python", "benchmarks/shutdown.py", env=env)
        session.run("python", "benchmarks/latency.py", env=env)
        session.run("python", "benchmarks/slow_clients.py", env=env)
        session.run("python", "benchmarks/scaling.py", env=env)
        session.run("python", "benchmarks/cluster_latency.py", env=env)


@nox.session
def soak(session: nox.Session) -> None:
    """100,000 connect/disconnect cycles (FIN, RST, stall, mid-event, mid-request), then
    the leak check: subscribers, Trio tasks and RSS back where they started."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "tests.soak", "--cycles", "100000", *session.posargs)


@nox.session
def loadtest(session: nox.Session) -> None:
    """`trio-sse loadtest`: 10,000 connections with churn against a local `trio-sse serve`.

    A demonstration, not a test (minutes on a 2-core machine); options after ``--``
    replace the defaults in benchmarks/loadtest_serve.py.
    """
    session.install("-e", ".[test]")
    session.run("python", "benchmarks/loadtest_serve.py", *session.posargs, env={"PYTHONPATH": "."})
