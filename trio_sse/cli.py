"""The ``trio-sse`` command."""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from collections.abc import Sequence

import trio

from .app import DEFAULT_MAX_BODY_SIZE, DEFAULT_RETRY, create_app
from .broker import DEFAULT_HISTORY, DEFAULT_QUEUE_SIZE, MemoryBroker
from .server import (
    DEFAULT_BACKLOG,
    DEFAULT_GRACEFUL_TIMEOUT,
    DEFAULT_TCP_USER_TIMEOUT,
    serve,
)
from .web import DEFAULT_HEARTBEAT

__all__ = ["main"]


def _at_least(minimum: float, kind: type[int] | type[float], text: str) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= minimum:  # also rejects NaN
        raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text}")
    return value


def _count(minimum: int) -> functools.partial[float]:
    return functools.partial(_at_least, minimum, int)


def _seconds(minimum: float = 0.0) -> functools.partial[float]:
    return functools.partial(_at_least, minimum, float)


def _port(text: str) -> int:
    port = int(_at_least(0, int, text))
    if port > 65535:
        raise argparse.ArgumentTypeError(f"must be <= 65535, got {text}")
    return port


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trio-sse", description="Server-Sent Events on Trio: serve, publish and stream."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve_cmd = commands.add_parser(
        "serve",
        help="run the reference SSE server (in-memory broker)",
        description="Run the reference app under Hypercorn's trio worker.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    serve_cmd.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve_cmd.add_argument("--port", type=_port, default=8000, help="port; 0 picks a free one")
    serve_cmd.add_argument(
        "--heartbeat", type=_seconds(), default=DEFAULT_HEARTBEAT, help="seconds; 0 disables"
    )
    serve_cmd.add_argument(
        "--history", type=_count(0), default=DEFAULT_HISTORY, help="events kept per topic"
    )
    serve_cmd.add_argument(
        "--queue-size",
        type=_count(1),
        default=DEFAULT_QUEUE_SIZE,
        help="events a subscriber may lag before it is dropped as slow",
    )
    serve_cmd.add_argument(
        "--retry",
        type=_count(0),
        default=DEFAULT_RETRY,
        help="reconnect delay sent to clients (ms)",
    )
    serve_cmd.add_argument(
        "--max-body", type=_count(1), default=DEFAULT_MAX_BODY_SIZE, help="publish body limit"
    )
    serve_cmd.add_argument("--backlog", type=_count(1), default=DEFAULT_BACKLOG)
    serve_cmd.add_argument(
        "--tcp-user-timeout",
        type=_seconds(),
        default=DEFAULT_TCP_USER_TIMEOUT,
        help="seconds before a peer that stopped acknowledging is dropped; 0 = kernel default",
    )
    serve_cmd.add_argument(
        "--graceful-timeout",
        type=_seconds(),
        default=DEFAULT_GRACEFUL_TIMEOUT,
        help="seconds connections get to finish on shutdown",
    )
    serve_cmd.add_argument("--access-log", action="store_true", help="log every request")
    serve_cmd.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    return parser


async def _serve(args: argparse.Namespace) -> None:
    broker = MemoryBroker(history=int(args.history), queue_size=int(args.queue_size))
    app = create_app(
        broker=broker,
        heartbeat=args.heartbeat,
        retry=int(args.retry),
        max_body_size=int(args.max_body),
    )
    await serve(
        app,
        host=args.host,
        port=args.port,
        backlog=int(args.backlog),
        tcp_user_timeout=args.tcp_user_timeout,
        graceful_timeout=args.graceful_timeout,
        access_log=args.access_log,
        on_shutdown=broker.aclose,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``trio-sse`` command line; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.command == "serve":
        try:
            trio.run(_serve, args)
        except OSError as exc:
            print(
                f"trio-sse serve: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr
            )
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
