"""serve(): Hypercorn's trio worker, configured for streams; see :mod:`trio_sse.server`."""

from __future__ import annotations

import copy
import gc
import logging
import math
import signal
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable
from typing import Final

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve
from hypercorn.typing import (
    ASGIFramework,
    ASGIReceiveCallable,
    ASGISendCallable,
    ASGISendEvent,
    Framework,
    Scope,
)
from hypercorn.utils import is_asgi

from ._hypercorn_idle import bound_idle_h2_connections
from ._hypercorn_writer import H11SocketWriter, offer_socket_writers

__all__ = [
    "DEFAULT_BACKLOG",
    "DEFAULT_GRACEFUL_TIMEOUT",
    "DEFAULT_TCP_USER_TIMEOUT",
    "H2_MAX_CONCURRENT_STREAMS",
    "MAX_REQUEST_HEAD_SIZE",
    "REQUEST_HEAD_TIMEOUT",
    "TLS_HANDSHAKE_TIMEOUT",
    "H11SocketWriter",
    "bind_or_exit",
    "check_tls_files",
    "listen_socket",
    "serve",
    "use_server_gc_policy",
]

logger = logging.getLogger("trio_sse.server")

# Thousands of EventSources reconnect at once after a restart; Linux caps the value
# at net.core.somaxconn (4096 on current kernels).
DEFAULT_BACKLOG: Final = 4096

# Long enough for a congested mobile link to recover, short enough that a reader that
# stopped reading frees its connection (and any shutdown waiting on it) within 30 s.
DEFAULT_TCP_USER_TIMEOUT: Final = 30.0

# Streams have ended by the time this starts counting (on_shutdown ran first); it
# only bounds in-flight publishes and the sockets Hypercorn leaves open after a
# cancelled response (pgjones/hypercorn#106), so keep it short: a publish takes
# milliseconds, and every second here is a second added to each restart.
DEFAULT_GRACEFUL_TIMEOUT: Final = 0.5

# Hypercorn's keep_alive_timeout: how long a connection may be idle, which it is
# from accept (or from the end of a response) until a whole request head is in.
# Bytes received do not restart it, so a head sent one byte at a time is cut here
# too. A stream in progress is not idle, so it is never cut. Hypercorn's default,
# set explicitly because it is our only bound on a slow request head.
REQUEST_HEAD_TIMEOUT: Final = 5.0

# Hypercorn's h11_max_incomplete_size: a longer HTTP/1.1 request head gets 431.
# Hypercorn's default; browsers' heads (cookies included) stay well under it.
MAX_REQUEST_HEAD_SIZE: Final = 16 * 1024

# Hypercorn's default, set explicitly as a decision. A browser carries every
# EventSource it opens to one origin over a single HTTP/2 connection, so this is how
# many streams a page (or its tabs) may hold at once; HTTP/1.1 stops browsers at 6,
# which is why h2 matters for SSE. A lower value would refuse those streams, and stop
# no attacker, who opens another connection. What each stream holds is bounded
# elsewhere: the stream caps (``--max-streams``), the app's body deadline, and
# REQUEST_HEAD_TIMEOUT once none is open.
H2_MAX_CONCURRENT_STREAMS: Final = 100

# Hypercorn's default (60 s) would let a client that stalls mid-handshake hold a
# connection for a minute before REQUEST_HEAD_TIMEOUT even starts; a real handshake
# takes a few round trips.
TLS_HANDSHAKE_TIMEOUT: Final = 10.0

# How long on_shutdown may take before the shutdown goes ahead without it.
_ON_SHUTDOWN_TIMEOUT: Final = 1.0


def use_server_gc_policy() -> None:
    """Set the garbage collector up for a process that serves streams.

    Call it once, when start-up is done and before serving (``trio-sse serve`` does).
    It calls ``gc.freeze()``: what is loaded so far (modules, the app, its routes) lives
    as long as the process, so full collections stop walking it, and their pauses
    shrink to what connections hold. Thresholds stay Python's: raising the first one
    to 10,000 cut the collector's CPU by half in the fan-out benchmark, but let the
    reference cycles Hypercorn leaves per closed connection pile up between full
    collections (the soak's resident set grew 6 MiB over 20,000 connections, against
    0.1 MiB), and direct delivery left little for it to save (24 µs per delivery
    either way).

    It changes the whole process, so the library never calls it by itself.
    """
    gc.freeze()


