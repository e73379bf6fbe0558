"""The exceptions trio_sse raises.

Every exception the library raises on purpose derives from :class:`SSEError`, so
``except trio_sse.SSEError`` catches them all. Where Python already has a fitting
built-in, the error also derives from it (an invalid event is a ``ValueError``)::

    SSEError
    ├── InvalidEventError (ValueError)    a ServerSentEvent field would break the framing
    ├── InvalidTopicError (ValueError)    a topic name outside [A-Za-z0-9._~-]{1,128}
    ├── AuthError                         a request without the right token (401 or 403)
    ├── ProtocolError                     the peer sent something the decoder refuses
    │   └── EventTooLargeError            a line or event over the decoder's limit
    ├── LoadTestError                     trio-sse loadtest cannot start (fds, URL, /stats)
    ├── BrokerError
    │   ├── BrokerClosedError             subscribe or publish after the broker closed
    │   └── BrokerUnavailableError        the backplane (e.g. Redis) cannot be reached
    └── EventSourceError                  the client (trio_sse.client) lost or gave up a stream
        ├── ConnectionLostError           an attempt failed or a stream ended; it reconnects
        ├── BadResponseError              not 200 + text/event-stream; it stops for good
        └── RetriesExhaustedError         max_retries reconnects in a row failed; it stops

This module imports nothing but the standard library, so every layer can use it.
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "BadResponseError",
    "BrokerClosedError",
    "BrokerError",
    "BrokerUnavailableError",
    "ConnectionLostError",
    "EventSourceError",
    "EventTooLargeError",
    "InvalidEventError",
    "InvalidTopicError",
    "LoadTestError",
    "ProtocolError",
    "RetriesExhaustedError",
    "SSEError",
]


class SSEError(Exception):
    """Root of every exception trio_sse raises on purpose."""


class InvalidEventError(SSEError, ValueError):
    """A :class:`ServerSentEvent` field holds a value that would corrupt the stream.

    Raised at construction: a CR or LF in ``event`` or ``id`` would let one field
    inject others (an ``id`` that smuggles ``data:`` lines), so such values are
    rejected, never stripped.
    """


class InvalidTopicError(SSEError, ValueError):
    """A topic name is empty, too long, or has characters outside ``[A-Za-z0-9._~-]``."""


class ProtocolError(SSEError):
    """The remote peer sent a stream the decoder refuses (the peer's fault, not ours)."""


class EventTooLargeError(ProtocolError):
    """A line or an event grew past the decoder's configured maximum size."""


class AuthError(SSEError):
    """A request lacks the credentials for what it asks (see :mod:`trio_sse.web`).

    Attributes:
        status: 401 (no token where one is needed, or an invalid or expired one) or
            403 (a valid token that does not cover the topic).
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class LoadTestError(SSEError):
    """A load test (:mod:`trio_sse.loadtest`) cannot start: a URL it cannot use, a server
    or ``/stats`` that does not answer, or too few file descriptors. The message says
    what to do."""


class BrokerError(SSEError):
    """Base class for broker failures."""


class BrokerClosedError(BrokerError):
    """The broker was closed (the server is shutting down); it takes no new work."""


class BrokerUnavailableError(BrokerError):
    """The broker's backing store cannot be reached; nothing was published."""


class EventSourceError(SSEError):
    """Base class for the failures of a client event source (:mod:`trio_sse.client`)."""


class ConnectionLostError(EventSourceError):
    """A connection attempt failed, or an open stream ended, broke or went idle.

    Never raised by itself: the event source reconnects, and passes this to its
    ``on_error`` callback so a UI can show it. It is the ``__cause__`` of
    :class:`RetriesExhaustedError`.
    """


class BadResponseError(EventSourceError):
    """The server answered, but not with an event stream; the source does not reconnect.

    "Any other HTTP response code not listed here, as well as the cancelation of the
    fetch algorithm by the user agent [...] must cause the user agent to fail the
    connection" (WHATWG HTML 9.2.3). Also raised for a redirect loop.

    Attributes:
        status_code: The final response's status, or ``None`` if there was none.
        content_type: Its ``Content-Type`` header, or ``None`` if absent.
    """

    def __init__(
        self, message: str, *, status_code: int | None = None, content_type: str | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.content_type = content_type


class RetriesExhaustedError(EventSourceError):
    """``max_retries`` reconnect attempts in a row failed; the source gave up.

    Its ``__cause__`` is the last :class:`ConnectionLostError`.
    """
