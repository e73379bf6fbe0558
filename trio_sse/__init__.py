"""trio_sse: Server-Sent Events for Trio.

Layers, each importing only the ones before it:

* :mod:`trio_sse.protocol`: events, encoder and decoder (sans-I/O, standard library only)
* :mod:`trio_sse.broker`: topics, fan-out and replay (Trio only)
* :mod:`trio_sse.web`: SSE responses for Quart-Trio
* :mod:`trio_sse.client`: an ``EventSource`` for Trio, on httpx (beside broker and web,
  never importing them)
* :mod:`trio_sse.redis`: a Redis Streams broker shared by processes and hosts (on the
  broker layer; needs the ``redis`` extra, and is never imported from here)
* :mod:`trio_sse.hub`, :mod:`trio_sse.app`, :mod:`trio_sse.server`, :mod:`trio_sse.cli`:
  the reference routes as an extension for any Quart-Trio app, the reference app, Hypercorn
  serving, and the ``trio-sse`` command

The protocol names and every exception are imported eagerly. The rest load on first
use, so ``import trio_sse`` stays free of Trio and Quart for sans-I/O users.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import AuthError as AuthError
from .errors import BadResponseError as BadResponseError
from .errors import BrokerClosedError as BrokerClosedError
from .errors import BrokerError as BrokerError
from .errors import BrokerUnavailableError as BrokerUnavailableError
from .errors import ConnectionLostError as ConnectionLostError
from .errors import EventSourceError as EventSourceError
from .errors import EventTooLargeError as EventTooLargeError
from .errors import InvalidEventError as InvalidEventError
from .errors import InvalidTopicError as InvalidTopicError
from .errors import LoadTestError as LoadTestError
from .errors import ProtocolError as ProtocolError
from .errors import RetriesExhaustedError as RetriesExhaustedError
from .errors import SSEError as SSEError
from .protocol import ServerSentEvent as ServerSentEvent
from .protocol import encode_comment as encode_comment
from .protocol import encode_retry as encode_retry

if TYPE_CHECKING:
    from .app import create_app as create_app
    from .broker import Broker as Broker
    from .broker import BrokerStatistics as BrokerStatistics
    from .broker import CloseReason as CloseReason
    from .broker import MemoryBroker as MemoryBroker
    from .broker import Subscription as Subscription
    from .client import EventSource as EventSource
    from .client import ReadyState as ReadyState
    from .client import ReconnectPolicy as ReconnectPolicy
    from .client import open_event_source as open_event_source
    from .hub import EventHub as EventHub
    from .server import serve as serve
    from .web import event_stream as event_stream
    from .web import last_event_id_of as last_event_id_of

__version__ = "0.1.0"

_LAZY = {
    "Broker": "broker",
    "BrokerStatistics": "broker",
    "CloseReason": "broker",
    "MemoryBroker": "broker",
    "Subscription": "broker",
    "EventSource": "client",
    "ReadyState": "client",
    "ReconnectPolicy": "client",
    "open_event_source": "client",
    "create_app": "app",
    "EventHub": "hub",
    "event_stream": "web",
    "last_event_id_of": "web",
    "serve": "server",
}

__all__ = [
    "AuthError",
    "BadResponseError",
    "Broker",
    "BrokerClosedError",
    "BrokerError",
    "BrokerStatistics",
    "BrokerUnavailableError",
    "CloseReason",
    "ConnectionLostError",
    "EventHub",
    "EventSource",
    "EventSourceError",
    "EventTooLargeError",
    "InvalidEventError",
    "InvalidTopicError",
    "LoadTestError",
    "MemoryBroker",
    "ProtocolError",
    "ReadyState",
    "ReconnectPolicy",
    "RetriesExhaustedError",
    "SSEError",
    "ServerSentEvent",
    "Subscription",
    "create_app",
    "encode_comment",
    "encode_retry",
    "event_stream",
    "last_event_id_of",
    "open_event_source",
    "serve",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'trio_sse' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
