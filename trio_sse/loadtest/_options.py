"""What a load test runs: :class:`LoadTestOptions`, validated when constructed."""

from __future__ import annotations

import enum
import ipaddress
import json
import math
from dataclasses import dataclass, field, fields
from typing import Final

from ._connection import DropMethod
from ._http import Target, parse_url
from ._publisher import (
    PAYLOAD_PLACEHOLDER,
    PUBLISH_TIMEOUT,
    PUBLISH_WORKERS,
    PayloadForm,
    PublishFormat,
)
from ._sources import parse_gauge, parse_json_path

__all__ = ["LoadTestOptions", "Thresholds", "parse_source_addresses"]

# Processes at most: one per core is the point, and each holds its own share of
# sockets and a pipe to the parent.
MAX_PROCESSES: Final = 64
# Addresses one --source-address range may name (a /24 and a bit, on loopback).
MAX_SOURCE_ADDRESSES: Final = 256

# File descriptors beside the streams: publisher and /stats sockets, stdio, the
# Trio run's own (epoll, wakeup socketpair), the chart file; generous on purpose.
_SPARE_FDS: Final = 64


class Threshold(enum.Enum):
    """A figure a CI run may bound; the value is its CLI flag's name (``--max-...``)."""

    P99 = "max-p99"
    LOST = "max-lost"
    UNDELIVERED = "max-undelivered"
    DUPLICATED = "max-duplicated"
    ERRORS = "max-errors"
    PUBLISH_FAILURES = "max-publish-failures"
    CONNECT_TIME = "max-connect-time"
    RECONNECT_TIME = "max-reconnect-time"
    CLEANUP_TIME = "max-cleanup-time"


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Upper bounds a run must stay within (``None``: not checked); a breach exits 5.

    Attributes:
        max_p99: Delivery latency p99, seconds.
        max_lost: Events lost (a later one arrived), over all subscribers.
        max_undelivered: Events still missing at the close, over all subscribers.
        max_duplicated: Events received twice, over all subscribers.
        max_errors: Connection errors (connects and streams), all kinds.
        max_publish_failures: Publishes refused or unanswered.
        max_connect_time: Connect-to-response-head p99, seconds.
        max_reconnect_time: Drop-to-resumed-response-head p99, seconds.
        max_cleanup_time: Seconds from the close until the server's count is back to
            its baseline.
    """

    max_p99: float | None = None
    max_lost: int | None = None
    max_undelivered: int | None = None
    max_duplicated: int | None = None
    max_errors: int | None = None
    max_publish_failures: int | None = None
    max_connect_time: float | None = None
    max_reconnect_time: float | None = None
    max_cleanup_time: float | None = None

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if value is not None and not value >= 0:
                raise ValueError(f"{item.name} must be >= 0, got {value}")

    def items(self) -> list[tuple[Threshold, float]]:
        """The bounds given, each with its :class:`Threshold`."""
        return [
            (Threshold("max-" + item.name[4:].replace("_", "-")), getattr(self, item.name))
            for item in fields(self)
            if getattr(self, item.name) is not None
        ]


@dataclass(frozen=True, slots=True)
class LoadTestOptions:
    """What to run; the CLI's options (see ``trio-sse loadtest --help``).

    Attributes:
        is_publishing: False: publish nothing; the server emits events of its own,
            judged by their ids (see :mod:`trio_sse.loadtest._ids`).
        publish_format: The publish body's content type.
        publish_body: The body template, with :data:`PAYLOAD_PLACEHOLDER` where the
            payload goes; ``None``: the format's default (``{"data": {payload}}``,
            ``data={payload}`` or ``{payload}``).
        payload_as: In a JSON body, the payload as a JSON object or as a string.
        publish_headers: Extra request headers on every publish (e.g. a token).
        timestamp_path: With ``is_publishing`` False, where the event data (JSON)
            carries the time it was sent; ``None``: no latency is measured.
        stats_path: The JSON path to the subscriber count in ``stats_url``'s answer.
        metrics_url: A Prometheus text endpoint (default ``/metrics`` on the server).
        metrics_gauge: The gauge counting subscribers there (``name`` or
            ``name{label="value"}``); when given, it is the verdict's source.
        server_pid: The server's process on this machine; when given, its open
            sockets on the stream's port are the verdict's source.
        publish_timeout: Seconds a publish waits for its answer; past it the publish
            counts as failed (the server may still make it: see the report's
            ``publishes``).
        thresholds: Bounds a CI run must stay within.

    Raises:
        ValueError: An option out of range (in the constructor).
    """

    url: str
    connections: int = 100
    duration: float = 10.0
    ramp: float = 500.0
    publish_rate: float = 1.0
    publish_url: str | None = None
    payload: int = 64
    churn: float = 0.0
    drop: tuple[DropMethod, ...] = (DropMethod.FIN,)
    stall_for: float = 5.0
    drain_timeout: float = 5.0
    clean_timeout: float = 30.0
    connect_timeout: float = 30.0
    publish_timeout: float = PUBLISH_TIMEOUT
    max_connecting: int = 200
    stats_url: str | None = None
    is_publishing: bool = True
    publish_format: PublishFormat = PublishFormat.JSON
    publish_body: str | None = None
    payload_as: PayloadForm = PayloadForm.OBJECT
    publish_headers: tuple[tuple[str, str], ...] = ()
    timestamp_path: str | None = None
    stats_path: str = "subscribers"
    metrics_url: str | None = None
    metrics_gauge: str | None = None
    server_pid: int | None = None
    thresholds: Thresholds = field(default_factory=Thresholds)
    processes: int = 1
    source_addresses: tuple[str, ...] = ()
    run_id: str | None = None

    def __post_init__(self) -> None:
        if self.connections < 1:
            raise ValueError(f"connections must be >= 1, got {self.connections}")
        for name in ("duration", "publish_rate", "churn", "stall_for", "drain_timeout"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("ramp", "clean_timeout", "connect_timeout", "publish_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.max_connecting < 1:
            raise ValueError(f"max_connecting must be >= 1, got {self.max_connecting}")
        if self.payload < 0:
            raise ValueError(f"payload must be >= 0, got {self.payload}")
        if not self.drop:
            raise ValueError("drop needs at least one method")
        if not 1 <= self.processes <= MAX_PROCESSES:
            raise ValueError(f"processes must be in 1..{MAX_PROCESSES}, got {self.processes}")
        if self.processes > self.connections:
            raise ValueError(
                f"processes ({self.processes}) must not exceed connections ({self.connections})"
            )
        families = {ipaddress.ip_address(a).version for a in self.source_addresses}
        if len(families) > 1:
            raise ValueError("source addresses must all be IPv4 or all IPv6, not both")
        if self.run_id is not None and not (0 < len(self.run_id) <= 128):
            raise ValueError("run_id must be 1 to 128 characters")
        self._check_publish_body()
        self._check_sources()

    def _check_sources(self) -> None:
        for url in (self.url, self.publish_url, self.stats_url, self.metrics_url):
            if url is not None:
                parse_url(url)
        for name, value in self.publish_headers:
            if not name or any(c in name + value for c in "\r\n\x00") or ":" in name:
                raise ValueError(f"bad publish header {name!r}: {value!r}")
        parse_json_path(self.stats_path)
        if self.timestamp_path is not None:
            parse_json_path(self.timestamp_path)
        if self.metrics_gauge is not None:
            parse_gauge(self.metrics_gauge)
        if self.server_pid is not None and self.server_pid < 1:
            raise ValueError(f"server_pid must be >= 1, got {self.server_pid}")
        if self.server_pid is not None and self.metrics_gauge is not None:
            raise ValueError("give one verdict source: server_pid or metrics_gauge, not both")

    def _check_publish_body(self) -> None:
        template = self.body_template()
        if PAYLOAD_PLACEHOLDER not in template:
            raise ValueError(f"publish_body must contain {PAYLOAD_PLACEHOLDER}: {template!r}")
        if self.publish_format is PublishFormat.JSON:
            try:
                json.loads(template.replace(PAYLOAD_PLACEHOLDER, '"x"'))
            except ValueError:
                raise ValueError(
                    f"publish_body is not JSON once {PAYLOAD_PLACEHOLDER} is replaced by a "
                    f"value: {template!r}"
                ) from None

    def body_template(self) -> str:
        """``publish_body``, or the format's default."""
        if self.publish_body is not None:
            return self.publish_body
        return self.publish_format.default_template

    def stats_target(self) -> Target:
        """``stats_url``, or ``/stats`` on the stream's server."""
        if self.stats_url is not None:
            return parse_url(self.stats_url)
        return parse_url(self.url).with_path("/stats")

    def metrics_target(self) -> Target:
        """``metrics_url``, or ``/metrics`` on the stream's server."""
        if self.metrics_url is not None:
            return parse_url(self.metrics_url)
        return parse_url(self.url).with_path("/metrics")

    def file_descriptors_needed(self) -> int:
        """Sockets at the peak in one process: its streams, stalled sockets held, publishers,
        spares (with ``processes`` > 1, one worker's share)."""
        stall_share = self.drop.count(DropMethod.STALL) / len(self.drop)
        # A dropped connection may reconnect before its old socket's close completes.
        held = math.ceil(self.churn * stall_share * self.stall_for) + math.ceil(self.churn)
        share = math.ceil(self.connections / self.processes)
        return share + math.ceil(held / self.processes) + PUBLISH_WORKERS + _SPARE_FDS


