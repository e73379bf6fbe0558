"""``run_loadtest``: one run, in this process or split over worker processes.

The run itself, phase by phase, is in :mod:`._single` (one process) and
:mod:`._parent` (``processes`` > 1: the parent publishes and judges, each worker of
:mod:`._worker` holds a share of the streams, and their ledgers are merged into one
record by :mod:`._merge`). The pieces both use: :mod:`._subscribers` (the streams,
the ramp, the churn, the drain), :mod:`._tally` (what arrived), :mod:`._monitor` (the
timeline and the verdict source), :mod:`._board` (the publisher's progress, shared).
"""

from __future__ import annotations

from ._options import LoadTestOptions
from ._parent import run_parent
from ._record import RunRecord, SampleCallback
from ._setup import check_file_limit
from ._single import run_single

__all__ = ["run_loadtest"]


async def run_loadtest(
    options: LoadTestOptions, *, on_sample: SampleCallback | None = None
) -> RunRecord:
    """Run one load test (see :mod:`._single` for its phases).

    Raises this process's soft open-file limit to its hard limit first. With
    ``options.processes`` > 1, the streams are split over that many worker processes
    (see :mod:`._parent`); the record returned is their merge, as one process's.

    Args:
        options: What to run.
        on_sample: Called with each one-second sample as it is taken (live progress).

    Returns:
        The measurements; :func:`trio_sse.loadtest.build_report` summarises them.

    Raises:
        LoadTestError: The run cannot start (too few file descriptors, a host that
            does not resolve, a source address that cannot be bound, a verdict source
            that does not answer with a count), or a worker process died.
    """
    # Checked before anything is allocated per connection.
    check_file_limit(options)
    if options.processes > 1:
        return await run_parent(options, on_sample)
    return await run_single(options, on_sample)
