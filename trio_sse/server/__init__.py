"""The server: an ASGI app under Hypercorn's trio worker, with a shutdown made for streams.

What the Hypercorn CLI cannot do for SSE, and this does:

* **Fast, clean shutdown.** On SIGINT or SIGTERM, ``on_shutdown`` runs first (the
  reference app closes its broker there, so every stream ends with its terminating
  chunk), then Hypercorn stops accepting and gives connections ``graceful_timeout``
  seconds. The CLI gives the app no hook before its deadline, so streams are cut.
* **Or a drain without a reconnect storm** (``drain_window``): Hypercorn stops
  accepting at once, ``on_drain`` has the app end its streams spread over the
  window (each at its own random moment, with a jittered ``retry``), and
  ``on_shutdown`` runs once they are gone; connections get ``drain_window +
  graceful_timeout`` seconds in all.
* **A listening socket sized and tuned for streams:** a large accept backlog for
  reconnect storms, and ``TCP_USER_TIMEOUT`` (inherited by accepted sockets) so that
  a client that stops reading cannot pin a connection, or shutdown, forever:
  Hypercorn's socket write is shielded from cancellation, so only the kernel can
  abort it.
* **Bounds on clients that never finish a request** (slowloris): a connection gets
  ``REQUEST_HEAD_TIMEOUT`` seconds (after its TLS handshake, itself bounded by
  ``TLS_HANDSHAKE_TIMEOUT``) to complete a request head of at most
  ``MAX_REQUEST_HEAD_SIZE`` bytes. Neither touches a stream once its request is in.
  An HTTP/2 connection with no stream open gets the same ``REQUEST_HEAD_TIMEOUT``
  (see :mod:`trio_sse.server._hypercorn_idle`), and a request body its own bound, set by the
  app (:class:`trio_sse.web.BodyLimiter`).
* **TLS** (``certfile`` and ``keyfile``), with ALPN offering ``h2`` then ``http/1.1``.
* **A direct write path for streams** over plain HTTP/1.1 (see
  :mod:`trio_sse.server._hypercorn_writer`): a delivery is one system call, not a pass
  through Hypercorn's locked, shielded write.
* **Several worker processes** on one socket, supervised (:func:`run_workers`).

Modules: ``_serve`` (:func:`serve` and its socket), ``_workers`` (the process tree of
``trio-sse serve --workers N``), ``_hypercorn_idle`` and ``_hypercorn_writer`` (what
Hypercorn lacks for streams, fitted in from outside). The open-file limit both the
server and the load tester raise is :mod:`trio_sse.file_limit`.
"""

from ._serve import DEFAULT_BACKLOG as DEFAULT_BACKLOG
from ._serve import DEFAULT_GRACEFUL_TIMEOUT as DEFAULT_GRACEFUL_TIMEOUT
from ._serve import DEFAULT_TCP_USER_TIMEOUT as DEFAULT_TCP_USER_TIMEOUT
from ._serve import H2_MAX_CONCURRENT_STREAMS as H2_MAX_CONCURRENT_STREAMS
from ._serve import MAX_REQUEST_HEAD_SIZE as MAX_REQUEST_HEAD_SIZE
from ._serve import REQUEST_HEAD_TIMEOUT as REQUEST_HEAD_TIMEOUT
from ._serve import TLS_HANDSHAKE_TIMEOUT as TLS_HANDSHAKE_TIMEOUT
from ._serve import H11SocketWriter as H11SocketWriter
from ._serve import bind_or_exit as bind_or_exit
from ._serve import check_tls_files as check_tls_files
from ._serve import listen_socket as listen_socket
from ._serve import serve as serve
from ._serve import use_server_gc_policy as use_server_gc_policy
from ._workers import CRASH_LOOP_DEATHS as CRASH_LOOP_DEATHS
from ._workers import CRASH_LOOP_WINDOW as CRASH_LOOP_WINDOW
from ._workers import RESTART_BACKOFF_FIRST as RESTART_BACKOFF_FIRST
from ._workers import RESTART_BACKOFF_MAX as RESTART_BACKOFF_MAX
from ._workers import RESTART_BACKOFF_RESET_AFTER as RESTART_BACKOFF_RESET_AFTER
from ._workers import ReadyReport as ReadyReport
from ._workers import run_workers as run_workers
from ._workers import until_signal_or_orphaned as until_signal_or_orphaned

__all__ = [
    "CRASH_LOOP_DEATHS",
    "CRASH_LOOP_WINDOW",
    "DEFAULT_BACKLOG",
    "DEFAULT_GRACEFUL_TIMEOUT",
    "DEFAULT_TCP_USER_TIMEOUT",
    "H2_MAX_CONCURRENT_STREAMS",
    "MAX_REQUEST_HEAD_SIZE",
    "REQUEST_HEAD_TIMEOUT",
    "RESTART_BACKOFF_FIRST",
    "RESTART_BACKOFF_MAX",
    "RESTART_BACKOFF_RESET_AFTER",
    "TLS_HANDSHAKE_TIMEOUT",
    "H11SocketWriter",
    "ReadyReport",
    "bind_or_exit",
    "check_tls_files",
    "listen_socket",
    "run_workers",
    "serve",
    "until_signal_or_orphaned",
    "use_server_gc_policy",
]
