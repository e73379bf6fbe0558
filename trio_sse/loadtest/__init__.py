"""A load tester for SSE servers: thousands of raw-socket streams, churn, and a leak verdict.

``trio-sse loadtest URL`` (see :mod:`trio_sse.cli._loadtest`) runs it from the
command line. By default it speaks the reference app's HTTP contract: ``GET`` the
stream URL (resuming with ``Last-Event-ID``), ``POST`` JSON ``{"data": ...}`` to
publish, and ``GET /stats`` for a ``subscribers`` count. Any other server works too:
the publish body is a template in JSON, form or text (or nothing is published and the
server's own ids are judged), and the subscriber count can come from any JSON path, a
Prometheus gauge, or the server's process (:mod:`._sources`). The report's schema is
:class:`Report` (``docs/loadtest-report.md``).

Built on :mod:`trio_sse.protocol` and Trio sockets only: it never imports the
broker, the web layer or an HTTP client library.
"""

from ..errors import LoadTestError as LoadTestError
from ._chart import check_chart_path as check_chart_path
from ._chart import write_chart as write_chart
from ._connection import DropMethod as DropMethod
from ._connection import ErrorKind as ErrorKind
from ._options import LoadTestOptions as LoadTestOptions
from ._options import Threshold as Threshold
from ._options import Thresholds as Thresholds
from ._publisher import PayloadForm as PayloadForm
from ._publisher import PublishFormat as PublishFormat
from ._publisher import PublishOutcome as PublishOutcome
from ._publisher import PublishRecord as PublishRecord
from ._record import Phase as Phase
from ._record import RunRecord as RunRecord
from ._record import Sample as Sample
from ._record import SampleCallback as SampleCallback
from ._report import EXIT_BREACHED as EXIT_BREACHED
from ._report import EXIT_CLEAN as EXIT_CLEAN
from ._report import EXIT_INCONCLUSIVE as EXIT_INCONCLUSIVE
from ._report import EXIT_LEAKING as EXIT_LEAKING
from ._report import EXIT_UNKNOWN as EXIT_UNKNOWN
from ._report import SCHEMA_VERSION as SCHEMA_VERSION
from ._report import build_report as build_report
from ._report import exit_status as exit_status
from ._report import format_summary as format_summary
from ._report import write_report as write_report
from ._run import run_loadtest as run_loadtest
from ._schema import Report as Report
from ._sources import SourceKind as SourceKind

__all__ = [
    "EXIT_BREACHED",
    "EXIT_CLEAN",
    "EXIT_INCONCLUSIVE",
    "EXIT_LEAKING",
    "EXIT_UNKNOWN",
    "SCHEMA_VERSION",
    "DropMethod",
    "ErrorKind",
    "LoadTestError",
    "LoadTestOptions",
    "PayloadForm",
    "Phase",
    "PublishFormat",
    "PublishOutcome",
    "PublishRecord",
    "Report",
    "RunRecord",
    "Sample",
    "SampleCallback",
    "SourceKind",
    "Threshold",
    "Thresholds",
    "build_report",
    "check_chart_path",
    "exit_status",
    "format_summary",
    "run_loadtest",
    "write_chart",
    "write_report",
]