def listen_socket(
    host: str, port: int, *, tcp_user_timeout: float = DEFAULT_TCP_USER_TIMEOUT
) -> socket.socket:
    """Create a bound TCP socket for Hypercorn, with ``TCP_USER_TIMEOUT`` set.

    The socket is not listening yet; Hypercorn calls ``listen(backlog)``.

    Args:
        host: Address to bind, IPv4 or IPv6 (``"::"`` for all).
        port: Port to bind; 0 picks a free one.
        tcp_user_timeout: Seconds that written data may stay unacknowledged before the
            kernel aborts the connection; 0 keeps the kernel default (about 15 min).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tcp_user_timeout > 0:
            if not hasattr(socket, "TCP_USER_TIMEOUT"):  # pragma: no cover - not Linux
                logger.warning("TCP_USER_TIMEOUT is not supported here; stalled readers linger")
            else:
                sock.setsockopt(
                    socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(tcp_user_timeout * 1000)
                )
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def bind_or_exit(host: str, port: int, *, prog: str) -> socket.socket:
    """:func:`listen_socket`, or exit with status 1 and one line saying why not.

    For scripts that bind before ``trio.run``, so that a taken port is a message,
    not a traceback from inside the server's nursery (the examples use it).
    """
    try:
        return listen_socket(host, port)
    except (OSError, OverflowError) as exc:  # OverflowError: a port above 65535
        reason = getattr(exc, "strerror", None) or str(exc)
        sys.stderr.write(f"{prog}: cannot listen on {host}:{port}: {reason}\n")
        raise SystemExit(1) from None


def check_tls_files(certfile: str, keyfile: str) -> None:
    """Load a certificate chain and its key once, to fail early and clearly.

    Raises:
        ValueError: A file is missing or unreadable, or the key does not match.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certfile=certfile, keyfile=keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(
            f"cannot load the TLS certificate {certfile!r} with the key {keyfile!r}: {exc}"
        ) from None


# Bounds the shield below: the last write of a response, plus Hypercorn's
# bookkeeping. The write itself is shielded by Hypercorn and ended, for a peer that
# stopped reading, by TCP_USER_TIMEOUT.
_LAST_SEND_TIMEOUT: Final = 5.0


