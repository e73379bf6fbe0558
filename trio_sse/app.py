"""The reference app: publish and stream topics over HTTP.

Routes:

* ``GET /events/<topic>``: stream the topic (``text/event-stream``). Resumes after the
  ``Last-Event-ID`` header, or the ``lastEventId`` query parameter.
* ``GET /events?topic=a&topic=b``: stream several topics on one connection (at most
  ``max_topics_per_stream``). Each event's ``event`` field is ``<topic>`` (published
  without a type) or ``<topic>:<type>``, its data unchanged; its ``id`` is the stream's
  compound position, which ``Last-Event-ID`` resumes every topic from (see
  :class:`trio_sse.broker.TopicMerge`). With ``--subscribe-auth``, the token must allow
  every topic: 403 names the first it does not.
* ``POST /events/<topic>``: publish ``{"data": ..., "event": ..., "id": ..., "retry": ...}``
  with ``Content-Type: application/json``; answers 202 ``{"id": "..."}``, or 415 for
  any other content type (what keeps other sites' pages from publishing: see
  ``_check_json_content_type``). With an ``Idempotency-Key`` header (1 to 128 visible
  ASCII characters) that an earlier publish to the topic used, while that event is
  still in history, it publishes nothing and answers that event's id: after a 503 or
  a broken connection, retry with the same key.
* ``POST /publish``: publish one event to several topics, ``{"topics": ["a", "b"],
  "data": ..., "event": ..., "id": ..., "retry": ...}``; answers 202 ``{"ids": {"a":
  "...", "b": "..."}}``. Each topic gets the event once; a topic refused (its name,
  the token) refuses the whole request and nothing is published. At most
  ``max_topics_per_publish`` topics (32 by default). ``Idempotency-Key`` works per
  topic, as above: a retried batch answers the same ids and publishes nothing again.
* ``GET /presence/<topic>``: who is on the topic now, ``{"topic": ..., "streams": N,
  "subs": [...], "sub_count": M, "truncated": bool}``: its open streams (on every
  worker, with Redis) and the distinct ``sub`` claims of the tokens that opened them,
  at most ``?limit=`` (default 100, at most 1000) listed. With ``--subscribe-auth``,
  reading it needs the right to subscribe to the topic. With presence events on, the
  topic itself carries ``event: join`` and ``event: leave`` (data ``{"sub": ...}``),
  once per subject however many streams it has open.
* ``GET /stats``: broker counters as JSON, with the backplane's state if there is one.
* ``GET /metrics``: Prometheus metrics (see :mod:`trio_sse.web._metrics`).
* ``GET /livez``: liveness: 200 whenever the process answers.
* ``GET /healthz``: readiness. 200 while this instance can take publishes and new
  streams; 503 while draining, or while the backplane (Redis) does not answer.

Other origins' pages may use these routes only if ``create_app(cors=...)`` allows them
(``trio-sse serve --cors-origin``); preflight ``OPTIONS`` requests are answered then.

Every error answer is JSON: ``{"error": "<what was wrong>"}`` with a 4xx or 503 status.

Run it with ``trio-sse serve``, or under the Hypercorn CLI as ``trio_sse.app:app``.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn

import quart
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from .broker import (
    DEFAULT_PRESENCE_LIMIT,
    MAX_PRESENCE_LIMIT,
    Broker,
    MemoryBroker,
    validate_idempotency_key,
    validate_topic,
    validate_topics,
)
from .errors import (
    AuthError,
    BrokerClosedError,
    BrokerUnavailableError,
    InvalidEventError,
    InvalidTopicError,
)
from .protocol import ServerSentEvent
from .web import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEARTBEAT,
    DEFAULT_MAX_BUFFER,
    DEFAULT_MAX_STREAMS,
    DEFAULT_MAX_STREAMS_PER_IP,
    DEFAULT_MIN_WRITE_INTERVAL,
    Action,
    AuthConfig,
    Authorizer,
    BodyLimiter,
    CorsPolicy,
    Credentials,
    EventStreamConnection,
    Grant,
    Metrics,
    StreamDrain,
    StreamLimiter,
    enable_cors,
    event_stream,
    last_event_id_of,
)
from .web._metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE

__all__ = [
    "DEFAULT_MAX_BODY_SIZE",
    "DEFAULT_MAX_TOPICS_PER_PUBLISH",
    "DEFAULT_MAX_TOPICS_PER_STREAM",
    "DEFAULT_RETRY",
    "MAX_INT_DIGITS",
    "AppState",
    "app",
    "create_app",
    "state_of",
]

# A chat message or a metrics sample is far smaller; a body this size is a mistake
# or an attack, and one event is fanned out to every subscriber.
DEFAULT_MAX_BODY_SIZE: Final = 64 * 1024

# Topics one POST /publish may list: as many as one stream may carry (a dashboard's
# worth), and a bound on the keys one Redis script touches (three per topic).
DEFAULT_MAX_TOPICS_PER_PUBLISH: Final = 32

# The EventSource default, made explicit so that clients of every kind agree.
DEFAULT_RETRY: Final = 3000

# A dashboard's worth of topics on one connection, the point of the route (browsers
# open at most 6 HTTP/1.1 connections per origin); a stream's compound id then stays
# near 1 KiB with the built-in brokers' ids.
DEFAULT_MAX_TOPICS_PER_STREAM: Final = 32

# Longest integer a publish body may hold, in digits: a JSON number is a double to
# most clients, exact only up to 16 digits.
MAX_INT_DIGITS: Final = 1000

_PUBLISH_FIELDS: Final = frozenset({"data", "event", "id", "retry"})
_BATCH_FIELDS: Final = _PUBLISH_FIELDS | {"topics"}

# What /healthz tells anyone who asks while the backplane is down. The broker's own
# error names the Redis host, port and database: that is for the log, not for the
# load balancer's (or the internet's) eyes.
_UNAVAILABLE: Final = "the backplane does not answer"

logger = logging.getLogger("trio_sse.app")


@dataclass(frozen=True, slots=True)
class AppState:
    """What the routes share, stored in ``app.extensions["trio_sse"]``."""

    broker: Broker
    heartbeat: float
    retry: int | None
    min_write_interval: float
    max_buffer: int
    authorizer: Authorizer
    limiter: StreamLimiter
    metrics: Metrics
    max_stream_age: float = 0.0
    drain: StreamDrain = field(default_factory=StreamDrain)
    max_topics_per_stream: int = DEFAULT_MAX_TOPICS_PER_STREAM
    max_topics_per_publish: int = DEFAULT_MAX_TOPICS_PER_PUBLISH


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


def _parse_int(text: str) -> int:
    # Checked before converting: Python refuses (ValueError) integers over its
    # int_max_str_digits, and converting one costs time quadratic in its length.
    digits = len(text) - text.startswith("-")
    if digits > MAX_INT_DIGITS:
        _reject(f"number out of range: an integer of {digits} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        # It would be sent on as Infinity, which is not JSON.
        _reject(f"number out of range: {text[:40]} is not a finite double")
    return value


def _object_from_body(body: bytes) -> dict[str, Any]:
    try:
        payload: Any = json.loads(
            body, parse_constant=_reject_constant, parse_int=_parse_int, parse_float=_parse_float
        )
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        _reject(f"body is not valid JSON: {exc}")
    except RecursionError:
        _reject("body is not valid JSON: nested too deeply")
    if not isinstance(payload, dict):
        _reject('body must be a JSON object like {"data": "..."}')
    return payload


def _event_from_body(body: bytes) -> ServerSentEvent:
    return _event_from_payload(_object_from_body(body), _PUBLISH_FIELDS)


def _topics_from_payload(payload: dict[str, Any], max_topics: int) -> list[str]:
    """The batch's topics, every one checked (400 naming the first bad one)."""
    if "topics" not in payload:
        _reject('missing field "topics"')
    topics = payload["topics"]
    if not isinstance(topics, list):
        _reject('"topics" must be a list of topic names, like ["a", "b"]')
    if not topics:
        _reject('"topics" must list at least one topic')
    if len(topics) > max_topics:
        _reject(f'"topics" lists {len(topics)} topics; a publish may list at most {max_topics}')
    return validate_topics(topics)


