"""The ``trio-sse`` command: ``serve``, ``listen``, ``publish`` and ``loadtest``.

Each command lives in a module of its own (``_cli_serve``, ``_cli_listen``,
``_cli_publish``, ``_cli_loadtest``); this one parses arguments and maps outcomes to
exit statuses: 0 for success, 1 for an error told in one line on stderr, 2 for bad
usage (argparse), 3 for a leaking server (``loadtest``), 130 for Ctrl-C.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys
from collections.abc import Sequence
from typing import Final
from urllib.parse import urlsplit

import trio

from . import __version__
from ._cli_listen import listen, parse_headers
from ._cli_loadtest import add_loadtest_parser, run_loadtest_command
from ._cli_publish import publish
from ._cli_serve import JWT_KEY_ENV, MEMORY, PUBLISH_TOKEN_ENV, run_serve
from .app import DEFAULT_MAX_BODY_SIZE, DEFAULT_MAX_TOPICS_PER_STREAM, DEFAULT_RETRY
from .broker import (
    DEFAULT_HISTORY,
    DEFAULT_HISTORY_BYTES,
    DEFAULT_HISTORY_TOTAL_BYTES,
    DEFAULT_HISTORY_TTL,
    DEFAULT_PRESENCE_TTL,
    DEFAULT_QUEUE_SIZE,
    DEFAULT_REPLICA_TIMEOUT,
    ENTRY_OVERHEAD,
    MAX_REPLICA_TIMEOUT,
    validate_idempotency_key,
)
from .errors import InvalidEventError
from .server import (
    DEFAULT_BACKLOG,
    DEFAULT_GRACEFUL_TIMEOUT,
    DEFAULT_TCP_USER_TIMEOUT,
)
from .web import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEARTBEAT,
    DEFAULT_MAX_BUFFER,
    DEFAULT_MAX_STREAMS,
    DEFAULT_MAX_STREAMS_PER_IP,
    DEFAULT_MIN_WRITE_INTERVAL,
)
from .web._auth import JWT_ALGORITHMS

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


def _finite_positive_seconds(text: str) -> float:
    value = _positive_seconds(text)
    if math.isinf(value):
        raise argparse.ArgumentTypeError("must be finite")
    return value


def _finite_seconds(text: str) -> float:
    value = _at_least(0.0, float, text)
    if math.isinf(value):
        raise argparse.ArgumentTypeError("must be finite")
    return value


def _port(text: str) -> int:
    port = int(_at_least(0, int, text))
    if port > 65535:
        raise argparse.ArgumentTypeError(f"must be <= 65535, got {text}")
    return port


def _replica_timeout(text: str) -> float:
    value = _positive_seconds(text)
    if value > MAX_REPLICA_TIMEOUT:
        raise argparse.ArgumentTypeError(f"must be <= {MAX_REPLICA_TIMEOUT:g}, got {text}")
    return value


def _broker_url(text: str) -> str:
    if text == MEMORY:
        return text
    scheme = urlsplit(text).scheme
    if scheme not in ("redis", "rediss", "unix", "redis+sentinel", "redis+cluster"):
        raise argparse.ArgumentTypeError(
            "expected 'memory' or a Redis URL: redis://host:port/db, "
            "redis+sentinel://host:port[,host:port...]/service for Redis behind Sentinel, "
            f"or redis+cluster://host:port[,host:port...] for a Redis Cluster; got {text!r}"
        )
    return text


def _idempotency_key(text: str) -> str:
    try:
        return validate_idempotency_key(text)
    except InvalidEventError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# Appended to the help of an option whose default says something; those without one
# (flags, secrets, paths) or whose default needs words (from the key, from the
# environment) say so in their own help.
_DEFAULT: Final = " (default: %(default)s)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trio-sse", description="Server-Sent Events on Trio: serve, publish and stream."
    )
    parser.add_argument("--version", action="version", version=f"trio-sse {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve_cmd = commands.add_parser(
        "serve",
        help="run the reference SSE server",
        description=(
            "Run the reference app under Hypercorn's trio worker. With --broker redis://..., "
            "every process and host using that Redis shares topics, ids and replay."
        ),
    )
    serve_cmd.add_argument("--host", default="127.0.0.1", help="address to listen on" + _DEFAULT)
    serve_cmd.add_argument(
        "--port", type=_port, default=8000, help="port; 0 picks a free one" + _DEFAULT
    )
    serve_cmd.add_argument(
        "--broker",
        type=_broker_url,
        default=MEMORY,
        metavar="URL",
        help="'memory' (this process only), a Redis URL, redis://[:password@]host:port/db, "
        "Redis behind Sentinel, redis+sentinel://host:port[,host:port...]/service, "
        "or a Redis Cluster, redis+cluster://host:port[,host:port...]; both follow a "
        "failover (needs the redis extra: pip install 'trio-sse[redis]')" + _DEFAULT,
    )
    serve_cmd.add_argument(
        "--broker-min-replicas",
        type=_count(0),
        default=0,
        metavar="N",
        help="with Redis, a publish answers 2xx only once N replicas have the event (Redis "
        "WAIT), so that a failover cannot lose it; else 503 saying where it is. 0: once the "
        "master has it (replication is asynchronous: a failover can lose the last events)"
        + _DEFAULT,
    )
    serve_cmd.add_argument(
        "--broker-replica-timeout",
        type=_replica_timeout,
        default=DEFAULT_REPLICA_TIMEOUT,
        metavar="SECONDS",
        help="seconds a publish waits for --broker-min-replicas (at most "
        f"{MAX_REPLICA_TIMEOUT:g})" + _DEFAULT,
    )
    serve_cmd.add_argument(
        "--workers",
        type=_count(1),
        default=1,
        metavar="N",
        help="worker processes sharing the listening socket; more than 1 needs --broker "
        "redis://" + _DEFAULT,
    )
    # Set by the parent of --workers N for each worker: the shared socket, the pipe
    # whose EOF tells a worker that the parent is gone, ...
    serve_cmd.add_argument("--listen-fd", type=int, default=None, help=argparse.SUPPRESS)
    serve_cmd.add_argument("--lifeline-fd", type=int, default=None, help=argparse.SUPPRESS)
    # ... and the pipe on which a worker tells the parent it serves (its URL).
    serve_cmd.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)
    serve_cmd.add_argument(
        "--heartbeat",
        type=_seconds(),
        default=DEFAULT_HEARTBEAT,
        metavar="SECONDS",
        help="seconds between heartbeat comments on an idle stream; 0 disables" + _DEFAULT,
    )
    serve_cmd.add_argument(
        "--write-interval",
        type=_seconds(),
        default=DEFAULT_MIN_WRITE_INTERVAL,
        metavar="SECONDS",
        help="batching window: while the server is saturated and events come fast, a stream "
        "writes at most once per window, so that events published meanwhile share one write; "
        "0 writes at once" + _DEFAULT,
    )
    serve_cmd.add_argument(
        "--history",
        type=_count(0),
        default=DEFAULT_HISTORY,
        metavar="N",
        help="events kept per topic" + _DEFAULT,
    )
    serve_cmd.add_argument(
        "--history-bytes",
        type=_count(0),
        default=DEFAULT_HISTORY_BYTES,
        metavar="BYTES",
        help="bytes of history kept per topic (each event counts its frame plus "
        f"{ENTRY_OVERHEAD} B in memory; its fields with Redis); a larger event is delivered "
        "but not kept (in memory) or kept alone (Redis)" + _DEFAULT,
    )
    serve_cmd.add_argument(
        "--history-ttl",
        type=_positive_seconds,
        default=DEFAULT_HISTORY_TTL,
        metavar="SECONDS",
        help="seconds an event is kept in history (and its Idempotency-Key remembered); with "
        "Redis, a topic with no publish for this long is removed" + _DEFAULT,
    )
    serve_cmd.add_argument(
        "--history-total-bytes",
        type=_count(0),
        default=DEFAULT_HISTORY_TOTAL_BYTES,
        metavar="BYTES",
        help="bytes of history kept in all topics together, oldest events dropped first "
        "(in-memory broker)" + _DEFAULT,
    )
    serve_cmd.add_argument(
        "--queue-size",
        type=_count(1),
        default=DEFAULT_QUEUE_SIZE,
        metavar="N",
        help="events a subscriber may lag before it is dropped as slow" + _DEFAULT,
    )
    serve_cmd.add_argument(
        "--retry",
        type=_count(0),
        default=DEFAULT_RETRY,
        metavar="MS",
        help="reconnect delay sent to clients, in milliseconds" + _DEFAULT,
    )
    serve_cmd.add_argument(
        "--max-body",
        type=_count(1),
        default=DEFAULT_MAX_BODY_SIZE,
        metavar="BYTES",
        help="largest publish body; a larger one gets 413" + _DEFAULT,
    )
    serve_cmd.add_argument(
        "--max-buffer",
        type=_count(1),
        default=DEFAULT_MAX_BUFFER,
        metavar="BYTES",
        help="bytes a stream may hold for a client that does not keep up (its queued "
        "events, and what HTTP/2 has not sent) before it is dropped as slow" + _DEFAULT,
    )
    serve_cmd.add_argument(
        "--body-timeout",
        type=_finite_positive_seconds,
        default=DEFAULT_BODY_TIMEOUT,
        metavar="SECONDS",
        help="seconds a request gets to send its whole body; slower gets 408" + _DEFAULT,
    )
    serve_cmd.add_argument(
        "--backlog",
        type=_count(1),
        default=DEFAULT_BACKLOG,
        metavar="N",
        help="connections the kernel queues before the server accepts them (capped by "
        "net.core.somaxconn)" + _DEFAULT,
    )
    serve_cmd.add_argument(
        "--tcp-user-timeout",
        type=_seconds(),
        default=DEFAULT_TCP_USER_TIMEOUT,
        metavar="SECONDS",
        help="seconds before a peer that stopped acknowledging is dropped; 0 keeps the kernel's "
        "(about 15 min)" + _DEFAULT,
    )
    serve_cmd.add_argument(
        "--graceful-timeout",
        type=_seconds(),
        default=DEFAULT_GRACEFUL_TIMEOUT,
        metavar="SECONDS",
        help="seconds connections get to finish on shutdown" + _DEFAULT,
    )
    serve_cmd.add_argument(
        "--drain-window",
        type=_finite_seconds,
        default=0.0,
        metavar="SECONDS",
        help="on SIGTERM/SIGINT, end the streams spread over this many seconds, each at a "
        "random moment and told a jittered retry, rather than all at once (the process exits "
        "within this plus --graceful-timeout); 0 ends them at once" + _DEFAULT,
    )
    serve_cmd.add_argument(
        "--max-stream-age",
        type=_finite_seconds,
        default=0.0,
        metavar="SECONDS",
        help="end each stream cleanly after an age drawn from [0.9, 1] times this, telling "
        "its client a jittered retry, so that long-lived clients spread again over the "
        "servers; 0: no limit" + _DEFAULT,
    )
    serve_cmd.add_argument(
        "--max-topics-per-stream",
        type=_count(1),
        default=DEFAULT_MAX_TOPICS_PER_STREAM,
        metavar="N",
        help="topics one GET /events?topic=a&topic=b... may stream; more get 400" + _DEFAULT,
    )
    serve_cmd.add_argument(
        "--presence-events",
        action="store_true",
        help='publish event: join and event: leave (data {"sub": ...}) on a topic as the '
        "subjects of stream tokens come and go, once per subject however many streams it "
        "has open (GET /presence/<topic> works without it)",
    )
    serve_cmd.add_argument(
        "--presence-ttl",
        type=_finite_positive_seconds,
        default=DEFAULT_PRESENCE_TTL,
        metavar="SECONDS",
        help="with a Redis broker: a worker that dies drops out of GET /presence (and its "
        "subjects get their leave events) within this many seconds; each worker refreshes "
        "its entries every third of it" + _DEFAULT,
    )
    serve_cmd.add_argument(
        "--cors-origin",
        action="append",
        # Absent unless given, so the help shows no "(default: [])".
        default=argparse.SUPPRESS,
        metavar="ORIGIN",
        help="let pages from ORIGIN (e.g. https://app.example.com, or * for any) stream "
        "and publish; repeatable; default: same origin only",
    )
    serve_cmd.add_argument(
        "--cors-credentials",
        action="store_true",
        help="let those pages send cookies and HTTP auth (not with *)",
    )
    _add_security_options(serve_cmd)
    serve_cmd.add_argument(
        "--certfile", metavar="PEM", help="serve HTTPS (HTTP/2 and 1.1) with this certificate chain"
    )
    serve_cmd.add_argument("--keyfile", metavar="PEM", help="the private key of --certfile")
    serve_cmd.add_argument("--access-log", action="store_true", help="log every request")
    serve_cmd.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="least severe log messages shown, on stderr" + _DEFAULT,
    )
    _add_listen(commands)
    _add_publish(commands)
    add_loadtest_parser(commands)
    parser.set_defaults(serve_parser=serve_cmd)
    return parser


def _add_security_options(serve_cmd: argparse.ArgumentParser) -> None:
    group = serve_cmd.add_argument_group(
        "authorization and limits",
        "Secrets are better passed in the environment (TRIO_SSE_PUBLISH_TOKEN, "
        "TRIO_SSE_JWT_KEY) than as arguments, which any local user can read in ps.",
    )
    # Secrets default to None here and are read from the environment later, so that
    # --help never prints them.
    group.add_argument(
        "--publish-token",
        metavar="TOKEN",
        default=None,
        help="publishing needs 'Authorization: Bearer TOKEN' (16 characters or more); "
        f"default: ${PUBLISH_TOKEN_ENV}",
    )
    group.add_argument(
        "--jwt-key",
        metavar="KEY",
        default=None,
        help="accept JWTs signed with this HS* secret, their trio_sse claim saying which "
        f"topics they may publish or subscribe to; default: ${JWT_KEY_ENV}",
    )
    group.add_argument(
        "--jwt-key-file",
        metavar="PATH",
        default=None,
        help="read the JWT key from PATH instead (an RS* public key in PEM, or a secret)",
    )
    group.add_argument(
        "--jwt-algorithm",
        choices=sorted(JWT_ALGORITHMS),
        default=None,
        help="the algorithm JWTs are signed with; default: from the key, RS256 for a "
        "public key (PEM or ssh-rsa), HS256 for a secret. One that does not suit the key "
        "(an RS* with a secret, an HS* with a PEM key, a private key) is refused at start-up",
    )
    group.add_argument(
        "--subscribe-auth",
        action="store_true",
        help="streams need a JWT too (header, trio_sse_token cookie or access_token query "
        "parameter); without it streams are public",
    )
    group.add_argument(
        "--max-streams",
        type=_count(0),
        default=DEFAULT_MAX_STREAMS,
        metavar="N",
        help="streams open at once; more get 503 + Retry-After; 0: no cap" + _DEFAULT,
    )
    group.add_argument(
        "--max-streams-per-ip",
        type=_count(0),
        default=DEFAULT_MAX_STREAMS_PER_IP,
        metavar="N",
        help="the same, per client address (behind a proxy: the proxy's); 0: no cap" + _DEFAULT,
    )
    group.add_argument(
        "--max-topics",
        type=_count(1),
        default=None,
        metavar="N",
        help="topics held at once: in memory, per process (a new one replaces the topic "
        "without subscribers that published least recently); with Redis, the topics Redis "
        "holds for all workers together (one counts until --history-ttl after its last "
        "publish) and the topics each process reads; default: 10000 in memory, 1000 with "
        "Redis (one reader connection each)",
    )


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
    listen_cmd.add_argument(
        "url",
        metavar="URL",
        help="the stream, e.g. http://host/events/news; with --topic, the server, e.g. http://host",
    )
    listen_cmd.add_argument(
        "--topic",
        action="append",
        default=[],
        dest="topics",
        metavar="TOPIC",
        help="stream this topic of the server at URL; repeatable: several topics share one "
        "connection (GET /events?topic=...), and each event shows its topic",
    )
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
        "--idempotency-key",
        type=_idempotency_key,
        metavar="KEY",
        help="1 to 128 visible ASCII characters; a publish repeating an earlier key of "
        "the topic (while its event is in history) publishes nothing and prints the "
        "earlier id; default: a random key. A 503 or a lost answer is retried once with it",
    )
    publish_cmd.add_argument(
        "--json-data",
        action="store_true",
        dest="is_json_data",
        help="parse --data as JSON and send that value",
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
        topics=args.topics,
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
    if args.command == "loadtest":
        return run_loadtest_command(args)
    if args.command == "publish":
        return publish(
            args.url,
            data=args.data,
            out=sys.stdout,
            err=sys.stderr,
            event=args.event,
            event_id=args.id,
            is_json_data=args.is_json_data,
            idempotency_key=args.idempotency_key,
        )
    return run_serve(args)


if __name__ == "__main__":
    sys.exit(main())
