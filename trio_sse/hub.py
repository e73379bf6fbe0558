"""The reference app's pieces, for your own Quart-Trio app: :class:`EventHub`.

``trio_sse.create_app()`` is a bare ``QuartTrio`` app with one hub in it. To add the
same routes, token checks, stream caps, body bounds, metrics and CORS to an app of
your own, next to your own routes::

    app = QuartTrio(__name__)
    hub = EventHub(broker=broker, auth=AuthConfig(jwt_key=...), max_streams=10_000)
    hub.init_app(app, url_prefix="/sse", routes=Routes.STREAM | Routes.HEALTH)

    @app.get("/room")
    async def room():
        # One of your own streams, with the hub's settings, caps, metrics and drain.
        return hub.event_stream("room", backlog=50)

``examples/chat/server.py`` is built this way.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Sequence
from typing import Any, Final

import quart
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from .broker import Broker, MemoryBroker, validate_topic
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
    RequestError,
    StreamDrain,
    StreamLimiter,
    batch_event_of,
    batch_topics_of,
    check_json_content_type,
    enable_cors,
    event_from_body,
    event_stream,
    idempotency_key_of,
    last_event_id_of,
    payload_of,
    presence_limit_of,
    topics_of,
)
from .web._metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE

__all__ = [
    "DEFAULT_MAX_BODY_SIZE",
    "DEFAULT_MAX_TOPICS_PER_PUBLISH",
    "DEFAULT_MAX_TOPICS_PER_STREAM",
    "DEFAULT_RETRY",
    "EventHub",
    "Routes",
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

# What /healthz tells anyone who asks while the backplane is down. The broker's own
# error names the Redis host, port and database: that is for the log, not for the
# load balancer's (or the internet's) eyes.
_UNAVAILABLE: Final = "the backplane does not answer"

logger = logging.getLogger("trio_sse.app")


class Routes(enum.Flag):
    """Which of the hub's routes :meth:`EventHub.init_app` adds (combine with ``|``)."""

    STREAM = enum.auto()
    """``GET /events/<topic>`` and ``GET /events?topic=a&topic=b``."""

    PUBLISH = enum.auto()
    """``POST /events/<topic>`` and ``POST /publish``."""

    PRESENCE = enum.auto()
    """``GET /presence/<topic>``."""

    STATS = enum.auto()
    """``GET /stats`` and ``GET /metrics``, for the operator (expose them with care)."""

    HEALTH = enum.auto()
    """``GET /livez`` and ``GET /healthz``."""

    ALL = STREAM | PUBLISH | PRESENCE | STATS | HEALTH


def _error(message: str, status: int) -> quart.ResponseReturnValue:
    return {"error": message}, status


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