def _finish_responses_shielded(app: ASGIFramework) -> ASGIFramework:
    """Let the last ``send`` of each response complete even if the request is cancelled.

    Hypercorn readies the connection for its next request (restarting its idle
    timer, or closing the socket after ``Connection: close``) inside the app's final
    ``send``. That same call tells the app ``http.disconnect``, which makes
    quart-trio cancel the request; the bookkeeping after it then dies of
    ``Cancelled`` (pgjones/hypercorn#106). Without this, a connection that has
    served one request is never closed by the server: idle, it lingers until the
    client leaves, and a slow second request head is not bounded at all.
    """

    async def wrapped(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def finishing_send(message: ASGISendEvent) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                with trio.move_on_after(_LAST_SEND_TIMEOUT, shield=True):
                    await send(message)
            else:
                await send(message)

        await app(scope, receive, finishing_send)

    return wrapped


def _check_request_bounds(head_timeout: float, handshake_timeout: float, head_size: int) -> None:
    for name, value in (
        ("request_head_timeout", head_timeout),
        ("tls_handshake_timeout", handshake_timeout),
    ):
        if not 0 < value < math.inf:
            raise ValueError(f"{name} must be a finite number > 0 seconds, got {value}")
    if head_size < 1:
        raise ValueError(f"max_request_head_size must be >= 1 byte, got {head_size}")


async def _wait_for_signal() -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            logger.info("received %s, shutting down", signal.Signals(signum).name)
            return


async def serve(
    app: Framework,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    backlog: int = DEFAULT_BACKLOG,
    tcp_user_timeout: float = DEFAULT_TCP_USER_TIMEOUT,
    graceful_timeout: float = DEFAULT_GRACEFUL_TIMEOUT,
    access_log: bool = False,
    on_shutdown: Callable[[], Awaitable[None]] | None = None,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    drain_window: float = 0.0,
    on_drain: Callable[[float], None] | None = None,
    sock: socket.socket | None = None,
    certfile: str | None = None,
    keyfile: str | None = None,
    request_head_timeout: float = REQUEST_HEAD_TIMEOUT,
    tls_handshake_timeout: float = TLS_HANDSHAKE_TIMEOUT,
    max_request_head_size: int = MAX_REQUEST_HEAD_SIZE,
    config: Config | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` until SIGINT/SIGTERM (or ``shutdown_trigger``), then shut down fast.

    Args:
        app: An ASGI app, such as one from :func:`trio_sse.app.create_app`.
        host: Address to listen on.
        port: Port to listen on; 0 picks a free one (see ``task_status``).
        backlog: Accept queue length.
        tcp_user_timeout: See :func:`listen_socket`. Also how long an HTTP/2 stream
            may make no progress with ``max_buffer`` bytes unsent before it is reset.
        graceful_timeout: Seconds connections get to finish after ``on_shutdown``.
        access_log: Log every request to stderr (costly under load).
        on_shutdown: Awaited first when shutdown begins, for at most 1 s: end the
            streams here (e.g. ``broker.aclose``) so they close cleanly.
        shutdown_trigger: Returns when the server should stop. Defaults to the first
            SIGINT or SIGTERM, which requires the main thread.
        drain_window: Seconds over which to end the streams on shutdown, rather than
            all at once; 0 ends them at once (``on_shutdown`` first). With a window,
            Hypercorn stops accepting at once, ``on_drain(drain_window)`` is called
            (it must return at once: e.g. :meth:`trio_sse.web.StreamDrain.start`,
            which gives each stream a random deadline within the window), and
            ``on_shutdown`` is awaited once every connection is gone, at most
            ``drain_window + graceful_timeout`` seconds later (a stream the drain
            does not know of is cut then).
        on_drain: See ``drain_window``; required with a window.
        sock: A bound socket to serve on instead of ``host`` and ``port`` (made by
            :func:`listen_socket`), e.g. one that several worker processes share.
            Its ownership passes to the server.
        certfile: PEM certificate chain; with ``keyfile``, serve HTTPS only, with
            ALPN ``h2`` and ``http/1.1``.
        keyfile: PEM private key of ``certfile``.
        request_head_timeout: Seconds a connection may be idle: from accept (after
            the TLS handshake), or from the end of a response, until a whole request
            head is in; also an HTTP/2 connection with no stream open. Never cuts an
            open stream. Hypercorn's ``keep_alive_timeout``.
        tls_handshake_timeout: Seconds a TLS handshake may take.
        max_request_head_size: Bytes an incomplete HTTP/1.1 request head may hold;
            a longer one gets 431 (Hypercorn's ``h11_max_incomplete_size``).
        config: Hypercorn's settings for everything this function does not name
            (e.g. ``h2_max_inbound_frame_size``, ``server_names``, ``include_server_header``);
            copied, never changed. What it names (the bind, the timeouts, TLS, logs,
            ``read_timeout``, which would cut every stream) is set over it.
        task_status: Receives the bound URLs, e.g. ``["http://127.0.0.1:41234"]``
            (``https://`` with TLS).

    Raises:
        ValueError: Only one of ``certfile`` and ``keyfile`` was given, or they
            cannot be loaded (see :func:`check_tls_files`); or ``drain_window`` is
            not a finite number >= 0, or is > 0 without ``on_drain``.
    """
    if not 0 <= drain_window < math.inf:
        raise ValueError(f"drain_window must be a finite number >= 0 seconds, got {drain_window}")
    if drain_window > 0 and on_drain is None:
        raise ValueError("drain_window needs on_drain, which ends the app's streams")
    _check_request_bounds(request_head_timeout, tls_handshake_timeout, max_request_head_size)
    if (certfile is None) != (keyfile is None):
        raise ValueError("TLS needs both certfile and keyfile, or neither")
    if certfile is not None and keyfile is not None:
        # Before the socket is made, so a bad file leaks nothing.
        check_tls_files(certfile, keyfile)
    if sock is None:
        sock = listen_socket(host, port, tcp_user_timeout=tcp_user_timeout)
    config = copy.copy(config) if config is not None else Config()
    # Hypercorn takes the socket over through its file descriptor.
    config.bind = [f"fd://{sock.detach()}"]
    config.backlog = backlog
    config.graceful_timeout = graceful_timeout
    # Hand Hypercorn our loggers, so its lines go through the app's logging setup
    # once, instead of through a handler of its own as well.
    config.errorlog = logging.getLogger("hypercorn.error")
    config.accesslog = logging.getLogger("hypercorn.access") if access_log else None
    # Never set read_timeout: SSE clients send nothing after the request, so it
    # would cut every stream.
    config.read_timeout = None
    config.keep_alive_timeout = request_head_timeout
    config.h11_max_incomplete_size = max_request_head_size
    config.h2_max_concurrent_streams = H2_MAX_CONCURRENT_STREAMS
    config.ssl_handshake_timeout = tls_handshake_timeout
    # Hypercorn turns TLS on when both are set.
    config.certfile = certfile
    config.keyfile = keyfile
    config.alpn_protocols = ["h2", "http/1.1"]
    wait_for_shutdown = shutdown_trigger if shutdown_trigger is not None else _wait_for_signal
    drained = False

    async def shut_down() -> None:
        if on_shutdown is not None:
            with trio.move_on_after(_ON_SHUTDOWN_TIMEOUT):
                await on_shutdown()

    async def trigger() -> None:
        nonlocal drained
        await wait_for_shutdown()
        if drain_window > 0 and on_drain is not None:
            logger.info("draining: streams end over the next %g s", drain_window)
            # Each stream ends by a deadline of its own within the window; Hypercorn
            # stops accepting as soon as this returns, and reads its deadline from
            # the config then.
            on_drain(drain_window)
            config.graceful_timeout = graceful_timeout + drain_window
            drained = True
        else:
            await shut_down()

    bound_idle_h2_connections()
    if is_asgi(app):
        # An HTTP/2 client that stops reading is given as long as a stalled HTTP/1.1
        # connection is (whose zero-window probes TCP_USER_TIMEOUT bounds).
        app = offer_socket_writers(
            _finish_responses_shielded(app),  # type: ignore[arg-type]
            stall_timeout=tcp_user_timeout if tcp_user_timeout > 0 else DEFAULT_TCP_USER_TIMEOUT,
        )
    await hypercorn_serve(app, config, shutdown_trigger=trigger, task_status=task_status)
    if drained:
        await shut_down()
