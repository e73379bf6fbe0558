"""The peer baseline for `nox -s bench`: the same HTTP contract on sse-starlette and uvicorn.

    python benchmarks/peer_starlette.py [--host 127.0.0.1] [--port 0]

Routes, as `trio-sse serve` answers them:

* ``GET /events/<topic>``: an ``EventSourceResponse`` streaming the topic, each event
  with its id, and the library's default keep-alive ping (every 15 s).
* ``POST /events/<topic>``: body ``{"data": "..."}``; answers 202 ``{"id": "<id>"}``.
* ``GET /stats``: ``{"subscribers", "topics", "published", "delivered", "dropped",
  "subscribers_per_topic"}``.

The fan-out is sse-starlette as its users write it: one ``asyncio.Queue`` per
subscriber, filled by the publish route, drained by the response's async generator.
uvicorn runs with its defaults, which pick uvloop and httptools when installed (the
``bench`` extra installs ``uvicorn[standard]``, the install uvicorn recommends). It
logs the address it listens on in the form the benchmark runner looks for.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import socket
import sys
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

logger = logging.getLogger("peer_starlette")


class Hub:
    """Subscriber queues by topic, and the counters /stats reports."""

    def __init__(self) -> None:
        self.queues: dict[str, set[asyncio.Queue[tuple[str, str]]]] = {}
        # Ids increase by one per publish, as trio-sse's do.
        self.ids = itertools.count(1)
        self.topics: set[str] = set()
        self.published = 0
        self.delivered = 0

    def publish(self, topic: str, data: str) -> str:
        event_id = str(next(self.ids))
        self.topics.add(topic)
        self.published += 1
        for queue in self.queues.get(topic, ()):
            queue.put_nowait((event_id, data))
            self.delivered += 1
        return event_id

    async def events(self, topic: str) -> AsyncIterator[dict[str, str]]:
        queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self.queues.setdefault(topic, set()).add(queue)
        try:
            while True:
                event_id, data = await queue.get()
                yield {"id": event_id, "data": data}
        finally:
            subscribers = self.queues[topic]
            subscribers.discard(queue)
            if not subscribers:
                del self.queues[topic]

    def stats(self) -> dict[str, Any]:
        per_topic = {topic: len(queues) for topic, queues in self.queues.items()}
        return {
            "subscribers": sum(per_topic.values()),
            "topics": len(self.topics | per_topic.keys()),
            "published": self.published,
            "delivered": self.delivered,
            "dropped": 0,
            "subscribers_per_topic": per_topic,
        }


def create_app() -> Starlette:
    hub = Hub()

    async def stream(request: Request) -> EventSourceResponse:
        return EventSourceResponse(hub.events(request.path_params["topic"]))

    async def publish(request: Request) -> JSONResponse:
        body = await request.json()
        event_id = hub.publish(request.path_params["topic"], str(body["data"]))
        return JSONResponse({"id": event_id}, status_code=202)

    async def stats(request: Request) -> JSONResponse:
        return JSONResponse(hub.stats())

    return Starlette(
        routes=[
            Route("/events/{topic}", stream, methods=["GET"]),
            Route("/events/{topic}", publish, methods=["POST"]),
            Route("/stats", stats, methods=["GET"]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    # Bound here, so the real port is known when the port asked for is 0.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    # Listening before the address is logged, so that no client is refused meanwhile;
    # trio-sse serve's backlog, so that neither drops a connection storm.
    sock.listen(4096)
    host, port = sock.getsockname()
    config = uvicorn.Config(
        create_app(),
        access_log=False,
        log_level="warning",
        backlog=4096,
        # Open streams would otherwise hold a SIGTERM'ed server up indefinitely.
        timeout_graceful_shutdown=1,
    )
    print(f"Running on http://{host}:{port} (uvicorn, sse-starlette)", file=sys.stderr, flush=True)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