class EventHub:
    """Publishing, streaming and presence over HTTP, added to a Quart-Trio app.

    Args:
        broker: Where events go; a fresh :class:`~trio_sse.broker.MemoryBroker` if omitted.
        heartbeat: Seconds of silence before a stream gets a heartbeat comment; 0 disables.
        retry: Reconnection delay (ms) announced at the start of every stream; ``None``
            leaves it to the client.
        max_body_size: Largest request body, in bytes; larger ones get a 413.
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
            ``max_body_size`` bytes); slower gets 408 (see
            :class:`~trio_sse.web.BodyLimiter`).
        max_stream_age: If > 0, each stream ends cleanly after an age drawn from
            ``[0.9 * max_stream_age, max_stream_age]`` seconds, telling its client a
            jittered ``retry`` (see :func:`~trio_sse.web.event_stream`). 0: no limit.
        max_topics_per_stream: Topics one ``GET /events?topic=...`` may stream; more
            get 400.
        max_topics_per_publish: Topics one ``POST /publish`` may list; more get 400.

    Attributes:
        broker: The broker.
        drain: The hub's :class:`~trio_sse.web.StreamDrain`: ``drain.start(window)``
            ends the open streams spread over ``window`` seconds (pass it as
            ``trio_sse.serve(drain_window=..., on_drain=hub.drain.start)``); from then
            on new streams get 503 and ``/healthz`` says ``draining``.
        authorizer: Decides requests by ``auth``.
        metrics: What ``/metrics`` renders.
    """

    def __init__(
        self,
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
    ) -> None:
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
        if max_streams < 0 or max_streams_per_ip < 0:
            raise ValueError("stream limits must be >= 0 (0: no limit)")
        self.broker: Final = broker if broker is not None else MemoryBroker()
        self.drain: Final = StreamDrain()
        self.authorizer: Final = Authorizer(auth if auth is not None else AuthConfig())
        self.metrics: Final = Metrics(
            self.broker, refused=self._refused, backplane_up=self._backplane_up
        )
        self._heartbeat = heartbeat
        self._retry = retry
        self._max_body_size = max_body_size
        self._min_write_interval = min_write_interval
        self._max_buffer = max_buffer
        self._max_streams = max_streams
        self._max_streams_per_ip = max_streams_per_ip
        self._cors = cors
        self._body_timeout = body_timeout
        self._max_stream_age = max_stream_age
        self._max_topics_per_stream = max_topics_per_stream
        self._max_topics_per_publish = max_topics_per_publish
        self._limiter: StreamLimiter | None = None
        self._readiness = _Readiness(self.broker, self.drain)

    @classmethod
    def of(cls, app: quart.Quart) -> EventHub:
        """The hub :meth:`init_app` added to ``app``."""
        hub = app.extensions.get("trio_sse")
        if not isinstance(hub, cls):
            raise LookupError("no EventHub in this app: call EventHub(...).init_app(app)")
        return hub

    @property
    def limiter(self) -> StreamLimiter:
        """The stream caps (open streams, refusals); there once :meth:`init_app` ran."""
        if self._limiter is None:
            raise RuntimeError("the hub is not in an app yet: call init_app(app)")
        return self._limiter

    def _refused(self) -> int:
        return 0 if self._limiter is None else self._limiter.refused

    def _backplane_up(self) -> bool:
        backplane = self.broker.statistics().backplane
        return backplane is None or backplane.is_connected

    def init_app(
        self,
        app: QuartTrio,
        *,
        url_prefix: str = "",
        routes: Routes = Routes.ALL,
        stream_paths: Sequence[str] = (),
    ) -> None:
        """Add the hub to ``app``: its routes, and bounds and headers for the whole app.

        For the whole app (they are ASGI middleware and app settings, not per route):
        streams are sent by their own write loop (``app.asgi_http_class``); every
        request body is bounded in bytes and seconds (``max_body_size``,
        ``body_timeout``); the stream caps count the hub's streams and
        ``stream_paths``; with ``cors``, every response gets its headers; and the
        errors of trio_sse (a refused token, a bad topic or event, a closed or
        unavailable broker, a bad request) are answered as JSON ``{"error": ...}``
        wherever they are raised. The hub's own routes also answer HTTP errors (404,
        405, 413) as JSON.

        Args:
            app: A Quart-Trio app; one hub per app.
            url_prefix: Put before every route of the hub, e.g. ``"/sse"``.
            routes: Which routes to add (:class:`Routes`).
            stream_paths: Paths of your own stream routes (exact, or a prefix ending
                with ``/``) that the stream caps count too, e.g. ``["/room"]``.

        Raises:
            ValueError: ``app`` has a hub already, or ``url_prefix`` is not ``""`` or
                a path starting with ``/`` and not ending with one.
        """
        if "trio_sse" in app.extensions:
            raise ValueError("this app has an EventHub already")
        if url_prefix and (not url_prefix.startswith("/") or url_prefix.endswith("/")):
            raise ValueError(f"url_prefix must look like '/sse' (or be ''), got {url_prefix!r}")
        app.extensions["trio_sse"] = self
        # Streams are sent by their own write loop rather than Quart's body loop.
        app.asgi_http_class = EventStreamConnection
        # Werkzeug answers "/events//news" with a 308 to "/events/news"; an API client
        # is better told plainly that the path is wrong (404) than silently redirected.
        app.url_map.merge_slashes = False
        limiter = StreamLimiter(
            app.asgi_app,
            max_streams=self._max_streams,
            max_streams_per_ip=self._max_streams_per_ip,
            paths=[
                *(
                    [f"{url_prefix}/events", f"{url_prefix}/events/"]
                    if Routes.STREAM in routes
                    else []
                ),
                *stream_paths,
            ],
        )
        self._limiter = limiter
        # Outermost, so a request waiting for its body holds no stream slot.
        app.asgi_app = BodyLimiter(  # type: ignore[method-assign, assignment]
            limiter, timeout=self._body_timeout, max_size=self._max_body_size
        )
        if self._cors is not None:
            enable_cors(app, self._cors)
        self._install_error_handlers(app)
        app.register_blueprint(self._blueprint(routes), url_prefix=url_prefix or None)

    def event_stream(
        self,
        topic: str | Sequence[str],
        *,
        grant: Grant | None = None,
        initial: Sequence[ServerSentEvent] = (),
        backlog: int = 0,
        subject: str | None = None,
    ) -> quart.Response:
        """A stream response for one of your routes, with the hub's settings.

        As :func:`~trio_sse.web.event_stream`, resuming after the request's
        ``Last-Event-ID``, with the hub's heartbeat, retry, batching window, buffer
        bound, age limit, metrics and drain. ``grant`` (from :meth:`authorize`)
        ends the stream when the token expires and names its ``subject`` for presence
        (``subject`` names one without a token). Count the route in the caps with
        ``init_app(stream_paths=...)``.
        """
        if grant is not None and subject is None:
            subject = grant.subject
        return event_stream(
            self.broker,
            topic if isinstance(topic, str) else list(topic),
            last_event_id=last_event_id_of(quart.request),
            heartbeat=self._heartbeat,
            retry=self._retry,
            initial=initial,
            min_write_interval=self._min_write_interval,
            expires_at=None if grant is None else grant.expires_at,
            observer=self.metrics,
            max_buffer=self._max_buffer,
            max_age=self._max_stream_age,
            drain=self.drain,
            subject=subject,
            backlog=backlog,
        )

    def authorize(self, action: Action, topics: str | Sequence[str]) -> Grant:
        """Check the current request's token for ``action`` on every one of ``topics``.

        Raises:
            AuthError: 401 or 403 (answered as JSON by the hub's error handlers).
        """
        request = quart.request
        config = self.authorizer.config
        credentials = Credentials(
            authorization=request.headers.get("Authorization"),
            cookie=request.cookies.get(config.cookie_name),
            query=request.args.get(config.query_parameter),
        )
        names = (topics,) if isinstance(topics, str) else topics
        return self.authorizer.authorize_all(action, names, credentials)

    # The routes

    def _blueprint(self, routes: Routes) -> quart.Blueprint:
        blueprint = quart.Blueprint("trio_sse", __name__)

        @blueprint.errorhandler(HTTPException)
        async def http_error(exc: HTTPException) -> quart.ResponseReturnValue:
            status = exc.code or 500
            if status == 413:
                return _error(f"body larger than the {self._max_body_size}-byte limit", 413)
            return _error(exc.description or exc.name, status)

        if Routes.STREAM in routes:
            blueprint.add_url_rule("/events/<topic>", view_func=self._stream, methods=["GET"])
            blueprint.add_url_rule("/events", view_func=self._stream_topics, methods=["GET"])
        if Routes.PUBLISH in routes:
            blueprint.add_url_rule("/events/<topic>", view_func=self._publish, methods=["POST"])
            blueprint.add_url_rule("/publish", view_func=self._publish_batch, methods=["POST"])
        if Routes.PRESENCE in routes:
            blueprint.add_url_rule("/presence/<topic>", view_func=self._presence)
        if Routes.STATS in routes:
            blueprint.add_url_rule("/stats", view_func=self._stats)
            blueprint.add_url_rule("/metrics", view_func=self._metrics)
        if Routes.HEALTH in routes:
            blueprint.add_url_rule("/livez", view_func=self._livez)
            blueprint.add_url_rule("/healthz", view_func=self._healthz)
        return blueprint

    async def _stream(self, topic: str) -> quart.ResponseReturnValue:
        validate_topic(topic)
        return self.event_stream(topic, grant=self.authorize(Action.SUBSCRIBE, topic))

    async def _stream_topics(self) -> quart.ResponseReturnValue:
        topics = topics_of(quart.request, self._max_topics_per_stream)
        # One token check, then every topic against it: 403 names the first refused.
        return self.event_stream(topics, grant=self.authorize(Action.SUBSCRIBE, topics))

    async def _publish(self, topic: str) -> quart.ResponseReturnValue:
        # Check the topic and the token before reading the body: no work for a
        # request refused anyway.
        validate_topic(topic)
        self.authorize(Action.PUBLISH, topic)
        request = quart.request
        check_json_content_type(request)
        idempotency_key = idempotency_key_of(request)
        body = await request.get_data(cache=False)
        assert isinstance(body, bytes)
        event = event_from_body(body)
        event_id = await self.broker.publish(topic, event, idempotency_key=idempotency_key)
        # A repeated key answers exactly as the first request did: a client retrying
        # after a lost answer cannot tell, and need not.
        return {"id": event_id}, 202

    async def _publish_batch(self) -> quart.ResponseReturnValue:
        request = quart.request
        # The topics are in the body: every one is checked (name, then token) before
        # anything is published, so one refused topic refuses the whole batch.
        check_json_content_type(request)
        idempotency_key = idempotency_key_of(request)
        body = await request.get_data(cache=False)
        assert isinstance(body, bytes)
        payload = payload_of(body)
        topics = batch_topics_of(payload, self._max_topics_per_publish)
        self.authorize(Action.PUBLISH, topics)
        event = batch_event_of(payload)
        ids = await self.broker.publish_many(topics, event, idempotency_key=idempotency_key)
        return {"ids": ids}, 202

    async def _presence(self, topic: str) -> quart.ResponseReturnValue:
        # Who reads a topic is as private as what it carries: with --subscribe-auth,
        # reading it needs the same right.
        validate_topic(topic)
        self.authorize(Action.SUBSCRIBE, topic)
        found = await self.broker.presence(topic, limit=presence_limit_of(quart.request))
        return found.to_json()

    async def _stats(self) -> quart.ResponseReturnValue:
        return _stats(self.broker)

    async def _metrics(self) -> quart.ResponseReturnValue:
        return self.metrics.render(), 200, {"Content-Type": METRICS_CONTENT_TYPE}

    async def _livez(self) -> quart.ResponseReturnValue:
        # Liveness: the event loop answers. Never tied to the backplane or to
        # draining, so an orchestrator does not restart a process that is merely
        # waiting for Redis or finishing its streams.
        return {"status": "alive"}

    async def _healthz(self) -> quart.ResponseReturnValue:
        return await self._readiness.check()

    @staticmethod
    def _install_error_handlers(app: QuartTrio) -> None:
        """Answer trio_sse's errors with a JSON body and the right status, app-wide."""

        @app.errorhandler(RequestError)
        async def bad_request(exc: RequestError) -> quart.ResponseReturnValue:
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
            # The broker refused a field the protocol allows, e.g. an id that is not
            # a Redis stream id.
            return _error(str(exc), 400)
