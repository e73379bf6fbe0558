"""A load tester for SSE servers: thousands of raw-socket streams, churn, and a leak verdict.

``trio-sse loadtest URL`` (see :mod:`trio_sse._cli_loadtest`) runs it from the
command line. It speaks the reference app's HTTP contract, which any server can
implement: ``GET`` the stream URL (resuming with ``Last-Event-ID``), ``POST`` JSON
``{"data": ...}`` to publish, and ``GET /stats`` for a ``subscribers`` count.

Built on :mod:`trio_sse.protocol` and Trio sockets only: it never imports the
broker, the web layer or an HTTP client library.
"""

from .._errors import LoadTestError as LoadTestError
from ._chart import check_chart_path as check_chart_path
from ._chart import write_chart as write_chart
from ._connection import DropMethod as DropMethod
from ._options import LoadTestOptions as LoadTestOptions
from ._record import RunRecord as RunRecord
from ._record import Sample as Sample
from ._record import SampleCallback as SampleCallback
from ._report import build_report as build_report
from ._report import exit_status as exit_status
from ._report import format_summary as format_summary
from ._report import write_report as write_report
from ._run import run_loadtest as run_loadtest

__all__ = [
    "DropMethod",
    "LoadTestError",
    "LoadTestOptions",
    "RunRecord",
    "Sample",
    "SampleCallback",
    "build_report",
    "check_chart_path",
    "exit_status",
    "format_summary",
    "run_loadtest",
    "write_chart",
    "write_report",
]
