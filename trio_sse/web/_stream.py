"""SSE responses for Quart-Trio: one subscription per response, one write loop.

The structure (see docs/design.md for the task tree):

* The route handler returns ``event_stream(...)``: a Quart ``Response`` whose body is
  an :class:`EventStreamBody`. Nothing is subscribed yet.
* The body is entered (``async with``) once the headers are on their way:
  ``__aenter__`` subscribes; ``__aexit__`` unsubscribes, whatever ended the stream.
* The write loop, :meth:`EventStreamBody.stream_to`, reads as the delivery path does:
  wait for frames (or a heartbeat's silence), let a batch form if the loop is busy
  (:class:`~trio_sse.web.BatchWindow`), write it as one chunk, again. It runs in
  the request task, driven by :class:`~trio_sse.web.EventStreamConnection`, which
  hands it the fastest writer the server offers. With a writer that can write at
  once (:class:`~trio_sse.web.DirectChunkWriter`), publishes write to the connection
  themselves while the loop waits: no task switch per delivery. Under a plain Quart
  app the body is also an async iterator of the same chunks, for Quart's own loop.
* A client disconnect makes quart-trio cancel the request nursery; the loop's pending
  wait gets ``Cancelled`` within milliseconds and ``__aexit__`` runs.
* A stream may also end by a deadline of its own: its token's expiry, its age limit
  (``max_age``, jittered), or the moment a :class:`StreamDrain` picked for it. The
  last two end it with a jittered ``retry:``, so that its client, like the others
  ended near the same time, comes back at a moment of its own.

No task is started per connection, and every wait is bounded by a cancel scope inside
one call, never held across a ``yield`` (this is why it is a class, not an async
generator).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Awaitable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from types import TracebackType
from typing import Any, Final, Self

import quart
import trio
from quart.wrappers.response import ResponseBody

from ..broker import (
    REPLAY_PIECE,
    Broker,
    SinkResult,
    Subscription,
    TopicMerge,
    parse_position,
    validate_backlog,
    validate_subject,
    validate_topic,
)
from ..errors import BrokerClosedError, BrokerUnavailableError
from ..protocol import ServerSentEvent, encode_comment, encode_retry
from ._batching import DEFAULT_WINDOW, BatchWindow, LoopLoad, loop_load
from ._observer import StreamEnd, StreamObserver
from ._writers import ChunkWriter, DirectChunkWriter, SlowReaderError

__all__ = [
    "DEFAULT_HEARTBEAT",
    "DEFAULT_MAX_BUFFER",
    "DEFAULT_MIN_WRITE_INTERVAL",
    "SSE_HEADERS",
    "EventStreamBody",
    "StreamDrain",
    "event_stream",
    "jittered_age",
    "jittered_retry",
    "last_event_id_of",
]

logger = logging.getLogger("trio_sse.stream")

# Below the 30 to 60 s idle timeouts common in proxies and load balancers, and often
# enough that a vanished client is found within TCP_USER_TIMEOUT plus one interval.
DEFAULT_HEARTBEAT: Final = 15.0

# What a stream may hold for a client that does not keep up: its queued events, and
# over HTTP/2 the bytes its server has not sent. Room for a 0.25 s batching window of
# 10 KiB events at 50 per second with half to spare, while 100 streams of clients that
# stopped reading hold 25 MiB at most.
DEFAULT_MAX_BUFFER: Final = 256 * 1024

# The most a stream writes at once (one event larger than this goes alone): a replay
# or a long queue goes out in pieces, each written before the next is built, so a
# stale reconnect costs a piece of memory at a time, not its whole history.
_PIECE: Final = REPLAY_PIECE

# The batching window (see BatchWindow), under the name the app and CLI options use.
DEFAULT_MIN_WRITE_INTERVAL: Final = DEFAULT_WINDOW

SSE_HEADERS: Final = {
    "Content-Type": "text/event-stream; charset=utf-8",
    # Caches and proxies must not store or merge a live stream.
    "Cache-Control": "no-cache",
    # nginx buffers responses unless told not to; harmless elsewhere.
    "X-Accel-Buffering": "no",
}

_HEARTBEAT: Final = encode_comment("heartbeat")
_OPENED: Final = encode_comment("stream open")

# The reconnection delay a browser uses when told none; the base of the jittered
# retry of a stream that was not given one.
_EVENTSOURCE_RETRY: Final = 3000

# Ends of a stream's own deadlines after which its client is told a jittered retry.
# (An expired token is not: its client needs a fresh token, not a later moment.)
_TOLD_TO_RETRY: Final = frozenset({StreamEnd.SHUTDOWN, StreamEnd.MAX_AGE})

# A stream's age limit is drawn from [_AGE_JITTER * max_age, max_age], so that
# streams opened together (after a restart) do not all end together again.
_AGE_JITTER: Final = 0.9


def jittered_retry(base: int) -> int:
    """A reconnection delay (ms) drawn uniformly from ``[base / 2, base]``.

    Never more than ``base``: a client told this waits no longer than the ``retry``
    its stream opened with, and on average a quarter less.
    """
    return random.randint(base // 2, base)  # noqa: S311 - spreading load, not a secret


def jittered_age(max_age: float) -> float:
    """A stream's age limit (seconds), drawn uniformly from ``[0.9 * max_age, max_age]``."""
    return random.uniform(_AGE_JITTER * max_age, max_age)  # noqa: S311 - not a secret