def _event_from_payload(payload: dict[str, Any], fields: frozenset[str]) -> ServerSentEvent:
    unknown = payload.keys() - fields
    if unknown:
        _reject(
            f"unknown field(s): {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(fields))}"
        )
    if "data" not in payload:
        _reject('missing field "data"')
    data = payload["data"]
    if not isinstance(data, str):
        # Non-string data is sent as compact JSON, so clients can JSON.parse it.
        data = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    for name in ("event", "id"):
        if payload.get(name) is not None and not isinstance(payload[name], str):
            _reject(f'"{name}" must be a string')
    if payload.get("id") == "":
        # On the wire "id:" with no value resets the client's last event ID, so its
        # next reconnection would resume from nothing and miss what came between.
        _reject('"id" must not be empty; leave it out to get a server-assigned id')
    retry = payload.get("retry")
    if retry is not None and (isinstance(retry, bool) or not isinstance(retry, int)):
        _reject('"retry" must be a non-negative integer (milliseconds)')
    try:
        return ServerSentEvent(data, event=payload.get("event"), id=payload.get("id"), retry=retry)
    except InvalidEventError as exc:
        _reject(str(exc))


def _idempotency_key_of(request: quart.Request) -> str | None:
    """The request's ``Idempotency-Key``, checked; ``None`` if it has none."""
    keys = request.headers.getlist("Idempotency-Key")
    if len(keys) > 1:
        _reject("give one Idempotency-Key header, not several")
    if not keys:
        return None
    return validate_idempotency_key(keys[0])


