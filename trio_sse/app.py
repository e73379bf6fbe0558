"""The reference app: publish and stream topics over HTTP.

Routes:

* ``GET /events/<topic>``: stream the topic (``text/event-stream``). Resumes after the
  ``Last-Event-ID`` header, or the ``lastEventId`` query parameter.
* ``POST /events/<topic>``: publish ``{"data": ..., "event": ..., "id": ..., "retry": ...}``;
  answers 202 ``{"id": "..."}``.
* ``GET /stats``: broker counters as JSON.
* ``GET /healthz``: 200 while serving, 503 while draining.

Every error answer is JSON: ``{"error": "<what was wrong>"}`` with a 4xx or 503 status.

Run it with ``trio-sse serve``, or under the Hypercorn CLI as ``trio_sse.app:app``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Final, NoReturn

import quart
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from ._errors import BrokerClosedError, BrokerUnavailableError, InvalidEventError, InvalidTopicError
from .broker import Broker, MemoryBroker, validate_topic
from .protocol import ServerSentEvent
from .web import DEFAULT_HEARTBEAT, DEFAULT_MIN_WRITE_INTERVAL, event_stream, last_event_id_of

__all__ = ["DEFAULT_MAX_BODY_SIZE", "DEFAULT_RETRY", "AppState", "app", "create_app", "state_of"]

# A chat message or a metrics sample is far smaller; a body this size is a mistake
# or an attack, and one event is fanned out to every subscriber.
DEFAULT_MAX_BODY_SIZE: Final = 64 * 1024

# The EventSource default, made explicit so that clients of every kind agree.
DEFAULT_RETRY: Final = 3000

_PUBLISH_FIELDS: Final = frozenset({"data", "event", "id", "retry"})


@dataclass(frozen=True, slots=True)
class AppState:
    """What the routes share, stored in ``app.extensions["trio_sse"]``."""

    broker: Broker
    heartbeat: float
    retry: int | None
    min_write_interval: float


def state_of(app: quart.Quart) -> AppState:
    """Return the :class:`AppState` that :func:`create_app` attached to ``app``."""
    state: AppState = app.extensions["trio_sse"]
    return state


class _BadRequestError(Exception):
    """A client error answered with a JSON body; never escapes the app."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _reject(message: str, status: int = 400) -> NoReturn:
    raise _BadRequestError(status, message)


def _error(message: str, status: int) -> quart.ResponseReturnValue:
    return {"error": message}, status


def _reject_constant(name: str) -> NoReturn:
    _reject(f"body is not valid JSON: {name} is not allowed")


