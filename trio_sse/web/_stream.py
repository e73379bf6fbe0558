"""SSE responses for Quart-Trio: one subscription per response, written in batches.

The structure (see docs/design.md for the task tree):

* The route handler returns ``event_stream(...)``: a Quart ``Response`` whose body is
  an :class:`EventStreamBody`. Nothing is subscribed yet.
* Quart sends the headers, then enters the body (``async with``): ``__aenter__``
  subscribes; ``__aexit__`` unsubscribes, whatever ended the stream.
* Quart iterates the body in the request task: each ``__anext__`` waits for frames
  and returns all that are queued as one chunk, or a heartbeat comment when the
  topic is idle for ``heartbeat`` seconds.
* A client disconnect makes quart-trio cancel the request nursery; the pending
  ``__anext__`` gets ``Cancelled`` within milliseconds and ``__aexit__`` runs.

No task is started per connection: the body is driven by Quart's request task, and
every wait is bounded by a cancel scope inside ``__anext__``, never held across a
``yield`` (this is why it is a class, not an async generator).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Final, Protocol, Self

import quart
import trio
from quart.wrappers.response import ResponseBody

from .._errors import BrokerClosedError, BrokerUnavailableError
from ..broker import Broker, CloseReason, Subscription, validate_topic
from ..protocol import ServerSentEvent, encode_comment, encode_retry
from ._rounds import write_rounds

__all__ = [
    "DEFAULT_HEARTBEAT",
    "SSE_HEADERS",
    "EventStreamBody",
    "StreamObserver",
    "event_stream",
    "last_event_id_of",
]

logger = logging.getLogger("trio_sse.stream")

# Below the 30 to 60 s idle timeouts common in proxies and load balancers, and often
# enough that a vanished client is found within TCP_USER_TIMEOUT plus one interval.
DEFAULT_HEARTBEAT: Final = 15.0

# Hypercorn's trio worker spends ~200 µs of CPU per chunk written, so under load the
# number of writes is the cost. A stream that is sent events faster than it writes them
# waits this long after its round of writes, and whatever is published meanwhile shares
# one write (see EventStreamBody._wait_for_batch). It delays events by at most this
# much more, and only while they come fast; SSE clients (dashboards, chats, progress
# bars) do not notice a quarter of a second. At low rates events are written at once.
DEFAULT_MIN_WRITE_INTERVAL: Final = 0.25

SSE_HEADERS: Final = {
    "Content-Type": "text/event-stream; charset=utf-8",
    # Caches and proxies must not store or merge a live stream.
    "Cache-Control": "no-cache",
    # nginx buffers responses unless told not to; harmless elsewhere.
    "X-Accel-Buffering": "no",
}

# Bounds the wait for a round of writes to end, in windows: it is unbounded otherwise
# when unrelated streams keep writing.
_MAX_WINDOWS: Final = 4

# The part of the window within which an event, coming after a round of writes, means
# events are flowing. A sequential publisher freed by the round's end publishes again
# within milliseconds (tens on a loaded machine); at a few events per second the next
# one comes later than this, and is written at once.
_FLOWING: Final = 0.5

# Batching pays only while writing costs real time: a round of writes shorter than
# this part of the window (25 ms, about 125 writes, by default) leaves the event
# loop mostly idle, so events go out at once.
_BUSY: Final = 0.1

_HEARTBEAT: Final = encode_comment("heartbeat")
_OPENED: Final = encode_comment("stream open")


class StreamObserver(Protocol):
    """What a stream reports about itself, e.g. to :class:`~trio_sse.web.Metrics`."""

    def stream_closed(self, reason: str) -> None:
        """A stream ended: ``client_closed``, ``slow_consumer``, ``auth_expired``, ..."""

    def written(self, seconds: float) -> None:
        """A batch of live events went to the server ``seconds`` after the oldest was published."""


class EventStreamBody(ResponseBody):
    """The body of an SSE response: a subscription that lives exactly as long as the stream.

    Use :func:`event_stream` to build the response; this class is public so that
    its lifecycle can be documented and tested.

    Attributes:
        events_sent: Frames handed to the server for writing (replayed, initial and
            live events; heartbeats not included).
    """

    def __init__(
        self,
        broker: Broker,
        topic: str,
        *,
        last_event_id: str | None,
        heartbeat: float,
        min_write_interval: float,
        prelude: bytes,
        prelude_events: int,
        expires_at: float | None = None,
        observer: StreamObserver | None = None,
    ) -> None:
        self._broker = broker
        self._topic = topic
        self._last_event_id = last_event_id
        self._heartbeat = heartbeat if heartbeat > 0 else math.inf
        self._min_write_interval = min_write_interval
        self._prelude: bytes | None = prelude
        self._prelude_events = prelude_events
        self._stack = AsyncExitStack()
        self._subscription: Subscription | None = None
        self._refused = CloseReason.SHUTDOWN.value  # why there is no subscription
        self._opened_at = 0.0
        self._writing = False  # a chunk of ours is counted in write_rounds()
        self._write_started = 0.0
        self._expires_at = expires_at
        self._deadline = math.inf  # expires_at on Trio's clock, from __aenter__ on
        self._has_expired = False
        self._observer = observer
        self.events_sent = 0

    async def __aenter__(self) -> Self:
        self._opened_at = trio.current_time()
        if self._expires_at is not None:
            self._deadline = self._opened_at + (self._expires_at - time.time())
        self._stack.callback(self._end_write)
        try:
            self._subscription = await self._stack.enter_async_context(
                self._broker.subscribe(self._topic, last_event_id=self._last_event_id)
            )
        except BrokerClosedError:
            # Shutting down between the handler and here: end at once, cleanly, and
            # the client reconnects (to another worker, behind a load balancer).
            self._subscription = None
        except BrokerUnavailableError as exc:
            # The backplane is down and this stream needs it (a replay, or a topic
            # not read here yet). The headers are sent, so a 503 is no longer
            # possible, and EventSource would not retry one anyway: end cleanly, and
            # the client retries after `retry` with the same Last-Event-ID.
            logger.warning("stream refused: topic=%s: %s", self._topic, exc)
            self._subscription = None
            self._refused = "unavailable"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Keep this minimal: the exit stack must always run, or the subscription leaks.
        # Its result is dropped on purpose: a stream never swallows an exception.
        try:
            self._log_close(exc)
        finally:
            await self._stack.__aexit__(exc_type, exc, tb)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> bytes:
        subscription = self._subscription
        prelude, self._prelude = self._prelude, None
        if prelude is not None:
            # The first chunk goes out at once, so clients and proxies see the stream
            # open; it carries any replay too, in the same write.
            self.events_sent += self._prelude_events
            if subscription is not None:
                try:
                    frames = subscription.receive_batch_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    frames = []
                self.events_sent += len(frames)
                prelude = b"".join([prelude, *frames])
            await trio.lowlevel.checkpoint()
            return self._write(prelude)
        if subscription is None:
            raise StopAsyncIteration
        if self._min_write_interval > 0:
            self._end_write()
            await self._wait_for_batch(subscription)
        now = trio.current_time()
        if now >= self._deadline:
            # The token that opened the stream has expired: end it cleanly. The
            # client reconnects, and must then present a fresh token.
            self._has_expired = True
            raise StopAsyncIteration
        with trio.move_on_at(min(now + self._heartbeat, self._deadline)):
            try:
                frames = await subscription.receive_batch()
            except trio.EndOfChannel:
                raise StopAsyncIteration from None
            self.events_sent += len(frames)
            if self._observer is not None:
                self._observer.written(trio.current_time() - subscription.first_queued_at)
            return self._write(b"".join(frames))
        if trio.current_time() >= self._deadline:
            self._has_expired = True
            raise StopAsyncIteration
        return self._write(_HEARTBEAT)

    async def _wait_for_batch(self, subscription: Subscription) -> None:
        """Batching across time: let events queue up after a write, within a bound.

        Quart calls ``__anext__`` once the previous chunk is written, so this starts
        when our write has ended. It waits for the round of writes that ours was part
        of to end (see ``_rounds``), then ``min_write_interval`` more: the publish
        path has that time to itself, and what it publishes meanwhile shares the
        next write. That only happens while events are flowing: an event that comes
        later than half the window after the round is written at once. The wait for
        the round is bounded by how long our own write took (at most ``_MAX_WINDOWS``
        windows), so a write stuck on a reader that stopped reading holds up nobody.
        """
        interval = self._min_write_interval
        # Our own write took about as long as the round, whose writes advance in step:
        # a write that has taken much longer than ours (a reader that stopped reading)
        # is not part of it, and must not hold us up.
        took = trio.current_time() - self._write_started
        rounds = write_rounds()
        with trio.move_on_after(min(took, interval * _MAX_WINDOWS)) as cut:
            await rounds.wait_ended()
        # A round still in flight after that is held open by writes stuck on readers
        # that stopped reading, which cost no CPU: judge by the last round that ended
        # and by our own write instead.
        cost = max(took, rounds.last_duration) if cut.cancelled_caught else rounds.duration
        if cost < interval * _BUSY:
            # Writes are cheap now (few streams): the CPU is mostly idle, and holding
            # events back would cost latency for nothing.
            return
        start = trio.current_time()
        # Only if events are flowing: one coming this soon after a round is a sign
        # that the publisher was held up by it and has more to publish.
        await subscription.wait_for_frames(start + interval * _FLOWING, count=1)
        if subscription.queued:
            await subscription.wait_for_frames(start + interval)

    def _write(self, chunk: bytes) -> bytes:
        """Return ``chunk`` for Quart to write, counting it in the round of writes."""
        if self._min_write_interval > 0:
            self._writing = True
            self._write_started = trio.current_time()
            write_rounds().started()
        return chunk

    def _end_write(self) -> None:
        # Our last chunk is written, or the stream ended with it unwritten.
        if self._writing:
            self._writing = False
            write_rounds().finished()

    def _log_close(self, exc: BaseException | None) -> None:
        subscription = self._subscription
        if self._has_expired:
            reason = "auth_expired"
        elif subscription is not None and subscription.close_reason is not None:
            reason = subscription.close_reason.value
        elif subscription is None:
            reason = self._refused
        elif isinstance(exc, trio.Cancelled):
            reason = "client_closed"
        elif exc is not None:
            reason = f"error ({type(exc).__name__})"
        else:
            reason = "ended"
        logger.info(
            "stream closed: topic=%s reason=%s duration=%.3fs events=%d",
            self._topic,
            reason,
            trio.current_time() - self._opened_at,
            self.events_sent,
        )
        if self._observer is not None:
            self._observer.stream_closed(reason)


def event_stream(
    broker: Broker,
    topic: str,
    *,
    last_event_id: str | None = None,
    heartbeat: float = DEFAULT_HEARTBEAT,
    retry: int | None = None,
    initial: Sequence[ServerSentEvent] = (),
    min_write_interval: float = DEFAULT_MIN_WRITE_INTERVAL,
    expires_at: float | None = None,
    observer: StreamObserver | None = None,
) -> quart.Response:
    """Build a streaming ``text/event-stream`` response for one subscription.

    Call it from a Quart-Trio route and return the result. The subscription opens
    when Quart starts sending the body and closes when the stream ends for any
    reason: client disconnect, slow consumer, broker shutdown or error.

    Args:
        broker: Where the events come from.
        topic: The topic to stream.
        last_event_id: Resume after this id (from the ``Last-Event-ID`` header; see
            :func:`last_event_id_of`).
        heartbeat: Seconds of silence before a comment is sent; 0 disables.
        retry: If given, the reconnection delay (ms) sent to the client first.
        initial: Events for this subscriber only, sent before any other (a welcome).
        min_write_interval: The batching window, in seconds: while events come faster
            than the stream writes them, it waits this long after its round of writes,
            so that events published meanwhile share one write. At low rates events
            are written at once. 0 writes every wake-up at once.
        expires_at: When the permission to read the stream ends (Unix time, e.g. a
            JWT's ``exp``); the stream then ends cleanly, with reason ``auth_expired``.
        observer: Told of each batch written and of the stream's end (metrics).

    Returns:
        A response with the SSE headers and Quart's response timeout disabled, which
        would otherwise cut every stream at 60 s.

    Raises:
        InvalidTopicError: ``topic`` is not a valid name (answer 400).
        BrokerClosedError: The broker is closed (answer 503).
        InvalidEventError: ``retry`` is negative.
    """
    validate_topic(topic)
    if broker.is_closed:
        raise BrokerClosedError("the broker is closed; the server is shutting down")
    parts = [encode_retry(retry)] if retry is not None else []
    parts.append(_OPENED)
    parts.extend(event.encode() for event in initial)
    body = EventStreamBody(
        broker,
        topic,
        last_event_id=last_event_id,
        heartbeat=heartbeat,
        min_write_interval=min_write_interval,
        prelude=b"".join(parts),
        prelude_events=len(initial),
        expires_at=expires_at,
        observer=observer,
    )
    response: quart.Response = quart.current_app.response_class(
        body, status=200, headers=SSE_HEADERS
    )
    response.timeout = None
    return response


def last_event_id_of(request: quart.Request) -> str | None:
    """The id a client wants to resume after, or ``None`` for a fresh subscription.

    The ``Last-Event-ID`` header wins over the ``lastEventId`` query parameter: a
    browser's ``EventSource`` reconnects to the same URL, so the query parameter
    (set for its first connection) is stale by then, while the header is current.
    An empty value means no id, as a browser with an empty last event id sends none.
    """
    value = request.headers.get("Last-Event-ID") or request.args.get("lastEventId")
    return value or None