def _check_json_content_type(request: quart.Request) -> None:
    """Refuse a publish whose body is not declared JSON (415).

    A page on any site may send a ``text/plain``, form or multipart ``POST`` to any
    server without asking it first; ``application/json`` needs a CORS preflight, which
    only the origins of ``create_app(cors=...)`` pass. So this header is what keeps
    other sites' pages from publishing to an open server.
    """
    charset = request.mimetype_params.get("charset", "utf-8").lower()
    if request.mimetype != "application/json" or charset not in ("utf-8", "utf8"):
        got = request.headers.get("Content-Type")
        _reject(
            "publishing needs Content-Type: application/json (UTF-8), "
            f"got {'none' if got is None else repr(got[:100])}",
            415,
        )


class _Readiness:
    """The answer of ``/healthz``: can this instance take a publish now?

    Open streams are unaffected either way; they wait out a backplane outage.
    """

    def __init__(self, broker: Broker, drain: StreamDrain) -> None:
        self._broker = broker
        self._drain = drain
        # Whether the last check found the backplane down: a load balancer probes
        # every few seconds, and the log gets the reason once per outage.
        self._is_unavailable = False

    async def check(self) -> tuple[dict[str, str], int]:
        if self._broker.is_closed or self._drain.is_draining:
            return {"status": "draining"}, 503
        try:
            await self._broker.ping()
        except BrokerClosedError:
            return {"status": "draining"}, 503
        except BrokerUnavailableError as exc:
            if not self._is_unavailable:
                logger.warning("/healthz: not ready: %s", exc)
            self._is_unavailable = True
            return {"status": "unavailable", "error": _UNAVAILABLE}, 503
        if self._is_unavailable:
            logger.info("/healthz: ready again")
        self._is_unavailable = False
        return {"status": "ok"}, 200


def _install_error_handlers(app: QuartTrio, max_body_size: int) -> None:
    """Answer every error the routes raise with a JSON body and the right status."""

    @app.errorhandler(_BadRequestError)
    async def bad_request(exc: _BadRequestError) -> quart.ResponseReturnValue:
        return _error(str(exc), exc.status)

    @app.errorhandler(AuthError)
    async def not_allowed(exc: AuthError) -> quart.ResponseReturnValue:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
        return {"error": str(exc)}, exc.status, headers

    @app.errorhandler(InvalidTopicError)
    async def bad_topic(exc: InvalidTopicError) -> quart.ResponseReturnValue:
        return _error(str(exc), 400)

    @app.errorhandler(BrokerClosedError)
    async def closed(exc: BrokerClosedError) -> quart.ResponseReturnValue:
        return _error("the server is shutting down; retry on another instance", 503)

    @app.errorhandler(BrokerUnavailableError)
    async def unavailable(exc: BrokerUnavailableError) -> quart.ResponseReturnValue:
        return _error(f"the broker is unavailable: {exc}", 503)

    @app.errorhandler(InvalidEventError)
    async def bad_event(exc: InvalidEventError) -> quart.ResponseReturnValue:
        # The broker refused a field the protocol allows, e.g. an id that is not a
        # Redis stream id.
        return _error(str(exc), 400)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> quart.ResponseReturnValue:
        status = exc.code or 500
        if status == 413:
            return _error(f"body larger than the {max_body_size}-byte limit", 413)
        return _error(exc.description or exc.name, status)


