"""The ``trio-sse`` command: ``serve``, ``listen`` and ``publish``.

``listen`` and ``publish`` live in their own modules (``_cli_listen``,
``_cli_publish``); this one parses arguments and maps outcomes to exit statuses:
0 for success, 1 for an error told in one line on stderr, 2 for bad usage (argparse),
130 for Ctrl-C in ``listen``.
"""

from __future__ import annotations

import argparse
import functools
import logging
import math
import os
import sys
from collections.abc import Sequence

import trio

from ._cli_listen import listen, parse_headers
from ._cli_publish import publish
from .app import DEFAULT_MAX_BODY_SIZE, DEFAULT_RETRY, create_app
from .broker import DEFAULT_HISTORY, DEFAULT_QUEUE_SIZE, MemoryBroker
from .server import (
    DEFAULT_BACKLOG,
    DEFAULT_GRACEFUL_TIMEOUT,
    DEFAULT_TCP_USER_TIMEOUT,
    serve,
)
from .web import DEFAULT_HEARTBEAT, DEFAULT_MIN_WRITE_INTERVAL

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


def _positive_seconds(text: str) -> float:
    value = _at_least(0.0, float, text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


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
        "--write-interval",
        type=_seconds(),
        default=DEFAULT_MIN_WRITE_INTERVAL,
        help="batching window: while events come fast, a stream waits this long after a "
        "round of writes so that events published meanwhile share one write; 0 writes at once",
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
    _add_listen(commands)
    _add_publish(commands)
    return parser


def _add_listen(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    listen_cmd = commands.add_parser(
        "listen",
        help="print the events of a stream as they arrive",
        description=(
            "Print each event of an SSE stream as it arrives, reconnecting like a browser's "
            "EventSource. By default each event is a header line (its type and id), its data "
            "and an empty line; with --json, one JSON object per line. Exits 0 after a 204, "
            "--max-events or --timeout; 1 on a fatal error."
        ),
    )
    listen_cmd.add_argument("url", metavar="URL", help="the stream, e.g. http://host/events/news")
    listen_cmd.add_argument(
        "--json",
        action="store_true",
        dest="is_json",
        help='one {"event": ..., "data": ..., "id": ...} object per line',
    )
    listen_cmd.add_argument("--last-event-id", metavar="ID", help="resume after this event id")
    listen_cmd.add_argument(
        "--max-events", type=_count(1), metavar="N", help="exit 0 after N events"
    )
    listen_cmd.add_argument(
        "--timeout", type=_seconds(), metavar="S", help="exit 0 after S seconds"
    )
    listen_cmd.add_argument(
        "--idle-timeout",
        type=_positive_seconds,
        metavar="S",
        help="reconnect after S seconds without a byte (default: wait forever)",
    )
    listen_cmd.add_argument(
        "--max-retries",
        type=_count(0),
        metavar="N",
        help="give up (exit 1) after N failed reconnects in a row (default: never)",
    )
    listen_cmd.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="an extra request header; repeatable",
    )


def _add_publish(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    publish_cmd = commands.add_parser(
        "publish",
        help="publish one event to a server's POST /events/<topic>",
        description=(
            "POST one event to the reference app (POST /events/<topic>) and print its id. "
            "Exits 1, with the server's error message, if it is refused."
        ),
    )
    publish_cmd.add_argument("url", metavar="URL", help="e.g. http://127.0.0.1:8000/events/news")
    publish_cmd.add_argument("--data", required=True, metavar="TEXT", help="the event's data")
    publish_cmd.add_argument("--event", metavar="TYPE", help="the event type")
    publish_cmd.add_argument("--id", metavar="ID", help="the event id (default: the server's)")
    publish_cmd.add_argument(
        "--json-data",
        action="store_true",
        dest="is_json_data",
        help="parse --data as JSON and send that value",
    )


async def _serve(args: argparse.Namespace) -> None:
    broker = MemoryBroker(history=int(args.history), queue_size=int(args.queue_size))
    app = create_app(
        broker=broker,
        heartbeat=args.heartbeat,
        retry=int(args.retry),
        max_body_size=int(args.max_body),
        min_write_interval=args.write_interval,
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


def _listen(args: argparse.Namespace) -> int:
    try:
        headers = parse_headers(args.header)
    except ValueError as exc:
        print(f"trio-sse listen: {exc}", file=sys.stderr)
        return 1
    run = functools.partial(
        listen,
        args.url,
        out=sys.stdout,
        err=sys.stderr,
        is_json=args.is_json,
        headers=headers,
        last_event_id=args.last_event_id,
        max_events=None if args.max_events is None else int(args.max_events),
        idle_timeout=args.idle_timeout,
        max_retries=None if args.max_retries is None else int(args.max_retries),
    )

    async def listen_until_timeout() -> int:
        with trio.move_on_after(math.inf if args.timeout is None else args.timeout):
            return await run()
        return 0  # --timeout is a normal end

    try:
        return trio.run(listen_until_timeout)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of stdout (`| head`) has all it wanted. Point stdout at
        # /dev/null so that the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``trio-sse`` command line; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "listen":
        return _listen(args)
    if args.command == "publish":
        return publish(
            args.url,
            data=args.data,
            out=sys.stdout,
            err=sys.stderr,
            event=args.event,
            event_id=args.id,
            is_json_data=args.is_json_data,
        )
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
