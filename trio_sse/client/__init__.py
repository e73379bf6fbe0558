"""A Server-Sent Events client for Trio, with the semantics of a browser's ``EventSource``.

::

    async with trio_sse.client.open_event_source(url, idle_timeout=45) as source:
        async for event in source:
            print(event.type, event.data, event.last_event_id)

Several topics on one stream (``GET /events?topic=a&topic=b`` of the reference app)::

    url = trio_sse.client.topics_url("http://127.0.0.1:8000", ["news", "chat"])
    async with trio_sse.client.open_event_source(url) as source:
        async for event in source:
            topic, kind = trio_sse.client.split_event_type(event.type)

It follows WHATWG HTML 9.2: a GET with ``Accept: text/event-stream``; reconnection
after a network error or the end of the stream, no sooner than the server's
``retry`` (3 s by default), with ``Last-Event-ID``; a 204 ends the iteration; any
other status, or another Content-Type, is an error. On top of that: exponential
back-off with jitter after failed attempts, an idle timeout, and ``max_retries``.
Parsing is done by the sans-I/O :class:`~trio_sse.protocol.Decoder`; HTTP by httpx.

No background task: connections are made and read inside ``async for``, in the
caller's task, so cancelling that task cancels everything.

Exceptions. No httpx, httpcore or trio exception escapes (other than
``trio.Cancelled``): network errors are handled by reconnecting, and reported to
``on_error`` as :class:`~trio_sse.ConnectionLostError` (chained to the httpx error
for debugging). What an ``async for`` over a source can raise::

    SSEError
    ├── EventSourceError
    │   ├── BadResponseError          status not 200/204, wrong Content-Type, redirect loop
    │   └── RetriesExhaustedError     max_retries reconnects in a row failed
    │       (__cause__: ConnectionLostError, itself never raised)
    └── ProtocolError
        └── EventTooLargeError        an event over max_event_size

``open_event_source`` itself raises ``ValueError`` for bad arguments.

The client imports httpx and Trio, never the broker or web layers.
"""

from ..errors import BadResponseError as BadResponseError
from ..errors import ConnectionLostError as ConnectionLostError
from ..errors import EventSourceError as EventSourceError
from ..errors import RetriesExhaustedError as RetriesExhaustedError
from ..protocol import MessageEvent as MessageEvent
from ._reconnect import DEFAULT_MAX_DELAY as DEFAULT_MAX_DELAY
from ._reconnect import DEFAULT_MIN_BACKOFF as DEFAULT_MIN_BACKOFF
from ._reconnect import ReconnectPolicy as ReconnectPolicy
from ._source import DEFAULT_RETRY as DEFAULT_RETRY
from ._source import EventSource as EventSource
from ._source import ReadyState as ReadyState
from ._source import open_event_source as open_event_source
from ._topics import split_event_type as split_event_type
from ._topics import topics_url as topics_url

__all__ = [
    "DEFAULT_MAX_DELAY",
    "DEFAULT_MIN_BACKOFF",
    "DEFAULT_RETRY",
    "BadResponseError",
    "ConnectionLostError",
    "EventSource",
    "EventSourceError",
    "MessageEvent",
    "ReadyState",
    "ReconnectPolicy",
    "RetriesExhaustedError",
    "open_event_source",
    "split_event_type",
    "topics_url",
]
