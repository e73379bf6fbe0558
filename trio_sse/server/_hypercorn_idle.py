"""HTTP/2 connections with no stream open are idle, and closed as such.

Hypercorn's trio worker closes a connection that stays idle for
``keep_alive_timeout`` (:data:`trio_sse.server.REQUEST_HEAD_TIMEOUT`): its timer is
stopped when a request arrives and restarted when the connection's last stream ends.
An HTTP/2 connection that starts as HTTP/1.1 (h2c with prior knowledge, on the plain
port or over TLS without ALPN) loses it: the preface ``PRI * HTTP/2.0`` parses as an
HTTP/1.1 request, which stops the timer, and then switches the connection to HTTP/2
without any stream to end and restart it. Such a connection that never opens a
stream was held until the client left (200 of 200 after 35 s).

:class:`IdleBoundConnection` is Hypercorn's connection (``TCPServer``) with one
addition: whenever it sends, if its protocol is HTTP/2 with no stream open (in
Hypercorn, nor in the h2 state machine, which holds an ``Upgrade: h2c`` request's
stream before Hypercorn does) and the idle timer is off, it starts the timer. The
timer then works as for HTTP/1.1: traffic that opens no stream (pings, settings)
does not restart it, and a stream stops it.

:func:`bound_idle_h2_connections` makes Hypercorn's trio worker use it. Hypercorn has
no setting for its connection class, so this replaces the class its worker names
(``hypercorn.trio.run.TCPServer``), once, for the process; it is a subclass, and
changes nothing for a connection that has a stream, or speaks HTTP/1.1. Each piece it
relies on is checked, so that on a Hypercorn without them nothing is replaced and a
warning says so; ``tests/test_request_timeouts.py`` fails then.
"""

from __future__ import annotations

import logging

import hypercorn.trio.run
from hypercorn.events import Event, Updated
from hypercorn.protocol import ProtocolWrapper
from hypercorn.protocol.h2 import H2Protocol
from hypercorn.trio.tcp_server import TCPServer

__all__ = ["IdleBoundConnection", "bound_idle_h2_connections"]

logger = logging.getLogger("trio_sse.server")


class IdleBoundConnection(TCPServer):
    """Hypercorn's trio connection, with HTTP/2 without streams counted as idle."""

    # TCPServer.run() starts the idle timer once the protocol is set up; after that,
    # Hypercorn stops and restarts it only through Updated events, seen here.
    _idle_timer_on = True

    async def protocol_send(self, event: Event) -> None:
        if isinstance(event, Updated):
            self._idle_timer_on = event.idle
        await super().protocol_send(event)
        if not self._idle_timer_on and self._is_h2_without_streams():
            await self.idle_task.restart(self._task_group, self._idle_timeout)
            # Only once started: a cancelled restart is tried again on the next send.
            self._idle_timer_on = True

    def _is_h2_without_streams(self) -> bool:
        wrapper = getattr(self, "protocol", None)
        protocol = wrapper.protocol if isinstance(wrapper, ProtocolWrapper) else None
        return (
            isinstance(protocol, H2Protocol)
            and not protocol.streams
            and protocol.connection.open_inbound_streams == 0
        )


def bound_idle_h2_connections() -> bool:
    """Make Hypercorn's trio worker serve connections with :class:`IdleBoundConnection`.

    Idempotent. Returns whether it is in place.
    """
    current = getattr(hypercorn.trio.run, "TCPServer", None)
    if current is IdleBoundConnection:
        return True
    if current is not TCPServer or not callable(getattr(TCPServer, "_idle_timeout", None)):
        logger.warning(
            "this Hypercorn differs from the one trio_sse knows: HTTP/2 connections "
            "that open no stream are not closed when idle"
        )
        return False
    hypercorn.trio.run.TCPServer = IdleBoundConnection  # type: ignore[attr-defined]
    return True
