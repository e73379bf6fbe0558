"""Opening a Redis broker: the URL, the two coredis clients, the readers' nursery.

With a ``redis+sentinel://`` URL both clients connect to whichever Redis the Sentinels
name as the service's master, asking them again for every new connection; so after a
failover the broker's retries (a publisher's, and each reader's own loop) reach the
new master by themselves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Final, NamedTuple
from urllib.parse import unquote, urlsplit

import coredis
import trio
from coredis.connection import TCPLocation
from coredis.retry import NoRetryPolicy

from ..broker import DEFAULT_HISTORY, DEFAULT_QUEUE_SIZE
from ._broker import (
    DEFAULT_HISTORY_BYTES,
    DEFAULT_HISTORY_TTL,
    DEFAULT_KEY_PREFIX,
    DEFAULT_MAX_TOPICS,
    DEFAULT_REPLICA_TIMEOUT,
    DEFAULT_TIMEOUT,
    MAX_REPLICA_TIMEOUT,
    RedisBroker,
)

__all__ = ["open_redis_broker"]

SENTINEL_SCHEME: Final = "redis+sentinel"
_SENTINEL_FORM: Final = "redis+sentinel://[:password@]host:port[,host:port...]/service[/db]"
_DEFAULT_SENTINEL_PORT: Final = 26379


class _SentinelTarget(NamedTuple):
    """A parsed ``redis+sentinel://`` URL."""

    sentinels: list[TCPLocation]
    service: str
    database: int
    password: str | None  # the master's (Sentinels are asked without one)

    @property
    def where(self) -> str:
        """For messages (never the password)."""
        nodes = ",".join(f"{node.host}:{node.port}" for node in self.sentinels)
        return (
            f"{self.service!r} (the master named by the Sentinels at {nodes}, db {self.database})"
        )


def _sentinel_target(url: str) -> _SentinelTarget:
    """Parse ``redis+sentinel://[:password@]host:port[,host:port...]/service[/db]``.

    Raises:
        ValueError: Not of that form, naming what is wrong.
    """
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise ValueError(f"a Sentinel URL has no query or fragment: {_SENTINEL_FORM}")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    password = unquote(userinfo.partition(":")[2]) if userinfo else None
    sentinels = []
    for node in hosts.split(","):
        host, colon, port_text = node.rpartition(":")
        if not colon:
            host, port_text = node, str(_DEFAULT_SENTINEL_PORT)
        host = host.removeprefix("[").removesuffix("]")
        if not host or not port_text.isdigit() or not 0 < int(port_text) <= 65535:
            raise ValueError(
                f"bad Sentinel address {node!r} in a Sentinel URL; expected {_SENTINEL_FORM}"
            )
        sentinels.append(TCPLocation(host, int(port_text)))
    service, _, database = parts.path.lstrip("/").partition("/")
    if not service:
        raise ValueError(f"a Sentinel URL names the service after the hosts: {_SENTINEL_FORM}")
    database = database or "0"
    if not database.isdigit():
        raise ValueError(f"the database in a Sentinel URL is a number, got {database!r}")
    return _SentinelTarget(sentinels, unquote(service), int(database), password or None)


def _where(url: str) -> str:
    """``host:port/db`` of a Redis URL, for messages (never the password)."""
    parts = urlsplit(url)
    if parts.scheme == SENTINEL_SCHEME:
        return _sentinel_target(url).where
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError(
            "a Redis URL starts with redis://, rediss://, unix:// or redis+sentinel://, "
            f"got {url!r}"
        )
    if parts.scheme == "unix":
        return parts.path
    try:
        port = parts.port or 6379
    except ValueError:
        raise ValueError(f"bad port in Redis URL {url!r}") from None
    database = parts.path.lstrip("/") or "0"
    if not database.isdigit():
        raise ValueError(f"the database in a Redis URL is a number, got {database!r}")
    return f"{parts.hostname or 'localhost'}:{port}/{database}"