class StreamDrain:
    """Ends the open streams of an app spread over a window, each at a moment of its own.

    :meth:`start` gives every open stream a deadline drawn uniformly from the window,
    and every stream opened afterwards one from what remains of it; each stream then
    ends by its own timer (its cancel scope's deadline), cleanly, with a jittered
    ``retry:``. Nothing polls, and no task runs per stream or for the drain.
    """

    def __init__(self) -> None:
        self._streams: set[EventStreamBody] = set()
        self._window_ends: float | None = None  # on Trio's clock, once started

    @property
    def is_draining(self) -> bool:
        """Whether :meth:`start` was called (new streams should then be refused)."""
        return self._window_ends is not None

    @property
    def open_streams(self) -> int:
        """Streams open now (entered and not yet exited)."""
        return len(self._streams)

    def start(self, window: float) -> None:
        """End every open stream at a random moment within ``window`` seconds from now.

        Calling it again does nothing: the first window stands.

        Raises:
            ValueError: ``window`` is negative, infinite or NaN.
        """
        if not 0 <= window < math.inf:
            raise ValueError(f"the drain window must be a finite number >= 0 seconds, got {window}")
        if self._window_ends is not None:
            return
        now = trio.current_time()
        self._window_ends = now + window
        for stream in self._streams:
            stream.end_by(now + random.uniform(0, window))  # noqa: S311 - not a secret

    def _opened(self, stream: EventStreamBody) -> None:
        self._streams.add(stream)
        if self._window_ends is not None:
            # Opened during the drain (its request was in before it began).
            now = trio.current_time()
            stream.end_by(random.uniform(now, max(now, self._window_ends)))  # noqa: S311

    def _closed(self, stream: EventStreamBody) -> None:
        self._streams.discard(stream)


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
        topic: str | Sequence[str],
        *,
        last_event_id: str | None,
        heartbeat: float,
        min_write_interval: float,
        prelude: bytes,
        prelude_events: int,
        expires_at: float | None = None,
        observer: StreamObserver | None = None,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        retry: int | None = None,
        max_age: float = 0.0,
        drain: StreamDrain | None = None,
        subject: str | None = None,
        backlog: int = 0,
    ) -> None:
        if max_buffer < 1:
            raise ValueError(f"max_buffer must be >= 1 byte, got {max_buffer}")
        if not max_age >= 0:
            raise ValueError(f"max_age must be >= 0 seconds, got {max_age}")
        self._broker = broker
        self.max_buffer: Final = max_buffer
        # A str: one topic, its frames as published. A sequence: several topics merged
        # (TopicMerge), ``last_event_id`` a compound position (checked by event_stream).
        self._topics: tuple[str, ...] | None = None
        if isinstance(topic, str):
            self._topic = topic
        else:
            self._topics = tuple(topic)
            self._topic = ",".join(self._topics)
        self._last_event_id = last_event_id
        self._subject = subject  # present on each topic while the stream is open
        self._backlog = backlog
        self._heartbeat = heartbeat if heartbeat > 0 else math.inf
        self._batching = BatchWindow(min_write_interval)
        self._prelude = prelude  # b"" once written
        self._prelude_events = prelude_events
        # The subscribe() context, held directly rather than in an AsyncExitStack: the
        # stack's deque alone cost 0.8 KiB per open stream.
        self._subscribed: AbstractAsyncContextManager[Any] | None = None
        self._subscription: Subscription | TopicMerge | None = None
        self._end: StreamEnd | None = None  # decided here, rather than by how the loop ended
        self._opened_at = 0.0
        self._expires_at = expires_at
        # The earliest of the stream's own deadlines (token expiry, age limit, drain),
        # on Trio's clock, from __aenter__ on; and the end it means.
        self._deadline = math.inf
        self._deadline_end = StreamEnd.AUTH_EXPIRED
        self._max_age = max_age
        self._retry = _EVENTSOURCE_RETRY if retry is None else retry
        self._drain = drain
        self._timer: trio.CancelScope | None = None  # the write loop's, while it waits
        self._observer = observer
        self._load = LoopLoad()  # this run's, from __aenter__ on
        self._last_chunk_at = 0.0  # for the heartbeat
        self._direct: DirectChunkWriter | None = None  # while stream_to() runs with one
        self._parked_at = 0.0  # when the stream last waited for frames after a write
        self._sink = self._write_directly  # one bound method, not one per wait
        self.events_sent = 0

    async def __aenter__(self) -> Self:
        self._load = loop_load()
        self._opened_at = trio.current_time()
        if self._expires_at is not None:
            self._deadline = self._opened_at + (self._expires_at - time.time())
        if self._max_age > 0:
            self._end_at(self._opened_at + jittered_age(self._max_age), StreamEnd.MAX_AGE)
        if self._drain is not None:
            self._drain._opened(self)
        try:
            if self._topics is None:
                subscribed = self._broker.subscribe(
                    self._topic,
                    last_event_id=self._last_event_id,
                    subject=self._subject,
                    backlog=self._backlog,
                )
                self._subscription = await subscribed.__aenter__()
                self._subscribed = subscribed
            else:
                self._subscription = await self._subscribe_all(self._topics)
            self._subscription.limit_bytes(self.max_buffer)
        except BrokerClosedError:
            # Shutting down between the handler and here: end at once, cleanly, and
            # the client reconnects (to another worker, behind a load balancer).
            self._end = StreamEnd.SHUTDOWN
        except BrokerUnavailableError as exc:
            # The backplane is down and this stream needs it (a replay, or a topic
            # not read here yet). The headers are sent, so a 503 is no longer
            # possible, and EventSource would not retry one anyway: end cleanly, and
            # the client retries after `retry` with the same Last-Event-ID.
            logger.warning("stream refused: topic=%s: %s", self._topic, exc)
            self._end = StreamEnd.UNAVAILABLE
        return self

    async def _subscribe_all(self, topics: tuple[str, ...]) -> TopicMerge:
        """Subscribe to each topic at its own position, and merge them.

        One after the other, within this request's task: no task per topic. If one
        fails, those already made are left before the error goes on.
        """
        if self._last_event_id is None:
            positions: list[str | None] = [None] * len(topics)
        else:
            positions = parse_position(self._last_event_id, len(topics))
        stack = AsyncExitStack()
        try:
            members = [
                await stack.enter_async_context(
                    self._broker.subscribe(t, last_event_id=p, subject=self._subject)
                )
                for t, p in zip(topics, positions, strict=True)
            ]
        except BaseException:
            await stack.aclose()
            raise
        self._subscribed = stack
        return TopicMerge(members, positions, queue_size=members[0].capacity)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Keep this minimal: the subscription's exit must always run, or it leaks. Its
        # result is dropped on purpose: a stream never swallows an exception.
        try:
            if self._drain is not None:
                self._drain._closed(self)
            self._log_close(exc)
        finally:
            subscribed, self._subscribed = self._subscribed, None
            if subscribed is not None:
                await subscribed.__aexit__(exc_type, exc, tb)

    def first_chunk(self) -> bytes:
        """The stream's first chunk: ``retry``, the opening comment, initial events, replay.

        It goes out at once, so that clients and proxies see the stream open; any
        replay rides in the same write. Call it once, inside ``async with body``,
        before :meth:`stream_to`.
        """
        prelude, self._prelude = self._prelude, b""
        self.events_sent += self._prelude_events
        self._last_chunk_at = trio.current_time()
        if self._subscription is None:
            return prelude
        try:
            frames = self._subscription.receive_batch_nowait(max_bytes=_PIECE)
        except (trio.WouldBlock, trio.EndOfChannel):
            return prelude
        self.events_sent += len(frames)
        return b"".join([prelude, *frames])

    async def stream_to(self, writer: ChunkWriter) -> None:
        """The write loop: every chunk after the first to ``writer``, until the stream ends.

        Returns when the stream ends cleanly (the broker closed the subscription, the
        token expired); the response then needs only its end.

        Cancellation: the client's disconnect cancels it wherever it waits. The writer
        must not lose a chunk to cancellation (see :class:`ChunkWriter`): the timer
        below may fire during a write.
        """
        subscription = self._subscription
        if isinstance(writer, DirectChunkWriter):
            self._direct = writer
        while subscription is not None:
            # One timer for the heartbeat and the token's expiry around the whole loop,
            # re-armed only when it fires, rather than a deadline per wait: a deadline
            # costs the scheduler a heap entry and a cancel scope, once per delivery.
            with trio.CancelScope(deadline=self._silence_ends()) as self._timer:
                while (chunk := await self._next_batch(subscription)) is not None:
                    if chunk:
                        await writer.write(chunk)
                return
            chunk = self._after_silence(subscription)
            if chunk is None:
                farewell = self._farewell()
                if farewell:
                    await writer.write(farewell)
                return
            if chunk:
                await writer.write(chunk)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> bytes:
        # Quart's own body loop, for an app that does not use EventStreamConnection:
        # it calls again once the previous chunk is written, as stream_to() does, and
        # each call has a timer of its own.
        if self._prelude:
            await trio.lowlevel.checkpoint()
            return self.first_chunk()
        subscription = self._subscription
        while subscription is not None and self._end is None:
            with trio.CancelScope(deadline=self._silence_ends()) as self._timer:
                chunk = await self._next_batch(subscription)
                if chunk is None:
                    break
                return chunk  # never b"": there is no direct writer here
            chunk = self._after_silence(subscription)
            if chunk is None:
                farewell = self._farewell()
                if farewell:
                    return farewell  # and the next call ends, since the end is decided
                break
            if chunk:
                return chunk
        raise StopAsyncIteration

    def end_by(self, deadline: float) -> None:
        """End the stream cleanly by ``deadline`` (Trio's clock) with a jittered ``retry``.

        For :class:`StreamDrain`; an earlier deadline of the stream's own stands.
        """
        self._end_at(deadline, StreamEnd.SHUTDOWN)

    def _end_at(self, deadline: float, end: StreamEnd) -> None:
        if deadline >= self._deadline:
            return
        self._deadline, self._deadline_end = deadline, end
        timer = self._timer
        if timer is not None and deadline < timer.deadline:
            # The loop is waiting under a timer set before: bring it forward. (After
            # the loop left it, this changes nothing; the next timer reads _deadline.)
            timer.deadline = deadline

    def _farewell(self) -> bytes:
        """The stream's last chunk, once its end is decided: a jittered ``retry``, or none."""
        if self._end in _TOLD_TO_RETRY:
            return encode_retry(jittered_retry(self._retry))
        return b""

    def _silence_ends(self) -> float:
        """When the stream must write a heartbeat, or end because its token expired."""
        return min(self._last_chunk_at + self._heartbeat, self._deadline)

    def _after_silence(self, subscription: Subscription | TopicMerge) -> bytes | None:
        """What the timer means: ``None`` to end, a heartbeat, or ``b""`` to go on."""
        now = trio.current_time()
        if now >= self._deadline:
            # One of the stream's own deadlines: end it cleanly. After a token's
            # expiry the client reconnects, and must then present a fresh token;
            # after its age limit or a drain, it is told when to (_farewell).
            self._end = self._deadline_end
            return None
        if subscription.queued or subscription.close_reason is not None:
            return b""  # frames came meanwhile: they go out next, no heartbeat needed
        if now < self._last_chunk_at + self._heartbeat:
            # The timer was set before the last write: set it again. (The same sum as
            # the timer's deadline, so that rounding cannot make this spin.)
            return b""
        self._last_chunk_at = now
        return _HEARTBEAT

    def _next_batch(self, subscription: Subscription | TopicMerge) -> Awaitable[bytes | None]:
        """The next chunk: a piece of replay while one is pending, else :meth:`_next_live`.

        Not a coroutine itself: a waiting stream holds one frame fewer (0.3 KiB).
        """
        if subscription.replay_pending:
            return self._next_replayed_or_live(subscription)
        return self._next_live(subscription)

    async def _next_replayed_or_live(self, subscription: Subscription | TopicMerge) -> bytes | None:
        replayed = await self._next_replayed(subscription)
        if replayed is not None or self._end is not None:
            return replayed
        return await self._next_live(subscription)

    async def _next_live(self, subscription: Subscription | TopicMerge) -> bytes | None:
        """Wait for frames, let a batch form if the loop is busy, and take it.

        Call it again only once the previous chunk is written: the time of that call
        is when the write ended, which the batching window counts from.

        Returns:
            The chunk to write; ``b""`` if publishes wrote directly meanwhile and there is
            nothing more to write now; ``None`` once the subscription is closed and drained.

        Cancellation: a cancelled call takes no frame.
        """
        last_write_end = trio.current_time()
        if subscription.queued:
            # Frames came while we wrote: still one checkpoint per write.
            await subscription.wait_queued(1)
            now = trio.current_time()
        else:
            direct = self._direct
            if direct is None:
                await subscription.wait_queued(1)
            else:
                if direct.has_pending:
                    # A direct write a publish began, whose wake-up a cancellation (the
                    # heartbeat's timer) overtook: finish it before anything else.
                    await direct.flush()
                    return b""
                # While we wait, publishes write straight to the connection.
                self._parked_at = last_write_end
                subscription.set_sink(self._sink)
                try:
                    await subscription.wait_queued(1)
                finally:
                    subscription.set_sink(None)
                if direct.has_pending:
                    await direct.flush()
                    return b""
                # Publishes may have written meanwhile: the last write ended then.
                last_write_end = self._parked_at
            now = trio.current_time()
            if subscription.queued:
                # Woken by a publish: how late the loop ran us tells how busy it is.
                self._load.note_wake_delay(
                    now - subscription.first_queued_at, now=now, window=self._batching
                )
        queued_at = subscription.first_queued_at
        hold = self._batching.hold_until(
            last_write_end=last_write_end,
            queued_at=queued_at,
            now=now,
            is_loop_busy=self._load.is_busy(now),
        )
        if hold is not None:
            with trio.CancelScope(deadline=hold):
                # Half full: write now rather than risk being dropped as slow.
                await subscription.wait_queued(max(1, subscription.capacity // 2))
            now = trio.current_time()
        try:
            frames = subscription.receive_batch_nowait(max_bytes=_PIECE)
        except trio.EndOfChannel:
            return None
        self.events_sent += len(frames)
        self._last_chunk_at = now
        if self._observer is not None:
            self._observer.written(now - queued_at)
        return frames[0] if len(frames) == 1 else b"".join(frames)

    async def _next_replayed(self, subscription: Subscription | TopicMerge) -> bytes | None:
        """The next piece of a replay the broker reads on demand; ``None`` once it is done.

        Also ``None``, with the stream's end decided, if the broker cannot read it.

        Cancellation: a cancelled call takes no frame.
        """
        try:
            frames = subscription.receive_batch_nowait(max_bytes=_PIECE)  # the backlog first
        except trio.WouldBlock:
            try:
                frames = await subscription.receive_replay(_PIECE)
            except BrokerUnavailableError as exc:
                # As when subscribing: end cleanly, and the client resumes later from
                # the last id it got.
                logger.warning("replay failed: topic=%s: %s", self._topic, exc)
                self._end = StreamEnd.UNAVAILABLE
                return None
        if not frames:
            return None
        self.events_sent += len(frames)
        self._last_chunk_at = trio.current_time()
        return b"".join(frames)

    def _write_directly(self, frame: bytes, offered_at: float) -> SinkResult:
        """The subscription's sink while the stream waits: write ``frame`` from the publisher.

        The batching rule still holds: while the loop is saturated and events flow,
        the frame is declined, so that it queues and the stream batches it.
        """
        direct = self._direct
        if direct is None:  # pragma: no cover - the sink is set only with a writer
            return SinkResult.DECLINED
        now = trio.current_time()
        load = self._load
        # Its place in the fan-out: how busy the loop is, as a wake-up's delay would say.
        load.note_wake_delay(now - offered_at, now=now, window=self._batching)
        hold = self._batching.hold_until(
            last_write_end=self._parked_at,
            queued_at=offered_at,
            now=now,
            is_loop_busy=load.is_busy(now),
        )
        if hold is not None:
            return SinkResult.DECLINED
        self.events_sent += 1
        self._last_chunk_at = self._parked_at = now
        if self._observer is not None:
            self._observer.written(now - offered_at)
        return SinkResult.WRITTEN if direct.write_nowait(frame) else SinkResult.PENDING

    def end_reason(self, exc: BaseException | None = None) -> StreamEnd:
        """Why the stream ended (or would, if it ended now with ``exc``)."""
        subscription = self._subscription
        if self._end is not None:
            return self._end
        if subscription is not None and subscription.close_reason is not None:
            return StreamEnd.closed_by_broker(subscription.close_reason)
        if isinstance(exc, SlowReaderError):
            return StreamEnd.SLOW_CONSUMER
        if isinstance(exc, trio.Cancelled):
            return StreamEnd.CLIENT_CLOSED
        if exc is not None:
            return StreamEnd.ERROR
        return StreamEnd.ENDED

    def _log_close(self, exc: BaseException | None) -> None:
        reason = self.end_reason(exc)
        error = f" error={type(exc).__name__}" if reason is StreamEnd.ERROR and exc else ""
        logger.info(
            "stream closed: topic=%s reason=%s duration=%.3fs events=%d%s",
            self._topic,
            reason.value,
            trio.current_time() - self._opened_at,
            self.events_sent,
            error,
        )
        if self._observer is not None:
            self._observer.stream_closed(reason)


def event_stream(
    broker: Broker,
    topic: str | Sequence[str],
    *,
    last_event_id: str | None = None,
    heartbeat: float = DEFAULT_HEARTBEAT,
    retry: int | None = None,
    initial: Sequence[ServerSentEvent] = (),
    min_write_interval: float = DEFAULT_MIN_WRITE_INTERVAL,
    expires_at: float | None = None,
    observer: StreamObserver | None = None,
    max_buffer: int = DEFAULT_MAX_BUFFER,
    max_age: float = 0.0,
    drain: StreamDrain | None = None,
    subject: str | None = None,
    backlog: int = 0,
) -> quart.Response:
    """Build a streaming ``text/event-stream`` response for one topic, or several merged.

    Call it from a Quart-Trio route and return the result. The subscription opens
    when Quart starts sending the body and closes when the stream ends for any
    reason: client disconnect, slow consumer, broker shutdown or error. A ``HEAD``
    request (which Quart sends to ``GET`` routes) gets the same status and headers
    and an empty body: it subscribes to nothing.

    Args:
        broker: Where the events come from.
        topic: The topic to stream; or a sequence of topics (at least one, no
            repeats), streamed together: each event's ``event`` field then names its
            topic and its ``id`` is the stream's compound position (see
            :class:`~trio_sse.broker.TopicMerge`).
        last_event_id: Resume after this id (from the ``Last-Event-ID`` header; see
            :func:`last_event_id_of`); for several topics, a compound position.
        heartbeat: Seconds of silence before a comment is sent; 0 disables.
        retry: If given, the reconnection delay (ms) sent to the client first.
        initial: Events for this subscriber only, sent before any other (a welcome).
        min_write_interval: The batching window, in seconds (see
            :class:`~trio_sse.web.BatchWindow`): while events flow and the event loop
            is busy, a stream writes at most once per window, so that events published
            meanwhile share one write. At low rates, or on an idle loop, events are
            written at once. 0 writes every batch at once.
        expires_at: When the permission to read the stream ends (Unix time, e.g. a
            JWT's ``exp``); the stream then ends cleanly, with reason ``auth_expired``.
        observer: Told of each batch written and of the stream's end (metrics).
        max_buffer: Bytes the stream may hold for a client that does not keep up: its
            queued events (a subscriber past it is dropped as slow, and resumes from
            history when it reconnects) and, over HTTP/2 under ``trio_sse.serve()``,
            the bytes its server has not sent yet (a client that reads none of them
            for ``TCP_USER_TIMEOUT`` has its stream reset). Replays and long queues
            are written in pieces of 64 KiB, each once the previous one was taken.
        max_age: If > 0, the stream ends cleanly after an age drawn uniformly from
            ``[0.9 * max_age, max_age]`` seconds, reason ``max_age``, and tells its
            client a ``retry`` drawn from ``[retry / 2, retry]`` (3000 ms if ``retry``
            is ``None``): long-lived clients then spread again over the servers
            behind a load balancer, and none keeps a stream past a re-check of its
            token. The client resumes with ``Last-Event-ID`` as after any end.
        drain: Registers the stream, so that :meth:`StreamDrain.start` can end it
            (reason ``shutdown``, with a jittered ``retry`` as above); once the drain
            has started, no new stream is opened (``BrokerClosedError``).
        subject: Who reads the stream (a token's ``sub``): present on its topics
            while it is open (see :meth:`~trio_sse.broker.Broker.presence`); at most
            :data:`~trio_sse.broker.MAX_SUBJECT_LENGTH` characters.
        backlog: One topic only, without ``last_event_id``: first the topic's newest
            ``backlog`` retained events (at most :data:`~trio_sse.broker.MAX_BACKLOG`),
            e.g. a chat room's recent messages for a page that just opened. A
            resume (``last_event_id``) replays from its id instead.

    Returns:
        A response with the SSE headers and Quart's response timeout disabled, which
        would otherwise cut every stream at 60 s.

    Raises:
        InvalidTopicError: ``topic`` is not a valid name (answer 400).
        InvalidEventError: For several topics: ``last_event_id`` is not a compound
            position of as many topics (answer 400).
        ValueError: An empty sequence of topics, or one with a topic twice.
        BrokerClosedError: The broker is closed, or the drain has started (answer 503).
        InvalidEventError: ``retry`` is negative.
        ValueError: ``max_age`` is negative or NaN; ``subject`` or ``backlog`` out
            of range, or ``backlog`` with several topics.
    """
    validate_subject(subject)
    validate_backlog(backlog)
    if isinstance(topic, str):
        validate_topic(topic)
    else:
        if backlog:
            raise ValueError("backlog is for one topic; several topics resume by position")
        topic = tuple(topic)
        for name in topic:
            validate_topic(name)
        if not topic or len(set(topic)) != len(topic):
            raise ValueError(f"give one or more distinct topics, got {topic!r:.200}")
        if last_event_id is not None:
            parse_position(last_event_id, len(topic))
    if broker.is_closed or (drain is not None and drain.is_draining):
        raise BrokerClosedError("the broker is closed; the server is shutting down")
    if quart.has_request_context() and quart.request.method == "HEAD":
        # Quart routes HEAD to GET handlers. A HEAD gets the stream's headers and no
        # body, so nothing to subscribe: an empty body (no Content-Length, as for the
        # GET) ends the response at once, under any connection class, and a HEAD
        # holds neither a subscription nor a stream slot.
        head: quart.Response = quart.current_app.response_class((), status=200, headers=SSE_HEADERS)
        return head
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
        max_buffer=max_buffer,
        retry=retry,
        max_age=max_age,
        drain=drain,
        subject=subject,
        backlog=backlog,
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
