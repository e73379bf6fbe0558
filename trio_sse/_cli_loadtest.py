"""``trio-sse loadtest``: run a load test, show it live, print the summary, write the files.

Live progress goes to stderr, one line redrawn each second, only when stderr is a
terminal and ``--quiet`` is not given. The summary table goes to stdout at the end.

Exit status: 0 when the server cleaned up every subscriber (``clean``); 3 when it
kept ghost subscribers past ``--clean-timeout`` (``leaking``); 1 when the run could
not start or ``/stats`` stopped answering (the verdict is unknown), with one line on
stderr; 130 on Ctrl-C.
"""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

import trio

from ._errors import LoadTestError
from .loadtest import (
    DropMethod,
    LoadTestOptions,
    build_report,
    check_chart_path,
    exit_status,
    format_summary,
    run_loadtest,
    write_chart,
    write_report,
)
from .loadtest._progress import Progress

__all__ = ["loadtest", "parse_drop"]


def parse_drop(text: str) -> tuple[DropMethod, ...]:
    """Parse ``--drop``: comma-separated ``fin``, ``rst``, ``stall``; ``mix`` is all three.

    Raises:
        ValueError: An unknown or empty method.
    """
    methods: list[DropMethod] = []
    for part in text.split(","):
        name = part.strip().lower()
        if name == "mix":
            methods += list(DropMethod)
            continue
        try:
            methods.append(DropMethod(name))
        except ValueError:
            raise ValueError(f"unknown drop method {name!r}: use fin, rst, stall or mix") from None
    return tuple(dict.fromkeys(methods))


def loadtest(
    options: LoadTestOptions,
    *,
    out: TextIO,
    err: TextIO,
    report_path: Path | None = None,
    chart_path: Path | None = None,
    is_quiet: bool = False,
) -> int:
    """Run ``options``; print progress to ``err`` (a terminal only) and the summary to ``out``.

    Returns:
        The exit status (see the module docs).
    """
    # Refuse now what would fail after the run, not after minutes of load.
    for path in (report_path, chart_path):
        if path is not None and not path.parent.is_dir():
            err.write(f"trio-sse loadtest: no directory {str(path.parent)!r} for {str(path)!r}\n")
            return 1
    if chart_path is not None:
        try:
            check_chart_path(chart_path)
        except ValueError as exc:
            err.write(f"trio-sse loadtest: {exc}\n")
            return 1
    progress = (
        None if is_quiet or not err.isatty() else Progress(err, connections=options.connections)
    )
    try:
        record = trio.run(lambda: run_loadtest(options, on_sample=progress))
    except LoadTestError as exc:
        err.write(f"trio-sse loadtest: {exc}\n")
        return 1
    finally:
        if progress is not None:
            progress.finish()
    report = build_report(record)
    out.write(format_summary(report))
    out.flush()
    try:
        if report_path is not None:
            write_report(report, report_path)
        if chart_path is not None:
            write_chart(report, chart_path)
    except OSError as exc:
        err.write(f"trio-sse loadtest: cannot write {exc.filename}: {exc.strerror}\n")
        return 1
    return exit_status(report)