def _topics_of(request: quart.Request, cap: int) -> list[str]:
    """The ``topic`` query parameters of a several-topic stream, checked, in order."""
    topics = request.args.getlist("topic")
    if not topics:
        _reject("name the topics to stream: /events?topic=a&topic=b")
    if len(topics) > cap:
        _reject(
            f"{len(topics)} topics requested; a stream may have at most {cap} "
            "(--max-topics-per-stream)"
        )
    seen: set[str] = set()
    for topic in topics:
        validate_topic(topic)
        if topic in seen:
            _reject(f"topic {topic!r} is given twice")
        seen.add(topic)
    return topics


def _credentials(state: AppState) -> Credentials:
    request = quart.request
    config = state.authorizer.config
    return Credentials(
        authorization=request.headers.get("Authorization"),
        cookie=request.cookies.get(config.cookie_name),
        query=request.args.get(config.query_parameter),
    )


def _authorize(state: AppState, action: Action, topic: str) -> Grant:
    """Check the request's token: what it allows (until when, and for whom)."""
    return state.authorizer.authorize(action, topic, _credentials(state))


def _limit_of(request: quart.Request) -> int:
    """The ``limit`` query parameter of ``GET /presence/<topic>``, checked."""
    text = request.args.get("limit")
    if text is None:
        return DEFAULT_PRESENCE_LIMIT
    if not (text.isascii() and text.isdigit()) or int(text[:6]) > MAX_PRESENCE_LIMIT:
        _reject(f"limit must be an integer from 0 to {MAX_PRESENCE_LIMIT}, got {text!r:.40}")
    return int(text)


async def _publish(state: AppState, topic: str) -> quart.ResponseReturnValue:
    """``POST /events/<topic>``: one event to one topic."""
    # Check the topic before reading the body: no work for a request we refuse.
    validate_topic(topic)
    _authorize(state, Action.PUBLISH, topic)
    _check_json_content_type(quart.request)
    idempotency_key = _idempotency_key_of(quart.request)
    body = await quart.request.get_data(cache=False)
    assert isinstance(body, bytes)
    event = _event_from_body(body)
    event_id = await state.broker.publish(topic, event, idempotency_key=idempotency_key)
    # A repeated key answers exactly as the first request did: a client retrying
    # after a lost answer cannot tell, and need not.
    return {"id": event_id}, 202


async def _presence(state: AppState, topic: str) -> quart.ResponseReturnValue:
    """``GET /presence/<topic>``: who is on the topic."""
    # Who reads a topic is as private as what it carries: with --subscribe-auth,
    # reading it needs the same right.
    validate_topic(topic)
    _authorize(state, Action.SUBSCRIBE, topic)
    found = await state.broker.presence(topic, limit=_limit_of(quart.request))
    return found.to_json()


async def _publish_batch(state: AppState) -> quart.ResponseReturnValue:
    """``POST /publish``: one event to several topics, all or nothing."""
    request = quart.request
    # The topics are in the body: every one is checked (name, then token) before
    # anything is published, so one refused topic refuses the whole batch.
    _check_json_content_type(request)
    idempotency_key = _idempotency_key_of(request)
    body = await request.get_data(cache=False)
    assert isinstance(body, bytes)
    payload = _object_from_body(body)
    topics = _topics_from_payload(payload, state.max_topics_per_publish)
    state.authorizer.authorize_all(Action.PUBLISH, topics, _credentials(state))
    event = _event_from_payload(payload, _BATCH_FIELDS)
    ids = await state.broker.publish_many(topics, event, idempotency_key=idempotency_key)
    # A repeated key answers as the first request did, as for a single topic.
    return {"ids": ids}, 202


