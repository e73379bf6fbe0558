"""Opening a Redis broker: the options checked, the clients, the readers' nursery.

Which clients depends on the URL (see ``_clients``): one Redis, the master a Sentinel
service names (asked again for every new connection, so retries reach the new master
after a failover), or a cluster (its map of slots read again after a failure).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from urllib.parse import urlsplit

import trio

from ..broker import DEFAULT_HISTORY, DEFAULT_PRESENCE_TTL, DEFAULT_QUEUE_SIZE
from ._broker import (
    DEFAULT_HISTORY_BYTES,
    DEFAULT_HISTORY_TTL,
    DEFAULT_KEY_PREFIX,
    DEFAULT_MAX_TOPICS,
    DEFAULT_REPLICA_TIMEOUT,
    DEFAULT_TIMEOUT,
    MAX_REPLICA_TIMEOUT,
    RedisBroker,
    longest_call,
)
from ._clients import ClusterClients, FixedClients, RedisClients
from ._urls import CLUSTER_SCHEME, SENTINEL_SCHEME, cluster_target, sentinel_target, where

__all__ = ["open_redis_broker"]


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
    presence_ttl: float = DEFAULT_PRESENCE_TTL,
    presence_events: bool = False,
) -> AsyncIterator[RedisBroker]:
    """Connect to Redis and run a :class:`RedisBroker` for the duration of the block.

    The reader tasks live in a nursery that this block owns; leaving the block
    closes the broker, cancels them and closes every connection. Enter it around
    :func:`trio_sse.serve`, not inside a request.

    Args:
        url: ``redis://[:password@]host[:port][/db]``, ``rediss://...`` or ``unix://...``;
            or ``redis+sentinel://[:password@]host:port[,host:port...]/service[/db]``:
            the master of ``service`` as the Sentinels at those addresses name it (the
            password is the master's), followed through a failover; or
            ``redis+cluster://[:password@]host:port[,host:port...]``: a Redis Cluster,
            found through those nodes (any that answer), followed through a failover.
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
        presence_ttl: Seconds a process's presence outlives its last refresh
            (every third of it): the streams and subjects of a process that died
            drop out of :meth:`RedisBroker.presence` within this. A process that
            leaves the block takes its own out at once.
        presence_events: Publish ``join`` and ``leave`` events on a topic as
            subjects come and go, once per subject over all processes.

    Raises:
        ValueError: A bad URL or option.
        BrokerUnavailableError: Redis does not answer a ``PING`` at start.
    """
    target = where(url)
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
            nursery = await stack.enter_async_context(trio.open_nursery())
            clients: RedisClients
            scheme = urlsplit(url).scheme
            if scheme == CLUSTER_SCHEME:
                cluster = ClusterClients(
                    cluster_target(url),
                    nursery,
                    command_timeout,
                    max_readers=max_topics,
                    retire_after=longest_call(command_timeout, replica_timeout),
                )
                await cluster.start()
                clients = cluster
            else:
                sentinel = sentinel_target(url) if scheme == SENTINEL_SCHEME else None
                clients = await FixedClients.open(
                    stack, url, sentinel, command_timeout, max_readers=max_topics
                )
            broker = RedisBroker(
                clients=clients,
                nursery=nursery,
                where=target,
                history=history,
                history_bytes=history_bytes,
                history_ttl=history_ttl,
                queue_size=queue_size,
                key_prefix=key_prefix,
                timeout=command_timeout,
                max_topics=max_topics,
                min_replicas=min_replicas,
                replica_timeout=replica_timeout,
                presence_ttl=presence_ttl,
                presence_events=presence_events,
            )
            try:
                await broker.ping()
                yield broker
            finally:
                # Shielded, and bounded by command_timeout (aclose's presence
                # withdrawal): the other processes then see this one's streams gone
                # now rather than presence_ttl later, even when the block is cancelled.
                with trio.CancelScope(shield=True):
                    await broker.aclose()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # Our nursery and coredis's task groups each wrap whatever the block raised
        # (readers never raise). Give the caller its own exception back, as if there
        # were no task groups.
        raise _sole_exception(group) from None


def _sole_exception(group: BaseExceptionGroup[BaseException]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
