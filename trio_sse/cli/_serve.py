"""``trio-sse serve``: run the reference app, on one process or on N workers.

:func:`configure` adds the options; :func:`options_from` turns the parsed arguments into
one :class:`ServeOptions`, refusing bad combinations as usage errors; :func:`run` builds
a broker, an app and a server from it and maps start-up failures to one line on stderr
and status 1.

With ``--workers N``, each worker is ``python -m trio_sse.cli`` given the user's own
arguments again plus ``--listen-fd`` (the shared socket), so that it parses them into
the same options (ignoring ``--workers``). Secrets read from the environment reach the
workers through the environment they inherit, never through a command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import os
import re
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import trio

from ..app import (
    DEFAULT_MAX_BODY_SIZE,
    DEFAULT_MAX_TOPICS_PER_STREAM,
    DEFAULT_RETRY,
    create_app,
)
from ..broker import (
    DEFAULT_HISTORY,
    DEFAULT_HISTORY_BYTES,
    DEFAULT_HISTORY_TOTAL_BYTES,
    DEFAULT_HISTORY_TTL,
    DEFAULT_MAX_TOPICS,
    DEFAULT_PRESENCE_TTL,
    DEFAULT_QUEUE_SIZE,
    DEFAULT_REPLICA_TIMEOUT,
    ENTRY_OVERHEAD,
    MAX_REPLICA_TIMEOUT,
    Broker,
    MemoryBroker,
)
from ..errors import BrokerUnavailableError
from ..file_limit import raise_open_file_limit
from ..hub import EventHub
from ..server import (
    DEFAULT_BACKLOG,
    DEFAULT_GRACEFUL_TIMEOUT,
    DEFAULT_TCP_USER_TIMEOUT,
    ReadyReport,
    check_tls_files,
    listen_socket,
    run_workers,
    serve,
    until_signal_or_orphaned,
    use_server_gc_policy,
)
from ..web import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEARTBEAT,
    DEFAULT_MAX_BUFFER,
    DEFAULT_MAX_STREAMS,
    DEFAULT_MAX_STREAMS_PER_IP,
    DEFAULT_MIN_WRITE_INTERVAL,
    AuthConfig,
    CorsPolicy,
)
from ..web._auth import JWT_ALGORITHMS, jwt_key_family
from ._arguments import (
    count,
    finite_positive_seconds,
    finite_seconds,
    port,
    positive_seconds,
    seconds,
)

__all__ = [
    "DESCRIPTION",
    "JWT_KEY_ENV",
    "MEMORY",
    "PUBLISH_TOKEN_ENV",
    "ServeOptions",
    "broker_url",
    "configure",
    "options_from",
    "replica_timeout",
    "run",
]

MEMORY: Final = "memory"
PUBLISH_TOKEN_ENV: Final = "TRIO_SSE_PUBLISH_TOKEN"  # noqa: S105 - a variable name, not a secret
JWT_KEY_ENV: Final = "TRIO_SSE_JWT_KEY"

DESCRIPTION: Final = (
    "Run the reference app under Hypercorn's trio worker. With --broker redis://..., "
    "every process and host using that Redis shares topics, ids and replay."
)

# Appended to the help of an option whose default says something; those without one
# (flags, secrets, paths) or whose default needs words (from the key, from the
# environment) say so in their own help.
_DEFAULT: Final = " (default: %(default)s)"

# The --log-level choices, by logging level.
_LOG_LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def replica_timeout(text: str) -> float:
    """The argument type of ``--broker-replica-timeout``."""
    value = positive_seconds(text)
    if value > MAX_REPLICA_TIMEOUT:
        raise argparse.ArgumentTypeError(f"must be <= {MAX_REPLICA_TIMEOUT:g}, got {text}")
    return value


def broker_url(text: str) -> str:
    """The argument type of ``--broker``: ``memory`` or a Redis URL of a scheme we open."""
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


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``trio-sse serve`` to ``parser``."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on" + _DEFAULT)
    parser.add_argument(
        "--port", type=port, default=8000, help="port; 0 picks a free one" + _DEFAULT
    )
    parser.add_argument(
        "--broker",
        type=broker_url,
        default=MEMORY,
        metavar="URL",
        help="'memory' (this process only), a Redis URL, redis://[:password@]host:port/db, "
        "Redis behind Sentinel, redis+sentinel://host:port[,host:port...]/service, "
        "or a Redis Cluster, redis+cluster://host:port[,host:port...]; both follow a "
        "failover (needs the redis extra: pip install 'trio-sse[redis]')" + _DEFAULT,
    )
    parser.add_argument(
        "--broker-min-replicas",
        type=count(0),
        default=0,
        metavar="N",
        help="with Redis, a publish answers 2xx only once N replicas have the event (Redis "
        "WAIT), so that a failover cannot lose it; else 503 saying where it is. 0: once the "
        "master has it (replication is asynchronous: a failover can lose the last events)"
        + _DEFAULT,
    )
    parser.add_argument(
        "--broker-replica-timeout",
        type=replica_timeout,
        default=DEFAULT_REPLICA_TIMEOUT,
        metavar="SECONDS",
        help="seconds a publish waits for --broker-min-replicas (at most "
        f"{MAX_REPLICA_TIMEOUT:g})" + _DEFAULT,
    )
    parser.add_argument(
        "--workers",
        type=count(1),
        default=1,
        metavar="N",
        help="worker processes sharing the listening socket; more than 1 needs --broker "
        "redis://" + _DEFAULT,
    )
    # Set by the parent of --workers N for each worker: the shared socket, the pipe
    # whose EOF tells a worker that the parent is gone, ...
    parser.add_argument("--listen-fd", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--lifeline-fd", type=int, default=None, help=argparse.SUPPRESS)
    # ... and the pipe on which a worker tells the parent it serves (its URL).
    parser.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--heartbeat",
        type=seconds(),
        default=DEFAULT_HEARTBEAT,
        metavar="SECONDS",
        help="seconds between heartbeat comments on an idle stream; 0 disables" + _DEFAULT,
    )
    parser.add_argument(
        "--write-interval",
        type=seconds(),
        default=DEFAULT_MIN_WRITE_INTERVAL,
        metavar="SECONDS",
        help="batching window: while the server is saturated and events come fast, a stream "
        "writes at most once per window, so that events published meanwhile share one write; "
        "0 writes at once" + _DEFAULT,
    )
    parser.add_argument(
        "--history",
        type=count(0),
        default=DEFAULT_HISTORY,
        metavar="N",
        help="events kept per topic" + _DEFAULT,
    )
    parser.add_argument(
        "--history-bytes",
        type=count(0),
        default=DEFAULT_HISTORY_BYTES,
        metavar="BYTES",
        help="bytes of history kept per topic (each event counts its frame plus "
        f"{ENTRY_OVERHEAD} B in memory; its fields with Redis); a larger event is delivered "
        "but not kept (in memory) or kept alone (Redis)" + _DEFAULT,
    )
    parser.add_argument(
        "--history-ttl",
        type=positive_seconds,
        default=DEFAULT_HISTORY_TTL,
        metavar="SECONDS",
        help="seconds an event is kept in history (and its Idempotency-Key remembered); with "
        "Redis, a topic with no publish for this long is removed" + _DEFAULT,
    )
    parser.add_argument(
        "--history-total-bytes",
        type=count(0),
        default=DEFAULT_HISTORY_TOTAL_BYTES,
        metavar="BYTES",
        help="bytes of history kept in all topics together, oldest events dropped first "
        "(in-memory broker)" + _DEFAULT,
    )
    parser.add_argument(
        "--queue-size",
        type=count(1),
        default=DEFAULT_QUEUE_SIZE,
        metavar="N",
        help="events a subscriber may lag before it is dropped as slow" + _DEFAULT,
    )
    parser.add_argument(
        "--retry",
        type=count(0),
        default=DEFAULT_RETRY,
        metavar="MS",
        help="reconnect delay sent to clients, in milliseconds" + _DEFAULT,
    )
    parser.add_argument(
        "--max-body",
        type=count(1),
        default=DEFAULT_MAX_BODY_SIZE,
        metavar="BYTES",
        help="largest publish body; a larger one gets 413" + _DEFAULT,
    )
    parser.add_argument(
        "--max-buffer",
        type=count(1),
        default=DEFAULT_MAX_BUFFER,
        metavar="BYTES",
        help="bytes a stream may hold for a client that does not keep up (its queued "
        "events, and what HTTP/2 has not sent) before it is dropped as slow" + _DEFAULT,
    )
    parser.add_argument(
        "--body-timeout",
        type=finite_positive_seconds,
        default=DEFAULT_BODY_TIMEOUT,
        metavar="SECONDS",
        help="seconds a request gets to send its whole body; slower gets 408" + _DEFAULT,
    )
    parser.add_argument(
        "--backlog",
        type=count(1),
        default=DEFAULT_BACKLOG,
        metavar="N",
        help="connections the kernel queues before the server accepts them (capped by "
        "net.core.somaxconn)" + _DEFAULT,
    )
    parser.add_argument(
        "--tcp-user-timeout",
        type=seconds(),
        default=DEFAULT_TCP_USER_TIMEOUT,
        metavar="SECONDS",
        help="seconds before a peer that stopped acknowledging is dropped; 0 keeps the kernel's "
        "(about 15 min)" + _DEFAULT,
    )
    parser.add_argument(
        "--graceful-timeout",
        type=seconds(),
        default=DEFAULT_GRACEFUL_TIMEOUT,
        metavar="SECONDS",
        help="seconds connections get to finish on shutdown" + _DEFAULT,
    )
    parser.add_argument(
        "--drain-window",
        type=finite_seconds,
        default=0.0,
        metavar="SECONDS",
        help="on SIGTERM/SIGINT, end the streams spread over this many seconds, each at a "
        "random moment and told a jittered retry, rather than all at once (the process exits "
        "within this plus --graceful-timeout); 0 ends them at once" + _DEFAULT,
    )
    parser.add_argument(
        "--max-stream-age",
        type=finite_seconds,
        default=0.0,
        metavar="SECONDS",
        help="end each stream cleanly after an age drawn from [0.9, 1] times this, telling "
        "its client a jittered retry, so that long-lived clients spread again over the "
        "servers; 0: no limit" + _DEFAULT,
    )
    parser.add_argument(
        "--max-topics-per-stream",
        type=count(1),
        default=DEFAULT_MAX_TOPICS_PER_STREAM,
        metavar="N",
        help="topics one GET /events?topic=a&topic=b... may stream; more get 400" + _DEFAULT,
    )
    parser.add_argument(
        "--presence-events",
        action="store_true",
        help='publish event: join and event: leave (data {"sub": ...}) on a topic as the '
        "subjects of stream tokens come and go, once per subject however many streams it "
        "has open (GET /presence/<topic> works without it)",
    )
    parser.add_argument(
        "--presence-ttl",
        type=finite_positive_seconds,
        default=DEFAULT_PRESENCE_TTL,
        metavar="SECONDS",
        help="with a Redis broker: a worker that dies drops out of GET /presence (and its "
        "subjects get their leave events) within this many seconds; each worker refreshes "
        "its entries every third of it" + _DEFAULT,
    )
    parser.add_argument(
        "--cors-origin",
        action="append",
        # Absent unless given, so the help shows no "(default: [])".
        default=argparse.SUPPRESS,
        metavar="ORIGIN",
        help="let pages from ORIGIN (e.g. https://app.example.com, or * for any) stream "
        "and publish; repeatable; default: same origin only",
    )
    parser.add_argument(
        "--cors-credentials",
        action="store_true",
        help="let those pages send cookies and HTTP auth (not with *)",
    )
    _add_security_options(parser)
    parser.add_argument(
        "--certfile", metavar="PEM", help="serve HTTPS (HTTP/2 and 1.1) with this certificate chain"
    )
    parser.add_argument("--keyfile", metavar="PEM", help="the private key of --certfile")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="least severe log messages shown, on stderr" + _DEFAULT,
    )


def _add_security_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
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
        type=count(0),
        default=DEFAULT_MAX_STREAMS,
        metavar="N",
        help="streams open at once; more get 503 + Retry-After; 0: no cap" + _DEFAULT,
    )
    group.add_argument(
        "--max-streams-per-ip",
        type=count(0),
        default=DEFAULT_MAX_STREAMS_PER_IP,
        metavar="N",
        help="the same, per client address (behind a proxy: the proxy's); 0: no cap" + _DEFAULT,
    )
    group.add_argument(
        "--max-topics",
        type=count(1),
        default=None,
        metavar="N",
        help="topics held at once: in memory, per process (a new one replaces the topic "
        "without subscribers that published least recently); with Redis, the topics Redis "
        "holds for all workers together (one counts until --history-ttl after its last "
        "publish) and the topics each process reads; default: 10000 in memory, 1000 with "
        "Redis (one reader connection each)",
    )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ServeOptions:
    """What ``trio-sse serve`` was asked for, checked: built once by :func:`options_from`.

    Each attribute is the option of the same name, as a number of its unit where it has
    one; the exceptions are said.

    Attributes:
        argv: The arguments of ``trio-sse`` these options were parsed from (``serve``
            and its options), which each worker of ``--workers N`` parses again. Left out
            of the repr: it may hold a secret.
        broker: ``memory`` (:data:`MEMORY`) or a Redis URL.
        workers: Processes to serve with; always 1 in a worker.
        listen_fd: In a worker, the listening socket its parent shares; else ``None``.
        lifeline_fd: In a worker, the pipe whose EOF says that its parent is gone.
        ready_fd: In a worker, the pipe on which it tells its parent that it serves.
        max_topics: ``None``: the broker's own default (10000 in memory, 1000 with Redis).
        cors: From ``--cors-origin`` and ``--cors-credentials``; ``None``: same origin only.
        auth: From the secrets given as options, in the environment or in
            ``--jwt-key-file``, ``--jwt-algorithm`` and ``--subscribe-auth``. Left out of
            the repr: it holds the secrets.
        log_level: The :mod:`logging` level of ``--log-level``.

    Raises:
        ValueError: A combination of options that cannot work, naming the options.
    """

    argv: tuple[str, ...] = dataclasses.field(repr=False)
    host: str
    port: int
    broker: str
    broker_min_replicas: int
    broker_replica_timeout: float
    workers: int
    listen_fd: int | None
    lifeline_fd: int | None
    ready_fd: int | None
    heartbeat: float
    write_interval: float
    history: int
    history_bytes: int
    history_ttl: float
    history_total_bytes: int
    queue_size: int
    retry: int
    max_body: int
    max_buffer: int
    body_timeout: float
    backlog: int
    tcp_user_timeout: float
    graceful_timeout: float
    drain_window: float
    max_stream_age: float
    max_topics_per_stream: int
    presence_events: bool
    presence_ttl: float
    cors: CorsPolicy | None
    auth: AuthConfig = dataclasses.field(repr=False)
    max_streams: int
    max_streams_per_ip: int
    max_topics: int | None
    certfile: str | None
    keyfile: str | None
    access_log: bool
    log_level: int

    def __post_init__(self) -> None:
        if (self.certfile is None) != (self.keyfile is None):
            raise ValueError("--certfile and --keyfile go together: give both or neither")
        if self.workers > 1 and self.broker == MEMORY:
            raise ValueError(
                "--workers > 1 needs a shared broker (--broker redis://host:port/db): with the "
                "in-memory broker each worker has its own topics, and a publish would reach "
                "only the subscribers of the worker that took it"
            )
        if self.broker_min_replicas > 0 and self.broker == MEMORY:
            raise ValueError(
                "--broker-min-replicas needs a Redis broker: the in-memory one has no replicas"
            )

    @property
    def is_worker(self) -> bool:
        """Whether this process is one worker of a ``--workers N`` parent."""
        return self.listen_fd is not None


def options_from(
    args: argparse.Namespace, *, parser: argparse.ArgumentParser, argv: Sequence[str]
) -> ServeOptions:
    """The options of ``trio-sse serve``, from the arguments :func:`configure` parsed.

    Args:
        args: What ``parser`` parsed out of ``argv``.
        parser: The ``serve`` parser, whose :meth:`~argparse.ArgumentParser.error` tells
            a bad combination of options (exit status 2).
        argv: The arguments of ``trio-sse`` that ``args`` came from, for the workers.

    Secrets not given as options are read from the environment here
    (:data:`PUBLISH_TOKEN_ENV`, :data:`JWT_KEY_ENV`), and ``--jwt-key-file`` is read.
    """
    cors = _cors_policy(parser, args)
    auth = _auth_config(parser, args)
    is_worker = args.listen_fd is not None
    try:
        return ServeOptions(
            argv=tuple(argv),
            host=args.host,
            port=args.port,
            broker=args.broker,
            broker_min_replicas=int(args.broker_min_replicas),
            broker_replica_timeout=float(args.broker_replica_timeout),
            # A worker is one of the --workers: it serves alone.
            workers=1 if is_worker else int(args.workers),
            listen_fd=args.listen_fd,
            lifeline_fd=args.lifeline_fd,
            ready_fd=args.ready_fd,
            heartbeat=args.heartbeat,
            write_interval=args.write_interval,
            history=int(args.history),
            history_bytes=int(args.history_bytes),
            history_ttl=float(args.history_ttl),
            history_total_bytes=int(args.history_total_bytes),
            queue_size=int(args.queue_size),
            retry=int(args.retry),
            max_body=int(args.max_body),
            max_buffer=int(args.max_buffer),
            body_timeout=args.body_timeout,
            backlog=int(args.backlog),
            tcp_user_timeout=args.tcp_user_timeout,
            graceful_timeout=args.graceful_timeout,
            drain_window=float(args.drain_window),
            max_stream_age=float(args.max_stream_age),
            max_topics_per_stream=int(args.max_topics_per_stream),
            presence_events=bool(args.presence_events),
            presence_ttl=float(args.presence_ttl),
            cors=cors,
            auth=auth,
            max_streams=int(args.max_streams),
            max_streams_per_ip=int(args.max_streams_per_ip),
            max_topics=None if args.max_topics is None else int(args.max_topics),
            certfile=args.certfile,
            keyfile=args.keyfile,
            access_log=bool(args.access_log),
            log_level=_LOG_LEVELS[args.log_level],
        )
    except ValueError as exc:
        parser.error(str(exc))


def _cors_policy(parser: argparse.ArgumentParser, args: argparse.Namespace) -> CorsPolicy | None:
    origins: list[str] = getattr(args, "cors_origin", [])
    if not origins:
        if args.cors_credentials:
            parser.error("--cors-credentials needs at least one --cors-origin")
        return None
    try:
        return CorsPolicy.allowing(origins, allow_credentials=args.cors_credentials)
    except ValueError as exc:
        parser.error(str(exc))


def _auth_config(parser: argparse.ArgumentParser, args: argparse.Namespace) -> AuthConfig:
    publish_token = args.publish_token or os.environ.get(PUBLISH_TOKEN_ENV) or None
    jwt_key: str | bytes | None = args.jwt_key or os.environ.get(JWT_KEY_ENV) or None
    if args.jwt_key_file is not None:
        if args.jwt_key is not None:
            parser.error("give --jwt-key or --jwt-key-file, not both")
        try:
            with open(args.jwt_key_file, "rb") as key_file:
                jwt_key = key_file.read().strip()
        except OSError as exc:
            parser.error(f"--jwt-key-file: cannot read {args.jwt_key_file}: {exc.strerror}")
    # Without --jwt-algorithm, the key says: RS256 for a public key, HS256 for a secret.
    algorithm: str = args.jwt_algorithm or "HS256"
    if jwt_key is not None:
        family = jwt_key_family(jwt_key)
        if args.jwt_algorithm is None:
            algorithm = f"{family}256"
        elif not algorithm.startswith(family):
            kind = "an RSA public key (PEM)" if family == "RS" else "a secret, not a PEM key"
            parser.error(
                f"--jwt-algorithm {algorithm} does not suit the JWT key, which is {kind}: "
                f"give an {family}* algorithm, or leave --jwt-algorithm out"
            )
    try:
        return AuthConfig(
            publish_token=publish_token,
            jwt_key=jwt_key,
            jwt_algorithms=(algorithm,),
            subscribe_requires_token=args.subscribe_auth,
        )
    except ValueError as exc:
        # AuthConfig names its parameters; the user gave options or variables.
        sources = _auth_sources(args)
        parser.error(_AUTH_PARAMETER.sub(lambda found: sources[found[0]], str(exc)))


# The AuthConfig parameters that its errors may name.
_AUTH_PARAMETER: Final = re.compile(
    r"\b(publish_token|jwt_key|jwt_algorithms|subscribe_requires_token)\b"
)


def _auth_sources(args: argparse.Namespace) -> dict[str, str]:
    """What the user gave for each AuthConfig parameter: an option or a variable."""
    if args.publish_token is None and os.environ.get(PUBLISH_TOKEN_ENV):
        token_source = f"${PUBLISH_TOKEN_ENV}"
    else:
        token_source = "--publish-token"  # noqa: S105 - an option name, not a secret
    if args.jwt_key_file is not None:
        key_source = "--jwt-key-file"
    elif args.jwt_key is None and os.environ.get(JWT_KEY_ENV):
        key_source = f"${JWT_KEY_ENV}"
    else:
        key_source = "--jwt-key"
    return {
        "publish_token": token_source,
        "jwt_key": key_source,
        "jwt_algorithms": "--jwt-algorithm",
        "subscribe_requires_token": "--subscribe-auth",
    }


def run(options: ServeOptions) -> int:
    """Serve until a signal; return the exit status."""
    _configure_logging(options)
    # Every stream is a file descriptor; 1024 (a common default soft limit) is far
    # too few. Raising the soft limit up to the hard one needs no privilege (and
    # workers inherit it).
    limit = raise_open_file_limit()
    logging.getLogger("trio_sse.server").info(
        "open file limit: %s (hard %s)", limit.soft, limit.hard
    )
    try:
        _check_tls(options)
        if options.workers > 1:
            return _serve_workers(options)
        use_server_gc_policy()
        trio.run(_serve, options)
    except _StartupError as exc:
        _startup_failed(options, str(exc))
        return 1
    except OSError as exc:
        _startup_failed(options, f"cannot listen on {options.host}:{options.port}: {exc}")
        return 1
    return 0


def _configure_logging(options: ServeOptions) -> None:
    # The pid on every line: the parent of --workers N and its workers share stderr.
    logging.basicConfig(
        level=options.log_level,
        format="%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if options.is_worker:
        # The parent says "Running on" once, for all workers; Hypercorn in each
        # worker would say it again, and again for every replacement.
        logging.getLogger("hypercorn.error").addFilter(_not_running_on)


def _not_running_on(record: logging.LogRecord) -> bool:
    return not (isinstance(record.msg, str) and record.msg.startswith("Running on "))


def _startup_failed(options: ServeOptions, message: str) -> None:
    if options.is_worker:
        # A worker's stderr is shared: its lines name it, as its log lines do.
        logging.getLogger("trio_sse.server").error("cannot start: %s", message)
    else:
        print(f"trio-sse serve: {message}", file=sys.stderr)


class _StartupError(Exception):
    """A reason ``serve`` cannot start, told to the user in one line."""


@asynccontextmanager
async def _open_broker(options: ServeOptions) -> AsyncIterator[Broker]:
    if options.broker == MEMORY:
        yield MemoryBroker(
            history=options.history,
            history_bytes=options.history_bytes,
            history_ttl=options.history_ttl,
            history_total_bytes=options.history_total_bytes,
            queue_size=options.queue_size,
            max_topics=DEFAULT_MAX_TOPICS if options.max_topics is None else options.max_topics,
            presence_events=options.presence_events,
        )
        return
    try:
        from ..redis import DEFAULT_MAX_TOPICS as DEFAULT_REDIS_TOPICS  # noqa: PLC0415
        from ..redis import open_redis_broker  # noqa: PLC0415 - coredis is an optional extra
    except ImportError as exc:
        raise _StartupError(
            f"--broker {options.broker} needs the redis extra "
            f"(pip install 'trio-sse[redis]'): {exc}"
        ) from None
    max_topics = DEFAULT_REDIS_TOPICS if options.max_topics is None else options.max_topics
    async with AsyncExitStack() as stack:
        try:
            broker = await stack.enter_async_context(
                open_redis_broker(
                    options.broker,
                    history=options.history,
                    history_bytes=options.history_bytes,
                    history_ttl=options.history_ttl,
                    queue_size=options.queue_size,
                    max_topics=max_topics,
                    min_replicas=options.broker_min_replicas,
                    replica_timeout=options.broker_replica_timeout,
                    presence_events=options.presence_events,
                    presence_ttl=options.presence_ttl,
                )
            )
        except (ValueError, BrokerUnavailableError) as exc:
            raise _StartupError(
                f"cannot use the broker {_redacted(options.broker)}: {exc}"
            ) from None
        yield broker


def _redacted(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


async def _serve(options: ServeOptions) -> None:
    sock = None if options.listen_fd is None else socket.socket(fileno=options.listen_fd)
    async with _open_broker(options) as broker:
        app = create_app(
            broker=broker,
            heartbeat=options.heartbeat,
            retry=options.retry,
            max_body_size=options.max_body,
            max_buffer=options.max_buffer,
            body_timeout=options.body_timeout,
            min_write_interval=options.write_interval,
            cors=options.cors,
            auth=options.auth,
            max_streams=options.max_streams,
            max_streams_per_ip=options.max_streams_per_ip,
            max_stream_age=options.max_stream_age,
            max_topics_per_stream=options.max_topics_per_stream,
        )
        # A worker tells its parent when it serves.
        ready: trio.TaskStatus[list[str]] = (
            trio.TASK_STATUS_IGNORED if options.ready_fd is None else ReadyReport(options.ready_fd)
        )
        await serve(
            app,
            host=options.host,
            port=options.port,
            backlog=options.backlog,
            tcp_user_timeout=options.tcp_user_timeout,
            graceful_timeout=options.graceful_timeout,
            access_log=options.access_log,
            on_shutdown=broker.aclose,
            shutdown_trigger=functools.partial(until_signal_or_orphaned, options.lifeline_fd),
            drain_window=options.drain_window,
            on_drain=EventHub.of(app).drain.start,
            sock=sock,
            certfile=options.certfile,
            keyfile=options.keyfile,
            task_status=ready,
        )


def _worker_command(options: ServeOptions, listen_fd: int) -> list[str]:
    """The command of one worker on ``listen_fd``: the user's own arguments again.

    The worker parses them into the same options; given ``--listen-fd``, it ignores
    ``--workers`` and serves on that socket. A secret in the environment reaches it in
    the environment it inherits: only what the user put on the command line is on
    the worker's.
    """
    return [sys.executable, "-m", "trio_sse.cli", *options.argv, "--listen-fd", str(listen_fd)]


def _check_tls(options: ServeOptions) -> None:
    # Once, before any worker starts, rather than the same error from every worker.
    if options.certfile is not None and options.keyfile is not None:
        try:
            check_tls_files(options.certfile, options.keyfile)
        except ValueError as exc:
            raise _StartupError(str(exc)) from None


async def _check_broker(options: ServeOptions) -> None:
    async with _open_broker(options):
        pass


def _serve_workers(options: ServeOptions) -> int:
    # One clear error here rather than the same one from every worker.
    trio.run(_check_broker, options)
    sock = listen_socket(options.host, options.port, tcp_user_timeout=options.tcp_user_timeout)
    with sock:
        command = _worker_command(options, sock.fileno())
        # Workers must not outlast their drain and a stalled client's TCP_USER_TIMEOUT
        # by much.
        stop_timeout = (
            options.drain_window + options.graceful_timeout + options.tcp_user_timeout + 2.0
        )
        return trio.run(
            functools.partial(
                run_workers,
                command,
                count=options.workers,
                listen_fd=sock.fileno(),
                stop_timeout=stop_timeout,
            )
        )
