"""An SSE server we did not write, as sse-starlette's users write one: the load tester's peer.

Run as ``python tests/peers/starlette_app.py [--leak-every N]``; it listens on a free
loopback port and logs ``Running on http://127.0.0.1:PORT`` on stderr.

Its contract is not ours:

* ``GET /events/{topic}``: ``text/event-stream`` (sse-starlette's ``EventSourceResponse``
  under uvicorn), resumed from a short history after ``Last-Event-ID``;
* ``POST /events/{topic}`` with ``{"data": "<string>"}`` (a string only: anything else
  is a 400), answered 202 with the event's id;
* ``GET /stats``: ``{"sse": {"clients": N}}``, the streams it counts as open.

With ``--leak-every N`` it has the classic bug of a hand-made subscriber registry: for
one stream in N, the clean-up that forgets the subscriber is skipped when the client
goes away, so ``/stats`` counts it for ever (a ghost), as an app whose clean-up sits
after its loop instead of in a ``finally`` does. It logs each such stream as it opens
(``stream N will never be forgotten``).
"""

from __future__ import annotations

import argparse
import itertools
import socket
import sys
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Final

import anyio
import uvicorn
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

# Events kept per topic for a resume: a few seconds of a test's publishing.
HISTORY_SIZE: Final = 1000
# Events waiting per subscriber; one that falls further behind is cut off and resumes.
QUEUE_SIZE: Final = 256
# A POST body is one small event.
MAX_BODY: Final = 64 * 1024

Event = tuple[int, str]  # (id, data)


@dataclass
class Topic:
    """One topic's subscribers and its recent events."""

    next_id: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    history: deque[Event] = field(default_factory=lambda: deque(maxlen=HISTORY_SIZE))
    subscribers: set[MemoryObjectSendStream[Event]] = field(default_factory=set)


class Registry:
    """Every topic, and how many streams are counted as open (``/stats``)."""

    def __init__(self, *, leak_every: int) -> None:
        self.topics: dict[str, Topic] = {}
        self.leak_every = leak_every
        self.streams_opened = 0

    def topic(self, name: str) -> Topic:
        return self.topics.setdefault(name, Topic())

    def clients(self) -> int:
        return sum(len(topic.subscribers) for topic in self.topics.values())

    def publish(self, name: str, data: str) -> int:
        topic = self.topic(name)
        event = (next(topic.next_id), data)
        topic.history.append(event)
        for send in list(topic.subscribers):
            try:
                send.send_nowait(event)
            except anyio.WouldBlock:
                # Too far behind: end its stream (it resumes from the history). It
                # stays counted until its own clean-up runs.
                send.close()
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass  # a ghost: its stream is gone, only the count remembers it
        return event[0]


def create_app(registry: Registry) -> Starlette:
    async def stream(request: Request) -> Response:
        topic = registry.topic(request.path_params["topic"])
        last_id = request.headers.get("last-event-id", "")
        after = int(last_id) if last_id.isdigit() else 0
        # Subscribe and take the replay in one step (no await between): every event is
        # either in the replay or in the queue, never both, never neither.
        send, receive = anyio.create_memory_object_stream[Event](QUEUE_SIZE)
        topic.subscribers.add(send)
        replay = [event for event in topic.history if event[0] > after]
        registry.streams_opened += 1
        is_leaked = registry.leak_every > 0 and registry.streams_opened % registry.leak_every == 0
        if is_leaked:
            number = registry.streams_opened
            print(f"stream {number} will never be forgotten", file=sys.stderr, flush=True)
        events = _events(topic, send, receive, replay, is_leaked=is_leaked)
        return EventSourceResponse(events, ping=15)

    async def publish(request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_BODY:
            return JSONResponse({"error": f"body over {MAX_BODY} bytes"}, status_code=413)
        try:
            document = await request.json()
        except ValueError:
            return JSONResponse({"error": "the body is not JSON"}, status_code=400)
        if not isinstance(document, dict) or not isinstance(document.get("data"), str):
            return JSONResponse({"error": '"data" must be a string'}, status_code=400)
        event_id = registry.publish(request.path_params["topic"], document["data"])
        return JSONResponse({"id": str(event_id)}, status_code=202)

    async def stats(request: Request) -> Response:
        return JSONResponse({"sse": {"clients": registry.clients()}})

    return Starlette(
        routes=[
            Route("/events/{topic}", stream, methods=["GET"]),
            Route("/events/{topic}", publish, methods=["POST"]),
            Route("/stats", stats, methods=["GET"]),
        ]
    )


async def _events(
    topic: Topic,
    send: MemoryObjectSendStream[Event],
    receive: MemoryObjectReceiveStream[Event],
    replay: list[Event],
    *,
    is_leaked: bool,
) -> AsyncIterator[dict[str, str]]:
    try:
        for event_id, data in replay:
            yield {"id": str(event_id), "data": data}
        async with receive:
            async for event_id, data in receive:
                yield {"id": str(event_id), "data": data}
    finally:
        # sse-starlette cancels this generator when the client goes away.
        if not is_leaked:  # the deliberate bug: this stream is never forgotten
            topic.subscribers.discard(send)
        send.close()
        receive.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leak-every", type=int, default=0, metavar="N")
    arguments = parser.parse_args()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)  # connections queue from now on, until uvicorn accepts them
    port = sock.getsockname()[1]
    app = create_app(Registry(leak_every=arguments.leak_every))
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    print(f"Running on http://127.0.0.1:{port}", file=sys.stderr, flush=True)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
