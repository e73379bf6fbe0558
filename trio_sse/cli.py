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
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from urllib.parse import urlsplit

import trio

from ._cli_listen import listen, parse_headers
from ._cli_publish import publish
from ._errors import BrokerUnavailableError
from ._workers import run_workers, until_signal_or_orphaned
from .app import DEFAULT_MAX_BODY_SIZE, DEFAULT_RETRY, create_app
from .broker import DEFAULT_HISTORY, DEFAULT_QUEUE_SIZE, Broker, MemoryBroker
from .server import (
    DEFAULT_BACKLOG,
    DEFAULT_GRACEFUL_TIMEOUT,
    DEFAULT_TCP_USER_TIMEOUT,
    check_tls_files,
    listen_socket,
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


_MEMORY = "memory"


def _broker_url(text: str) -> str:
    if text == _MEMORY:
        return text
    scheme = urlsplit(text).scheme
    if scheme not in ("redis", "rediss", "unix"):
        raise argparse.ArgumentTypeError(
            f"expected 'memory' or a Redis URL (redis://host:port/db), got {text!r}"
        )
    return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trio-sse", description="Server-Sent Events on Trio: serve, publish and stream."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve_cmd = commands.add_parser(
        "serve",
        help="run the reference SSE server",
        description=(
            "Run the reference app under Hypercorn's trio worker. With --broker redis://..., "
            "every process and host using that Redis shares topics, ids and replay."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    serve_cmd.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve_cmd.add_argument("--port", type=_port, default=8000, help="port; 0 picks a free one")
    serve_cmd.add_argument(
        "--broker",
        type=_broker_url,
        default=_MEMORY,
        metavar="URL",
        help="'memory' (this process only) or a Redis URL, redis://[:password@]host:port/db "
        "(needs the redis extra: pip install 'trio-sse[redis]')",
    )
    serve_cmd.add_argument(
        "--workers",
        type=_count(1),
        default=1,
        metavar="N",
        help="worker processes sharing the listening socket; more than 1 needs --broker redis://",
    )
    # Set by the parent of --workers N for each worker: the shared socket, and the
    # pipe whose EOF tells a worker that the parent is gone.
    serve_cmd.add_argument("--listen-fd", type=int, default=None, help=argparse.SUPPRESS)
    serve_cmd.add_argument("--lifeline-fd", type=int, default=None, help=argparse.SUPPRESS)
    serve_cmd.add_argument(
        "--heartbeat", type=_seconds(), default=DEFAULT_HEARTBEAT, help="seconds; 0 disables"
    )
    serve_cmd.add_argument(
        "--write-interval",
        type=_seconds(),
        default=DEFAULT_MIN_WRITE_INTERVAL,
        help="seconds a stream waits after a write, so events published meanwhile share "
        "the next one; 0 writes at once",
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
    serve_cmd.add_argument(
        "--certfile", metavar="PEM", help="serve HTTPS (HTTP/2 and 1.1) with this certificate chain"
    )
    serve_cmd.add_argument("--keyfile", metavar="PEM", help="the private key of --certfile")
    serve_cmd.add_argument("--access-log", action="store_true", help="log every request")
    serve_cmd.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    _add_listen(commands)
    _add_publish(commands)
    parser.set_defaults(serve_parser=serve_cmd)
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


class _StartupError(Exception):
    """A reason ``serve`` cannot start, told to the user in one line."""


@asynccontextmanager
async def _open_broker(args: argparse.Namespace) -> AsyncIterator[Broker]:
    history, queue_size = int(args.history), int(args.queue_size)
    if args.broker == _MEMORY:
        yield MemoryBroker(history=history, queue_size=queue_size)
        return
    try:
        from .redis import open_redis_broker  # noqa: PLC0415 - coredis is an optional extra
    except ImportError as exc:
        raise _StartupError(
            f"--broker {args.broker} needs the redis extra (pip install 'trio-sse[redis]'): {exc}"
        ) from None
    async with AsyncExitStack() as stack:
        try:
            broker = await stack.enter_async_context(
                open_redis_broker(args.broker, history=history, queue_size=queue_size)
            )
        except (ValueError, BrokerUnavailableError) as exc:
            raise _StartupError(f"cannot use the broker {args.broker}: {exc}") from None
        yield broker


async def _serve(args: argparse.Namespace) -> None:
    sock = None if args.listen_fd is None else socket.socket(fileno=args.listen_fd)
    async with _open_broker(args) as broker:
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
            shutdown_trigger=functools.partial(until_signal_or_orphaned, args.lifeline_fd),
            sock=sock,
            certfile=args.certfile,
            keyfile=args.keyfile,
        )


def _worker_command(args: argparse.Namespace, listen_fd: int) -> list[str]:
    """``trio-sse serve`` with the same options, as one worker on ``listen_fd``."""
    command = [sys.executable, "-m", "trio_sse.cli", "serve"]
    parser: argparse.ArgumentParser = args.serve_parser
    for action in parser._actions:
        value = getattr(args, action.dest, None)
        if not action.option_strings or action.dest in ("help", "workers", "listen_fd"):
            continue
        if action.dest == "lifeline_fd" or value is None or value is False:
            continue
        option = action.option_strings[-1]
        command += [option] if value is True else [option, str(value)]
    return [*command, "--listen-fd", str(listen_fd)]


def _check_tls(args: argparse.Namespace) -> None:
    # Once, before any worker starts, rather than the same error from every worker.
    if args.certfile is not None:
        try:
            check_tls_files(args.certfile, args.keyfile)
        except ValueError as exc:
            raise _StartupError(str(exc)) from None


async def _check_broker(args: argparse.Namespace) -> None:
    async with _open_broker(args):
        pass


def _serve_workers(args: argparse.Namespace) -> int:
    # One clear error here rather than the same one from every worker.
    trio.run(_check_broker, args)
    sock = listen_socket(args.host, args.port, tcp_user_timeout=args.tcp_user_timeout)
    with sock:
        command = _worker_command(args, sock.fileno())
        # Workers must not outlast a stalled client's TCP_USER_TIMEOUT by much.
        stop_timeout = args.graceful_timeout + args.tcp_user_timeout + 2.0
        return trio.run(
            functools.partial(
                run_workers,
                command,
                count=int(args.workers),
                listen_fd=sock.fileno(),
                stop_timeout=stop_timeout,
            )
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
        if args.workers > 1 and args.broker == _MEMORY:
            args.serve_parser.error(
                "--workers > 1 needs a shared broker (--broker redis://host:port/db): with the "
                "in-memory broker each worker has its own topics, and a publish would reach "
                "only the subscribers of the worker that took it"
            )
        if (args.certfile is None) != (args.keyfile is None):
            args.serve_parser.error("--certfile and --keyfile go together: give both or neither")
        try:
            _check_tls(args)
            if args.workers > 1:
                return _serve_workers(args)
            trio.run(_serve, args)
        except _StartupError as exc:
            print(f"trio-sse serve: {exc}", file=sys.stderr)
            return 1
        except OSError as exc:
            print(
                f"trio-sse serve: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr
            )
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