def parse_source_addresses(text: str) -> list[str]:
    """Parse one ``--source-address``: an IP address, or a range ``A-B`` (``127.0.0.2-9``
    or ``127.0.0.2-127.0.0.9``), inclusive.

    Raises:
        ValueError: Not an address or a range, a range backwards, or over
            :data:`MAX_SOURCE_ADDRESSES` addresses.
    """
    first_text, dash, last_text = text.strip().partition("-")
    try:
        first = ipaddress.ip_address(first_text)
    except ValueError:
        raise ValueError(f"not an IP address: {first_text!r}") from None
    if not dash:
        return [str(first)]
    try:
        if last_text.isdigit() and first.version == 4:
            # The last octet only: 127.0.0.2-9.
            last = ipaddress.ip_address(first_text.rsplit(".", 1)[0] + "." + last_text)
        else:
            last = ipaddress.ip_address(last_text)
    except ValueError:
        raise ValueError(f"not an address range: {text!r}") from None
    if last.version != first.version or int(last) < int(first):
        raise ValueError(f"not an address range (A-B with A <= B): {text!r}")
    count = int(last) - int(first) + 1
    if count > MAX_SOURCE_ADDRESSES:
        raise ValueError(
            f"{text!r} names {count} addresses; at most {MAX_SOURCE_ADDRESSES} per range"
        )
    return [str(first + i) for i in range(count)]
