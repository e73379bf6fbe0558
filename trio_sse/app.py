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

Run it with ``trio-sse serve``, or under the Hypercorn CLI as ``trio_sse.app:app``. The
same routes, caps and checks go into an app of your own with :class:`trio_sse.hub.EventHub`.
"""

from __future__ import annotations

from typing import Final

import quart
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from .broker import Broker
from .hub import (
    DEFAULT_MAX_BODY_SIZE,
    DEFAULT_MAX_TOPICS_PER_PUBLISH,
    DEFAULT_MAX_TOPICS_PER_STREAM,
    DEFAULT_RETRY,
    EventHub,
)
from .web import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEARTBEAT,
    DEFAULT_MAX_BUFFER,
    DEFAULT_MAX_STREAMS,
    DEFAULT_MAX_STREAMS_PER_IP,
    DEFAULT_MIN_WRITE_INTERVAL,
    MAX_INT_DIGITS,
    AuthConfig,
    CorsPolicy,
)

__all__ = [
    "DEFAULT_MAX_BODY_SIZE",
    "DEFAULT_MAX_TOPICS_PER_PUBLISH",
    "DEFAULT_MAX_TOPICS_PER_STREAM",
    "DEFAULT_RETRY",
    "MAX_INT_DIGITS",
    "app",
    "create_app",
]


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
    """Create the reference app: a bare Quart-Trio app with one :class:`~trio_sse.hub.EventHub`.

    The arguments are the hub's (see :class:`~trio_sse.hub.EventHub`); the hub is
    ``EventHub.of(app)``, its drain ``EventHub.of(app).drain`` (pass
    ``drain.start`` as ``trio_sse.serve(on_drain=...)``, as ``trio-sse serve
    --drain-window`` does). Every error answer of the app, unknown routes included,
    is JSON.
    """
    hub = EventHub(
        broker=broker,
        heartbeat=heartbeat,
        retry=retry,
        max_body_size=max_body_size,
        min_write_interval=min_write_interval,
        max_buffer=max_buffer,
        auth=auth,
        max_streams=max_streams,
        max_streams_per_ip=max_streams_per_ip,
        cors=cors,
        body_timeout=body_timeout,
        max_stream_age=max_stream_age,
        max_topics_per_stream=max_topics_per_stream,
        max_topics_per_publish=max_topics_per_publish,
    )
    # No static folder: the reference app serves no files, and apps built on it (the
    # monitor example) may mount their own /static.
    app = QuartTrio(__name__, static_folder=None)
    # Quart cuts any response after RESPONSE_TIMEOUT (60 s); streams opt out one by
    # one in event_stream(), and this covers routes a user adds to this app.
    app.config["RESPONSE_TIMEOUT"] = None
    app.config["MAX_CONTENT_LENGTH"] = max_body_size
    hub.init_app(app)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> quart.ResponseReturnValue:
        # Outside the hub's routes too (an unknown path, a wrong method): JSON.
        status = exc.code or 500
        if status == 413:
            return {"error": f"body larger than the {max_body_size}-byte limit"}, 413
        return {"error": exc.description or exc.name}, status

    return app


app: Final = create_app()
"""The default app, for ``hypercorn --worker-class trio trio_sse.app:app``."""
