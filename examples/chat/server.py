"""The chat room from the classic SSE tutorial, on trio_sse.

    python examples/chat/server.py [--host 127.0.0.1] [--port 8000]

Then open http://127.0.0.1:8000/ in a browser: the chat page (``static/``: plain HTML,
CSS and JavaScript on the browser's own ``EventSource``, nothing fetched from elsewhere).

* ``GET /`` is that page.
* ``GET /chat[?user=NAME]`` streams the room. Each new subscriber, and only that one,
  is greeted with an ``event: hello`` (``{"text", "online": <streams open>, "users":
  [<names>]}``); then come the room's 50 most recent events (a reconnect with
  ``Last-Event-ID`` gets what it missed instead), then every chat message as
  ``event: message``. With ``user``, the reader is present in the room while the stream
  is open, and the room gets ``event: join`` / ``event: leave`` (``{"sub": NAME}``) once
  per name, however many tabs it has open.
* ``GET /chat/online``: ``{"online": <streams open>, "users": [<names>]}``.
* ``GET /sse/livez`` and ``GET /sse/healthz``: trio_sse's probes, from its
  :class:`~trio_sse.hub.EventHub`, which also bounds request bodies (16 KiB) and open
  streams (10,000).
* ``POST /chat`` with ``{"user": "...", "text": "..."}`` (``Content-Type:
  application/json``, or 415) sends a message. The server adds ``"sent"``: the time
  it accepted the message, by its clock, in UTC (``2026-01-02T03:04:05.678Z``).
* Every disconnect is logged (``stream closed: topic=chat reason=client_closed ...``).

Try it:

    curl -N localhost:8000/chat
    curl -X POST localhost:8000/chat -H 'Content-Type: application/json' \\
         -d '{"user": "ana", "text": "hi"}'

Only trio_sse's public API is used; copy this file to start your own app.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import quart
import trio
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

import trio_sse
from trio_sse.hub import EventHub, Routes
from trio_sse.server import bind_or_exit

TOPIC: Final = "chat"
# Long enough for a paragraph, short enough that a screen shows several messages.
MAX_TEXT: Final = 2000
MAX_USER: Final = 64
# Events a page that just opened gets first: the room's recent messages, with the
# join and leave notices among them.
RECENT: Final = 50
# Names listed in a welcome and by GET /chat/online.
MAX_LISTED: Final = 200
STATIC: Final = Path(__file__).resolve().parent / "static"
# The page's own scripts and styles only: even if a message slipped into the page as
# markup, the browser would run none of its inline code (defence in depth: the page
# renders messages as text).
PAGE_CSP: Final = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)


def _json(event_type: str, **fields: Any) -> trio_sse.ServerSentEvent:
    return trio_sse.ServerSentEvent(json.dumps(fields, ensure_ascii=False), event=event_type)


def _field(body: dict[str, Any], name: str, limit: int) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        quart.abort(400, f'"{name}" must be a non-empty string')
    if len(value) > limit:
        quart.abort(400, f'"{name}" is longer than {limit} characters')
    return value


def _user_of(request: quart.Request) -> str | None:
    """The ``user`` query parameter: who the stream's reader says they are, if anyone.

    A demo takes the name on trust; ``trio-sse serve`` takes it from the token's ``sub``.
    """
    user = request.args.get("user")
    if user is None:
        return None
    if not user.strip() or len(user) > MAX_USER:
        quart.abort(400, f'"user" must be 1 to {MAX_USER} characters')
    return user


def _now() -> str:
    """The server's clock in UTC, ISO 8601 to the millisecond: ``2026-01-02T03:04:05.678Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").removesuffix("+00:00") + "Z"


def create_chat_app(broker: trio_sse.Broker) -> QuartTrio:
    """The chat app, publishing to and streaming from ``broker``."""
    app = QuartTrio(__name__, static_folder=str(STATIC), static_url_path="/static")
    # trio_sse's pieces: the stream's write loop, heartbeats and metrics; bounded
    # bodies and open streams (the room's own included); /livez and /healthz. Not its
    # generic publish route: the room's messages go through POST /chat, checked.
    hub = EventHub(broker=broker, retry=3000, max_body_size=16 * 1024, max_streams=10_000)
    hub.init_app(app, url_prefix="/sse", routes=Routes.HEALTH, stream_paths=["/chat"])

    @app.get("/")
    async def page() -> quart.ResponseReturnValue:
        response = await app.send_static_file("index.html")
        response.headers["Content-Security-Policy"] = PAGE_CSP
        response.headers["Cache-Control"] = "no-cache"
        return response

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> quart.ResponseReturnValue:
        return {"error": exc.description or exc.name}, exc.code or 500

    @app.get("/chat")
    async def stream() -> quart.ResponseReturnValue:
        user = _user_of(quart.request)
        present = await broker.presence(TOPIC, limit=MAX_LISTED)
        # This stream is not open yet: count it, and its user, in its own welcome.
        users = sorted({*present.subjects, *([user] if user else [])})
        hello = _json("hello", text="Welcome to the chat!", online=present.streams + 1, users=users)
        return hub.event_stream(
            TOPIC,
            initial=[hello],
            # A page that just opened shows the room's recent events; a reconnect
            # (Last-Event-ID) gets what it missed instead.
            backlog=RECENT,
            subject=user,
        )

    @app.get("/chat/online")
    async def online() -> quart.ResponseReturnValue:
        present = await broker.presence(TOPIC, limit=MAX_LISTED)
        return {"online": present.streams, "users": list(present.subjects)}

    @app.post("/chat")
    async def post() -> quart.ResponseReturnValue:
        # Any site's page may POST text/plain or a form here without asking; a JSON
        # content type needs a CORS preflight, which this app answers for nobody.
        if quart.request.mimetype != "application/json":
            quart.abort(415, "send messages as Content-Type: application/json")
        body = await quart.request.get_json(force=True, silent=True)
        if not isinstance(body, dict):
            quart.abort(400, 'body must be a JSON object like {"user": "ana", "text": "hi"}')
        message = _json(
            "message",
            user=_field(body, "user", MAX_USER),
            text=_field(body, "text", MAX_TEXT),
            # The sender's time, not each reader's: a replayed message keeps it.
            sent=_now(),
        )
        return {"id": await broker.publish(TOPIC, message)}, 202

    return app


async def main(sock: socket.socket) -> None:
    """Serve the chat on ``sock`` (bound by :func:`trio_sse.server.bind_or_exit`)."""
    # Join and leave events on the room: the page keeps its list of who is online.
    broker = trio_sse.MemoryBroker(presence_events=True)
    app = create_chat_app(broker)
    await trio_sse.serve(app, sock=sock, on_shutdown=broker.aclose)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    sock = bind_or_exit(args.host, args.port, prog=parser.prog)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    trio.run(main, sock)