def _stream_topics(state: AppState) -> quart.Response:
    """``GET /events?topic=a&topic=b``: several topics on one stream."""
    topics = _topics_of(quart.request, state.max_topics_per_stream)
    # One token check, then every topic against it: 403 names the first refused.
    grant = state.authorizer.authorize_all(Action.SUBSCRIBE, topics, _credentials(state))
    return _stream_response(state, topics, grant)


def _stream_response(state: AppState, topic: str | list[str], grant: Grant) -> quart.Response:
    return event_stream(
        state.broker,
        topic,
        last_event_id=last_event_id_of(quart.request),
        heartbeat=state.heartbeat,
        retry=state.retry,
        min_write_interval=state.min_write_interval,
        expires_at=grant.expires_at,
        subject=grant.subject,
        observer=state.metrics,
        max_buffer=state.max_buffer,
        max_age=state.max_stream_age,
        drain=state.drain,
    )


def _stats(broker: Broker) -> dict[str, Any]:
    """The body of ``GET /stats``."""
    snapshot = broker.statistics()
    backplane = snapshot.backplane
    return {
        "subscribers": snapshot.subscribers,
        "topics": snapshot.topics,
        "published": snapshot.published,
        "delivered": snapshot.delivered,
        "dropped": snapshot.dropped,
        "retained_bytes": snapshot.retained_bytes,
        "subscribers_per_topic": dict(snapshot.subscribers_per_topic),
        "backplane": None
        if backplane is None
        else {
            "kind": backplane.kind,
            "connected": backplane.is_connected,
            "readers": backplane.readers,
            "reconnects": backplane.reconnects,
            "last_error": backplane.last_error,
        },
    }


