"""What every run does before and after its phases: resolve, publish, close the record.

Shared by the one-process run (:mod:`._single`) and the parent of ``--processes N``
(:mod:`._parent`).
"""

from __future__ import annotations

import resource
import time
import uuid
from collections import Counter
from dataclasses import dataclass

from ..errors import LoadTestError
from ..file_limit import raise_open_file_limit
from ._board import SeqBoard
from ._connection import Address, resolve
from ._http import Target, parse_url
from ._options import LoadTestOptions
from ._publisher import Publisher
from ._record import RunRecord
from ._stats import Histogram
from ._subscribers import check_source_addresses
from ._tally import Tally

__all__ = [
    "Addresses",
    "check_file_limit",
    "cpu_seconds",
    "finish_record",
    "make_publisher",
    "new_record",
    "resolve_all",
]


@dataclass(frozen=True, slots=True)
class Addresses:
    """The run's targets, resolved once."""

    target: Target
    stream: Address
    publish_target: Target
    publish: Address
    stats: Address
    metrics: Address


async def resolve_all(options: LoadTestOptions) -> Addresses:
    """Resolve every host the run talks to, and check the source addresses against them.

    Raises:
        LoadTestError: A host that does not resolve; a source address this machine
            cannot bind, or of another family than the server's.
    """
    target = parse_url(options.url)
    publish_target = parse_url(options.publish_url or options.url)
    try:
        stream = await resolve(target)
        publish = await resolve(publish_target)
        stats = await resolve(options.stats_target())
        metrics = await resolve(options.metrics_target())
    except OSError as exc:
        raise LoadTestError(f"cannot resolve a host: {exc}") from None
    try:
        check_source_addresses(options.source_addresses, stream.family)
    except ValueError as exc:
        raise LoadTestError(str(exc)) from None
    return Addresses(target, stream, publish_target, publish, stats, metrics)


def new_record(options: LoadTestOptions) -> RunRecord:
    """An empty record, with this run's identity."""
    return RunRecord(
        options=options,
        started_at=time.time(),
        ledgers=[],
        latency=Histogram(),
        connect_time=Histogram(),
        publish_latency=Histogram(),
        errors=Counter(),
        error_examples={},
        drops=Counter(),
        samples=[],
        run_id=options.run_id or uuid.uuid4().hex,
        part_id=uuid.uuid4().hex,
    )


def make_publisher(
    options: LoadTestOptions, addresses: Addresses, tally: Tally, board: SeqBoard
) -> Publisher:
    """The publisher; each seq goes on the board before its POST is sent."""
    publisher = Publisher(
        addresses.publish,
        addresses.publish_target,
        rate=options.publish_rate,
        payload=options.payload,
        on_error=tally.error,
        publish_format=options.publish_format,
        template=options.body_template(),
        payload_as=options.payload_as,
        headers=options.publish_headers,
        timeout=options.publish_timeout,
        on_assign=board.set_published,
    )
    tally.excuse_failed(publisher.failed)
    return publisher


def finish_record(record: RunRecord, publisher: Publisher | None, tally: Tally) -> None:
    """The publisher's outcome, who received what, and this process's own resources."""
    if publisher is not None:
        record.published = publisher.assigned
        record.published_ok = publisher.acked
        record.failed_seqs = publisher.failed
        record.publishes = publisher.records
        record.publish_latency = publisher.latency
    record.received_by = tally.received_by
    record.made_failed_seqs = {s for s in record.failed_seqs if s in record.received_by}
    record.max_rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    record.cpu_seconds = cpu_seconds()


def cpu_seconds() -> float:
    """This process's CPU time so far, user and system, in seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def check_file_limit(options: LoadTestOptions) -> None:
    """Raise this process's soft open-file limit, and refuse a run that cannot fit in it.

    Raises:
        LoadTestError: Too few file descriptors for this process's share.
    """
    needed = options.file_descriptors_needed()
    limit = raise_open_file_limit()
    if limit.soft < needed:
        share = "" if options.processes == 1 else f" ({options.processes} processes)"
        raise LoadTestError(
            f"{options.connections} connections{share} need about {needed} file descriptors "
            f"per process, but this process may open {limit.soft} (hard limit {limit.hard}). "
            "Raise the hard limit (as root: `ulimit -Hn 65536` in the shell that starts it, "
            "LimitNOFILE= in a systemd unit, or nofile in /etc/security/limits.conf), lower "
            "--connections, or raise --processes."
        )