def _event_from_body(body: bytes) -> ServerSentEvent:
    try:
        payload: Any = json.loads(body, parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        _reject(f"body is not valid JSON: {exc}")
    except RecursionError:
        _reject("body is not valid JSON: nested too deeply")
    if not isinstance(payload, dict):
        _reject('body must be a JSON object like {"data": "..."}')
    unknown = payload.keys() - _PUBLISH_FIELDS
    if unknown:
        _reject(f"unknown field(s): {', '.join(sorted(unknown))}; allowed: data, event, id, retry")
    if "data" not in payload:
        _reject('missing field "data"')
    data = payload["data"]
    if not isinstance(data, str):
        # Non-string data is sent as compact JSON, so clients can JSON.parse it.
        data = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    for name in ("event", "id"):
        if payload.get(name) is not None and not isinstance(payload[name], str):
            _reject(f'"{name}" must be a string')
    retry = payload.get("retry")
    if retry is not None and (isinstance(retry, bool) or not isinstance(retry, int)):
        _reject('"retry" must be a non-negative integer (milliseconds)')
    try:
        return ServerSentEvent(data, event=payload.get("event"), id=payload.get("id"), retry=retry)
    except InvalidEventError as exc:
        _reject(str(exc))


def create_app(
    *,
    broker: Broker | None = None,
    heartbeat: float = DEFAULT_HEARTBEAT,
    retry: int | None = DEFAULT_RETRY,
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    min_write_interval: float = DEFAULT_MIN_WRITE_INTERVAL,
) -> QuartTrio:
    """Create the reference app.

    Args:
        broker: Where events go; a fresh :class:`~trio_sse.broker.MemoryBroker` if omitted.
        heartbeat: Seconds of silence before a stream gets a heartbeat comment; 0 disables.
        retry: Reconnection delay (ms) announced at the start of every stream; ``None``
            leaves it to the client.
        max_body_size: Largest publish body, in bytes; larger ones get a 413.
        min_write_interval: The batching window, in seconds (see
            :func:`~trio_sse.web.event_stream`); 0 writes every wake-up at once.
    """
    if heartbeat < 0 or math.isnan(heartbeat):
        raise ValueError(f"heartbeat must be >= 0 seconds, got {heartbeat}")
    if not min_write_interval >= 0:
        raise ValueError(f"min_write_interval must be >= 0 seconds, got {min_write_interval}")
    if max_body_size < 1:
        raise ValueError(f"max_body_size must be >= 1, got {max_body_size}")
    app = QuartTrio(__name__)
    # Quart cuts any response after RESPONSE_TIMEOUT (60 s); streams opt out one by
    # one in event_stream(), and this covers routes a user adds to this app.
    app.config["RESPONSE_TIMEOUT"] = None
    app.config["MAX_CONTENT_LENGTH"] = max_body_size
    state = AppState(
        broker=broker if broker is not None else MemoryBroker(),
        heartbeat=heartbeat,
        retry=retry,
        min_write_interval=min_write_interval,
    )
    app.extensions["trio_sse"] = state

    @app.errorhandler(_BadRequestError)
    async def bad_request(exc: _BadRequestError) -> quart.ResponseReturnValue:
        return _error(str(exc), exc.status)

    @app.errorhandler(InvalidTopicError)
    async def bad_topic(exc: InvalidTopicError) -> quart.ResponseReturnValue:
        return _error(str(exc), 400)

    @app.errorhandler(BrokerClosedError)
    async def closed(exc: BrokerClosedError) -> quart.ResponseReturnValue:
        return _error("the server is shutting down; retry on another instance", 503)

    @app.errorhandler(BrokerUnavailableError)
    async def unavailable(exc: BrokerUnavailableError) -> quart.ResponseReturnValue:
        return _error(f"the broker is unavailable; nothing was published: {exc}", 503)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> quart.ResponseReturnValue:
        status = exc.code or 500
        if status == 413:
            return _error(f"body larger than the {max_body_size}-byte limit", 413)
        return _error(exc.description or exc.name, status)

    @app.get("/events/<topic>")
    async def stream(topic: str) -> quart.ResponseReturnValue:
        return event_stream(
            state.broker,
            topic,
            last_event_id=last_event_id_of(quart.request),
            heartbeat=state.heartbeat,
            retry=state.retry,
            min_write_interval=state.min_write_interval,
        )

    @app.post("/events/<topic>")
    async def publish(topic: str) -> quart.ResponseReturnValue:
        # Check the topic before reading the body: no work for a request we refuse.
        validate_topic(topic)
        body = await quart.request.get_data(cache=False)
        assert isinstance(body, bytes)
        event = _event_from_body(body)
        event_id = await state.broker.publish(topic, event)
        return {"id": event_id}, 202

    @app.get("/stats")
    async def stats() -> quart.ResponseReturnValue:
        snapshot = state.broker.statistics()
        return {
            "subscribers": snapshot.subscribers,
            "topics": snapshot.topics,
            "published": snapshot.published,
            "delivered": snapshot.delivered,
            "dropped": snapshot.dropped,
            "subscribers_per_topic": dict(snapshot.subscribers_per_topic),
        }

    @app.get("/healthz")
    async def healthz() -> quart.ResponseReturnValue:
        if state.broker.is_closed:
            return {"status": "draining"}, 503
        return {"status": "ok"}

    return app


app: Final = create_app()
"""The default app, for ``hypercorn --worker-class trio trio_sse.app:app``."""