@asynccontextmanager
async def open_redis_broker(
    url: str,
    *,
    history: int = DEFAULT_HISTORY,
    history_bytes: int = DEFAULT_HISTORY_BYTES,
    history_ttl: float = DEFAULT_HISTORY_TTL,
    queue_size: int = DEFAULT_QUEUE_SIZE,
    key_prefix: str = DEFAULT_KEY_PREFIX,
    command_timeout: float = DEFAULT_TIMEOUT,
    max_topics: int = DEFAULT_MAX_TOPICS,
    min_replicas: int = 0,
    replica_timeout: float = DEFAULT_REPLICA_TIMEOUT,
) -> AsyncIterator[RedisBroker]:
    """Connect to Redis and run a :class:`RedisBroker` for the duration of the block.

    The reader tasks live in a nursery that this block owns; leaving the block
    closes the broker, cancels them and closes every connection. Enter it around
    :func:`trio_sse.serve`, not inside a request.

    Args:
        url: ``redis://[:password@]host[:port][/db]``, ``rediss://...`` or ``unix://...``;
            or ``redis+sentinel://[:password@]host:port[,host:port...]/service[/db]``:
            the master of ``service`` as the Sentinels at those addresses name it (the
            password is the master's), followed through a failover.
        history: Entries kept per topic stream for replay. At least 1, since live
            delivery reads from the stream.
        history_bytes: Bytes of event fields kept per topic stream; the oldest events
            are trimmed past it (the newest is kept whatever its size).
        history_ttl: Seconds an event is kept: it is trimmed at the first publish to
            its topic after it is this old, and a topic with no publish for this
            long is removed from Redis, with its idempotency keys.
        queue_size: Frames a subscriber may have queued before it is dropped as slow.
        key_prefix: Prepended to each topic to make its stream key.
        command_timeout: Seconds to wait for Redis in a publish, a replay or a ping.
        max_topics: Topics this process may read at once (one connection each), and
            topics Redis may hold under ``key_prefix`` (all processes together; one
            counts until ``history_ttl`` after its last publish): a publish to one
            more raises ``BrokerUnavailableError``.
        min_replicas: Replicas that must have a published event before ``publish()``
            returns (Redis ``WAIT``); 0 returns once the master has it, which a
            failover can lose (replication is asynchronous). When fewer take it in
            time, ``publish()`` raises ``BrokerUnavailableError`` saying so.
        replica_timeout: Seconds a publish waits for ``min_replicas`` (at most
            ``MAX_REPLICA_TIMEOUT``), on top of ``command_timeout``.

    Raises:
        ValueError: A bad URL or option.
        BrokerUnavailableError: Redis does not answer a ``PING`` at start.
    """
    where = _where(url)
    if history < 1:
        raise ValueError(f"history must be >= 1 with Redis, got {history}")
    if history_bytes < 1:
        raise ValueError(f"history_bytes must be >= 1, got {history_bytes}")
    if not history_ttl > 0:
        raise ValueError(f"history_ttl must be > 0 seconds, got {history_ttl}")
    if queue_size < 1:
        raise ValueError(f"queue_size must be >= 1, got {queue_size}")
    if not command_timeout > 0:
        raise ValueError(f"command_timeout must be > 0 seconds, got {command_timeout}")
    if max_topics < 1:
        raise ValueError(f"max_topics must be >= 1, got {max_topics}")
    if min_replicas < 0:
        raise ValueError(f"min_replicas must be >= 0, got {min_replicas}")
    if not 0 < replica_timeout <= MAX_REPLICA_TIMEOUT:
        raise ValueError(
            f"replica_timeout must be > 0 and <= {MAX_REPLICA_TIMEOUT} seconds, "
            f"got {replica_timeout}"
        )
    try:
        async with AsyncExitStack() as stack:
            commands, readers = await _clients(stack, url, command_timeout, max_topics)
            nursery = await stack.enter_async_context(trio.open_nursery())
            broker = RedisBroker(
                commands=commands,
                readers=readers,
                nursery=nursery,
                where=where,
                history=history,
                history_bytes=history_bytes,
                history_ttl=history_ttl,
                queue_size=queue_size,
                key_prefix=key_prefix,
                timeout=command_timeout,
                max_topics=max_topics,
                min_replicas=min_replicas,
                replica_timeout=replica_timeout,
            )
            try:
                await broker.ping()
                yield broker
            finally:
                broker._close_now()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # Our nursery and coredis's task groups each wrap whatever the block raised
        # (readers never raise). Give the caller its own exception back, as if there
        # were no task groups.
        raise _sole_exception(group) from None


async def _clients(
    stack: AsyncExitStack, url: str, command_timeout: float, max_topics: int
) -> tuple[coredis.Redis[bytes], coredis.Redis[bytes]]:
    """The broker's two clients, entered on ``stack``: for commands, and for readers."""
    # No automatic retries: a retried XADD whose first attempt reached Redis would
    # store the event twice. Readers retry in their own loop, from their position.
    options: dict[str, Any] = {"retry_policy": NoRetryPolicy(), "connect_timeout": command_timeout}
    # Blocked XREADs hold their connection, so they get a pool of their own and can
    # never starve publishes (the default pool has 64 connections).
    reader_options = {**options, "max_connections": max_topics}
    if urlsplit(url).scheme != SENTINEL_SCHEME:
        commands = coredis.Redis.from_url(url, **options)
        readers = coredis.Redis.from_url(url, **reader_options)
    else:
        target = _sentinel_target(url)
        sentinel = coredis.Sentinel(
            target.sentinels,
            # A Sentinel that does not answer is skipped for the next one.
            sentinel_kwargs={"connect_timeout": command_timeout, "stream_timeout": command_timeout},
            retry_policy=NoRetryPolicy(),
            connect_timeout=command_timeout,
            db=target.database,
            password=target.password,
        )
        await stack.enter_async_context(sentinel)
        commands = sentinel.primary_for(target.service)
        readers = sentinel.primary_for(target.service, max_connections=max_topics)
    await stack.enter_async_context(commands)
    await stack.enter_async_context(readers)
    return commands, readers


def _sole_exception(group: BaseExceptionGroup[BaseException]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
