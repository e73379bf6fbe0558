"""What a stream reports about itself: why it ended, and how late its writes were."""

from __future__ import annotations

import enum
from typing import Protocol

from ..broker import CloseReason

__all__ = ["StreamEnd", "StreamObserver"]


class StreamEnd(enum.Enum):
    """Why a stream ended: in its log line, and as the ``reason`` label in ``/metrics``."""

    CLIENT_CLOSED = "client_closed"
    """The client went away (FIN, RST, or an HTTP/2 stream reset)."""

    SLOW_CONSUMER = "slow_consumer"
    """Its queue filled up; the client resumes from history when it reconnects."""

    SHUTDOWN = "shutdown"
    """The server is shutting down (its broker was closed, or its drain window ended the stream)."""

    MAX_AGE = "max_age"
    """The stream reached its age limit (``max_stream_age``); the client reconnects."""

    AUTH_EXPIRED = "auth_expired"
    """The token that opened the stream expired; the client must bring a fresh one."""

    UNAVAILABLE = "unavailable"
    """The broker's backplane could not serve the subscription (e.g. Redis is down)."""

    ENDED = "ended"
    """The body ended without any of the above (a subscription closed for no reason given)."""

    ERROR = "error"
    """An exception ended the stream; the log line names it."""

    @classmethod
    def closed_by_broker(cls, reason: CloseReason) -> StreamEnd:
        """The stream end that a broker's :class:`~trio_sse.broker.CloseReason` means."""
        return cls.SLOW_CONSUMER if reason is CloseReason.SLOW_CONSUMER else cls.SHUTDOWN


class StreamObserver(Protocol):
    """What a stream reports about itself, e.g. to :class:`~trio_sse.web.Metrics`."""

    def stream_closed(self, reason: StreamEnd) -> None:
        """A stream ended, for ``reason``."""

    def written(self, seconds: float) -> None:
        """A batch of live events went to the server ``seconds`` after the oldest was published."""