def create_app(
    *,
    broker: Broker | None = None,
    heartbeat: float = DEFAULT_HEARTBEAT,
    retry: int | None = DEFAULT_RETRY,
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    min_write_interval: float = DEFAULT_MIN_WRITE_INTERVAL,
    max_buffer: int = DEFAULT_MAX_BUFFER,
    auth: AuthConfig | None = None,
    max_streams: int = DEFAULT_MAX_STREAMS,
    max_streams_per_ip: int = DEFAULT_MAX_STREAMS_PER_IP,
    cors: CorsPolicy | None = None,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
    max_stream_age: float = 0.0,
    max_topics_per_stream: int = DEFAULT_MAX_TOPICS_PER_STREAM,
    max_topics_per_publish: int = DEFAULT_MAX_TOPICS_PER_PUBLISH,
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
        max_buffer: Bytes a stream may hold for a client that does not keep up (see
            :func:`~trio_sse.web.event_stream`).
        auth: Who may publish and subscribe (:class:`~trio_sse.web.AuthConfig`);
            everything is open if omitted.
        max_streams: Streams open at once; more get 503 with ``Retry-After``. 0: no cap.
        max_streams_per_ip: The same, per client address. 0: no cap.
        cors: Which other origins' pages may stream and publish (see
            :class:`~trio_sse.web.CorsPolicy`); ``None`` allows the app's own origin only.
        body_timeout: Seconds a request gets to send its whole body (at most
            ``max_body_size`` bytes), on every route; slower gets 408 (see
            :class:`~trio_sse.web.BodyLimiter`).
        max_stream_age: If > 0, each stream ends cleanly after an age drawn from
            ``[0.9 * max_stream_age, max_stream_age]`` seconds, telling its client a
            jittered ``retry`` (see :func:`~trio_sse.web.event_stream`). 0: no limit.
        max_topics_per_stream: Topics one ``GET /events?topic=...`` may stream; more
            get 400.
        max_topics_per_publish: Topics one ``POST /publish`` may list; more get 400.

    The app's :class:`~trio_sse.web.StreamDrain` is ``state_of(app).drain``: its
    ``start(window)`` ends the open streams spread over ``window`` seconds (pass it as
    ``trio_sse.serve(drain_window=..., on_drain=...)``, as ``trio-sse serve
    --drain-window`` does), and from then on new streams get 503 and ``/healthz``
    says ``draining``.
    """
    if heartbeat < 0 or math.isnan(heartbeat):
        raise ValueError(f"heartbeat must be >= 0 seconds, got {heartbeat}")
    if not min_write_interval >= 0:
        raise ValueError(f"min_write_interval must be >= 0 seconds, got {min_write_interval}")
    if max_buffer < 1:
        raise ValueError(f"max_buffer must be >= 1 byte, got {max_buffer}")
    if max_body_size < 1:
        raise ValueError(f"max_body_size must be >= 1, got {max_body_size}")
    if not max_stream_age >= 0:
        raise ValueError(f"max_stream_age must be >= 0 seconds, got {max_stream_age}")
    if max_topics_per_stream < 1:
        raise ValueError(f"max_topics_per_stream must be >= 1, got {max_topics_per_stream}")
    if max_topics_per_publish < 1:
        raise ValueError(f"max_topics_per_publish must be >= 1, got {max_topics_per_publish}")
    # No static folder: the reference app serves no files, and apps built on it (the
    # monitor example) may mount their own /static.
    app = QuartTrio(__name__, static_folder=None)
    # Streams are sent by their own write loop rather than Quart's body loop.
    app.asgi_http_class = EventStreamConnection
    # Quart cuts any response after RESPONSE_TIMEOUT (60 s); streams opt out one by
    # one in event_stream(), and this covers routes a user adds to this app.
    app.config["RESPONSE_TIMEOUT"] = None
    app.config["MAX_CONTENT_LENGTH"] = max_body_size
    # Werkzeug answers "/events//news" with a 308 to "/events/news"; an API client
    # is better told plainly that the path is wrong (404) than silently redirected.
    app.url_map.merge_slashes = False
    limiter = StreamLimiter(
        app.asgi_app, max_streams=max_streams, max_streams_per_ip=max_streams_per_ip
    )
    # Outermost, so a request waiting for its body holds no stream slot.
    app.asgi_app = BodyLimiter(  # type: ignore[method-assign, assignment]
        limiter, timeout=body_timeout, max_size=max_body_size
    )
    broker = broker if broker is not None else MemoryBroker()

    def backplane_up() -> bool:
        backplane = broker.statistics().backplane
        return backplane is None or backplane.is_connected

    state = AppState(
        broker=broker,
        heartbeat=heartbeat,
        retry=retry,
        min_write_interval=min_write_interval,
        max_buffer=max_buffer,
        authorizer=Authorizer(auth if auth is not None else AuthConfig()),
        limiter=limiter,
        metrics=Metrics(broker, refused=lambda: limiter.refused, backplane_up=backplane_up),
        max_stream_age=max_stream_age,
        max_topics_per_stream=max_topics_per_stream,
        max_topics_per_publish=max_topics_per_publish,
    )
    app.extensions["trio_sse"] = state
    if cors is not None:
        enable_cors(app, cors)

    _install_error_handlers(app, max_body_size)

    @app.get("/events/<topic>")
    async def stream(topic: str) -> quart.ResponseReturnValue:
        validate_topic(topic)
        return _stream_response(state, topic, _authorize(state, Action.SUBSCRIBE, topic))

    @app.get("/events")
    async def stream_topics() -> quart.ResponseReturnValue:
        return _stream_topics(state)

    @app.post("/events/<topic>")
    async def publish(topic: str) -> quart.ResponseReturnValue:
        return await _publish(state, topic)

    @app.post("/publish")
    async def publish_batch() -> quart.ResponseReturnValue:
        return await _publish_batch(state)

    @app.get("/presence/<topic>")
    async def presence(topic: str) -> quart.ResponseReturnValue:
        return await _presence(state, topic)

    @app.get("/stats")
    async def stats() -> quart.ResponseReturnValue:
        return _stats(state.broker)

    @app.get("/metrics")
    async def metrics() -> quart.ResponseReturnValue:
        return state.metrics.render(), 200, {"Content-Type": METRICS_CONTENT_TYPE}

    @app.get("/livez")
    async def livez() -> quart.ResponseReturnValue:
        # Liveness: the event loop answers. Never tied to the backplane or to
        # draining, so an orchestrator does not restart a process that is merely
        # waiting for Redis or finishing its streams.
        return {"status": "alive"}

    readiness = _Readiness(state.broker, state.drain)

    @app.get("/healthz")
    async def healthz() -> quart.ResponseReturnValue:
        return await readiness.check()

    return app


app: Final = create_app()
"""The default app, for ``hypercorn --worker-class trio trio_sse.app:app``."""
