"""What a load test runs: :class:`LoadTestOptions`, validated when constructed."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from ._connection import DropMethod
from ._http import Target, parse_url
from ._publisher import PUBLISH_WORKERS

__all__ = ["LoadTestOptions"]

# File descriptors beside the streams: publisher and /stats sockets, stdio, the
# Trio run's own (epoll, wakeup socketpair), the chart file; generous on purpose.
_SPARE_FDS: Final = 64


@dataclass(frozen=True, slots=True)
class LoadTestOptions:
    """What to run; the CLI's options (see ``trio-sse loadtest --help``).

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
    max_connecting: int = 200
    stats_url: str | None = None

    def __post_init__(self) -> None:
        if self.connections < 1:
            raise ValueError(f"connections must be >= 1, got {self.connections}")
        for name in ("duration", "publish_rate", "churn", "stall_for", "drain_timeout"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("ramp", "clean_timeout", "connect_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.max_connecting < 1:
            raise ValueError(f"max_connecting must be >= 1, got {self.max_connecting}")
        if self.payload < 0:
            raise ValueError(f"payload must be >= 0, got {self.payload}")
        if not self.drop:
            raise ValueError("drop needs at least one method")
        for url in (self.url, self.publish_url, self.stats_url):
            if url is not None:
                parse_url(url)

    def stats_target(self) -> Target:
        """``stats_url``, or ``/stats`` on the stream's server."""
        if self.stats_url is not None:
            return parse_url(self.stats_url)
        return parse_url(self.url).with_path("/stats")

    def file_descriptors_needed(self) -> int:
        """Sockets at the peak: streams, stalled sockets held, publishers, spares."""
        stall_share = self.drop.count(DropMethod.STALL) / len(self.drop)
        # A dropped connection may reconnect before its old socket's close completes.
        held = math.ceil(self.churn * stall_share * self.stall_for) + math.ceil(self.churn)
        return self.connections + held + PUBLISH_WORKERS + _SPARE_FDS
