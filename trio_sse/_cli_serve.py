"""``trio-sse serve``: run the reference app, on one process or on N workers.

The options are parsed in :mod:`trio_sse.cli`; this module turns them into a broker,
an app and a server, and maps start-up failures to one line on stderr and status 1.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import re
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import trio

from .app import create_app
from .broker import DEFAULT_MAX_TOPICS, Broker, MemoryBroker
from .errors import BrokerUnavailableError
from .file_limit import raise_open_file_limit
from .hub import EventHub
from .server import (
    ReadyReport,
    check_tls_files,
    listen_socket,
    run_workers,
    serve,
    until_signal_or_orphaned,
    use_server_gc_policy,
)
from .web import AuthConfig, CorsPolicy
from .web._auth import jwt_key_family

__all__ = ["MEMORY", "run_serve"]

MEMORY: Final = "memory"
PUBLISH_TOKEN_ENV: Final = "TRIO_SSE_PUBLISH_TOKEN"  # noqa: S105 - a variable name, not a secret
JWT_KEY_ENV: Final = "TRIO_SSE_JWT_KEY"


def run_serve(args: argparse.Namespace) -> int:
    """Serve until a signal; return the exit status."""
    parser: argparse.ArgumentParser = args.serve_parser
    args.cors = _cors_policy(parser, args)
    args.auth = _auth_config(parser, args)
    if (args.certfile is None) != (args.keyfile is None):
        parser.error("--certfile and --keyfile go together: give both or neither")
    if args.workers > 1 and args.broker == MEMORY:
        parser.error(
            "--workers > 1 needs a shared broker (--broker redis://host:port/db): with the "
            "in-memory broker each worker has its own topics, and a publish would reach "
            "only the subscribers of the worker that took it"
        )
    if args.broker_min_replicas > 0 and args.broker == MEMORY:
        parser.error(
            "--broker-min-replicas needs a Redis broker: the in-memory one has no replicas"
        )
    _configure_logging(args)
    # Every stream is a file descriptor; 1024 (a common default soft limit) is far
    # too few. Raising the soft limit up to the hard one needs no privilege (and
    # workers inherit it).
    limit = raise_open_file_limit()
    logging.getLogger("trio_sse.server").info(
        "open file limit: %s (hard %s)", limit.soft, limit.hard
    )
    try:
        _check_tls(args)
        if args.workers > 1:
            return _serve_workers(args)
        use_server_gc_policy()
        trio.run(_serve, args)
    except _StartupError as exc:
        _startup_failed(args, str(exc))
        return 1
    except OSError as exc:
        _startup_failed(args, f"cannot listen on {args.host}:{args.port}: {exc}")
        return 1
    return 0


def _is_worker(args: argparse.Namespace) -> bool:
    return args.listen_fd is not None


def _configure_logging(args: argparse.Namespace) -> None:
    # The pid on every line: the parent of --workers N and its workers share stderr.
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if _is_worker(args):
        # The parent says "Running on" once, for all workers; Hypercorn in each
        # worker would say it again, and again for every replacement.
        logging.getLogger("hypercorn.error").addFilter(_not_running_on)


def _not_running_on(record: logging.LogRecord) -> bool:
    return not (isinstance(record.msg, str) and record.msg.startswith("Running on "))


def _startup_failed(args: argparse.Namespace, message: str) -> None:
    if _is_worker(args):
        # A worker's stderr is shared: its lines name it, as its log lines do.
        logging.getLogger("trio_sse.server").error("cannot start: %s", message)
    else:
        print(f"trio-sse serve: {message}", file=sys.stderr)


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


class _StartupError(Exception):
    """A reason ``serve`` cannot start, told to the user in one line."""


@asynccontextmanager
async def _open_broker(args: argparse.Namespace) -> AsyncIterator[Broker]:
    history, queue_size = int(args.history), int(args.queue_size)
    if args.broker == MEMORY:
        max_topics = DEFAULT_MAX_TOPICS if args.max_topics is None else int(args.max_topics)
        yield MemoryBroker(
            history=history,
            history_bytes=int(args.history_bytes),
            history_ttl=float(args.history_ttl),
            history_total_bytes=int(args.history_total_bytes),
            queue_size=queue_size,
            max_topics=max_topics,
            presence_events=bool(args.presence_events),
        )
        return
    try:
        from .redis import DEFAULT_MAX_TOPICS as DEFAULT_REDIS_TOPICS  # noqa: PLC0415
        from .redis import open_redis_broker  # noqa: PLC0415 - coredis is an optional extra
    except ImportError as exc:
        raise _StartupError(
            f"--broker {args.broker} needs the redis extra (pip install 'trio-sse[redis]'): {exc}"
        ) from None
    async with AsyncExitStack() as stack:
        try:
            broker = await stack.enter_async_context(
                open_redis_broker(
                    args.broker,
                    history=history,
                    history_bytes=int(args.history_bytes),
                    history_ttl=float(args.history_ttl),
                    queue_size=queue_size,
                    max_topics=DEFAULT_REDIS_TOPICS if args.max_topics is None else args.max_topics,
                    min_replicas=int(args.broker_min_replicas),
                    replica_timeout=float(args.broker_replica_timeout),
                    presence_events=bool(args.presence_events),
                    presence_ttl=float(args.presence_ttl),
                )
            )
        except (ValueError, BrokerUnavailableError) as exc:
            raise _StartupError(f"cannot use the broker {_redacted(args.broker)}: {exc}") from None
        yield broker


def _redacted(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


async def _serve(args: argparse.Namespace) -> None:
    sock = None if args.listen_fd is None else socket.socket(fileno=args.listen_fd)
    async with _open_broker(args) as broker:
        app = create_app(
            broker=broker,
            heartbeat=args.heartbeat,
            retry=int(args.retry),
            max_body_size=int(args.max_body),
            max_buffer=int(args.max_buffer),
            body_timeout=args.body_timeout,
            min_write_interval=args.write_interval,
            cors=args.cors,
            auth=args.auth,
            max_streams=int(args.max_streams),
            max_streams_per_ip=int(args.max_streams_per_ip),
            max_stream_age=float(args.max_stream_age),
            max_topics_per_stream=int(args.max_topics_per_stream),
        )
        # A worker tells its parent when it serves.
        ready: trio.TaskStatus[list[str]] = (
            trio.TASK_STATUS_IGNORED if args.ready_fd is None else ReadyReport(args.ready_fd)
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
            drain_window=float(args.drain_window),
            on_drain=EventHub.of(app).drain.start,
            sock=sock,
            certfile=args.certfile,
            keyfile=args.keyfile,
            task_status=ready,
        )


def _worker_command(args: argparse.Namespace, listen_fd: int) -> list[str]:
    """``trio-sse serve`` with the same options, as one worker on ``listen_fd``."""
    command = [sys.executable, "-m", "trio_sse.cli", "serve"]
    parser: argparse.ArgumentParser = args.serve_parser
    for action in parser._actions:
        value = getattr(args, action.dest, None)
        if not action.option_strings or action.dest in ("help", "workers", "listen_fd"):
            continue
        if action.dest in ("lifeline_fd", "ready_fd") or value is None or value is False:
            continue
        option = action.option_strings[-1]
        if value is True:
            command.append(option)
        elif isinstance(value, list):  # a repeatable option: repeat it
            for item in value:
                command += [option, str(item)]
        else:
            command += [option, str(value)]
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
        # Workers must not outlast their drain and a stalled client's TCP_USER_TIMEOUT
        # by much.
        stop_timeout = args.drain_window + args.graceful_timeout + args.tcp_user_timeout + 2.0
        return trio.run(
            functools.partial(
                run_workers,
                command,
                count=int(args.workers),
                listen_fd=sock.fileno(),
                stop_timeout=stop_timeout,
            )
        )


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
