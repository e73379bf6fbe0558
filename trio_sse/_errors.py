"""The exceptions trio_sse raises.

Every exception the library raises on purpose derives from :class:`SSEError`, so
``except trio_sse.SSEError`` catches them all. Where Python already has a fitting
built-in, the error also derives from it (an invalid event is a ``ValueError``)::

    SSEError
    ├── InvalidEventError (ValueError)    a ServerSentEvent field would break the framing
    ├── InvalidTopicError (ValueError)    a topic name outside [A-Za-z0-9._~-]{1,128}
    ├── ProtocolError                     the peer sent something the decoder refuses
    │   └── EventTooLargeError            a line or event over the decoder's limit
    └── BrokerError
        ├── BrokerClosedError             subscribe or publish after the broker closed
        └── BrokerUnavailableError        the backplane (e.g. Redis) cannot be reached

This module imports nothing but the standard library, so every layer can use it.
"""

from __future__ import annotations

__all__ = [
    "BrokerClosedError",
    "BrokerError",
    "BrokerUnavailableError",
    "EventTooLargeError",
    "InvalidEventError",
    "InvalidTopicError",
    "ProtocolError",
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


class BrokerError(SSEError):
    """Base class for broker failures."""


class BrokerClosedError(BrokerError):
    """The broker was closed (the server is shutting down); it takes no new work."""


class BrokerUnavailableError(BrokerError):
    """The broker's backing store cannot be reached; nothing was published."""
