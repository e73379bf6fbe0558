"""The broker's coredis clients: one pair for commands and readers, kept usable.

For one Redis, or the master a Sentinel names, the clients stay the same for the
broker's life: their pools reconnect by themselves, and with Sentinel ask for the
master again on each new connection.

A cluster client needs more. coredis 6.9 refreshes its map of slots to masters only
after errors on connections it already had, and its refresh asks the known nodes in
order, giving up at the first that does not answer. After a failover, the map keeps
naming the dead master, and every new connection to it is refused, forever. So a
failure on a cluster marks the map as suspect, and a task of the broker's makes new
clients from the nodes that answer, then closes the old ones. The new clients read
the slots from a live node: once the cluster has promoted a replica, commands go to
it. Until then the new map is as stale as the old one, and the next failure asks again
(at most every ``REBUILD_INTERVAL`` seconds).
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from typing import Any, Final, TypeAlias

import coredis
import trio
from coredis.connection import TCPLocation
from coredis.exceptions import RedisError
from coredis.retry import NoRetryPolicy

from ..errors import BrokerUnavailableError
from ._urls import ClusterTarget, SentinelTarget

__all__ = ["REBUILD_INTERVAL", "Client", "ClusterClients", "FixedClients", "RedisClients"]

logger = logging.getLogger("trio_sse.redis")

Client: TypeAlias = "coredis.Redis[bytes] | coredis.RedisCluster[bytes]"

# A failover takes a few node timeouts (seconds); asking the cluster for its map
# twice a second finds the new master soon after, at no cost worth counting.
REBUILD_INTERVAL: Final = 0.5

# A node that does not answer PING in this long is left out of the new map's sources.
_PROBE_TIMEOUT: Final = 1.0

# What opening or using a coredis client raises when Redis is away: its own errors,
# often wrapped in an ExceptionGroup by the task group of the client's pool.
_COREDIS_FAILURES: Final = (RedisError, OSError, trio.TooSlowError, ExceptionGroup)


def _sole(exc: BaseException) -> BaseException:
    """The one exception inside (nested) single-exception groups, for messages."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _options(command_timeout: float) -> dict[str, Any]:
    # No automatic retries: a retried XADD whose first attempt reached Redis would
    # store the event twice. Readers retry in their own loop, from their position.
    return {"retry_policy": NoRetryPolicy(), "connect_timeout": command_timeout}


class RedisClients:
    """What the broker needs of its clients: :class:`FixedClients` or :class:`ClusterClients`."""

    is_cluster: bool = False

    @property
    def commands(self) -> Client:
        """For publishes, replays and pings (a shared pool)."""
        raise NotImplementedError

    @property
    def readers(self) -> Client:
        """For blocked ``XREAD`` s: a pool of its own, so they never starve publishes."""
        raise NotImplementedError

    def failed(self) -> None:
        """A command failed as if Redis went away (not a refusal): recover if it can help."""


class FixedClients(RedisClients):
    """One Redis, or a Sentinel service's master: the same two clients throughout."""

    def __init__(self, commands: Client, readers: Client) -> None:
        self._commands = commands
        self._readers = readers

    @property
    def commands(self) -> Client:
        return self._commands

    @property
    def readers(self) -> Client:
        return self._readers

    @classmethod
    async def open(
        cls,
        stack: AsyncExitStack,
        url: str,
        sentinel: SentinelTarget | None,
        command_timeout: float,
        max_readers: int,
    ) -> FixedClients:
        """Both clients, entered on ``stack``."""
        options = _options(command_timeout)
        # Blocked XREADs hold their connection (the default pool has 64).
        reader_options = {**options, "max_connections": max_readers}
        commands: Client
        readers: Client
        if sentinel is None:
            commands = coredis.Redis.from_url(url, **options)
            readers = coredis.Redis.from_url(url, **reader_options)
        else:
            service = coredis.Sentinel(
                sentinel.sentinels,
                # A Sentinel that does not answer is skipped for the next one.
                sentinel_kwargs={
                    "connect_timeout": command_timeout,
                    "stream_timeout": command_timeout,
                },
                retry_policy=NoRetryPolicy(),
                connect_timeout=command_timeout,
                db=sentinel.database,
                password=sentinel.password,
            )
            await stack.enter_async_context(service)
            commands = service.primary_for(sentinel.service)
            readers = service.primary_for(sentinel.service, max_connections=max_readers)
        await stack.enter_async_context(commands)
        await stack.enter_async_context(readers)
        return cls(commands, readers)


class _Generation:
    """One pair of cluster clients, entered by a task that holds them until ``retire()``
    and ``grace`` seconds more."""

    def __init__(
        self,
        commands: coredis.RedisCluster[bytes],
        readers: coredis.RedisCluster[bytes],
        grace: float,
    ):
        self.commands = commands
        self.readers = readers
        self._grace = grace
        self._retired = trio.Event()

    async def hold(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with self.commands, self.readers:
            task_status.started()
            await self._retired.wait()
            # A call that took these clients just before the new ones replaced them is
            # still running: closed under it, its pool raised RuntimeError ("not
            # initialized or has exited"), which a publish answered as a 500 during a
            # failover. Every call ends by its deadline, so it ends within the grace.
            await trio.sleep(self._grace)

    def retire(self) -> None:
        self._retired.set()


class ClusterClients(RedisClients):
    """A Redis Cluster's clients, made again from the live nodes after a failure.

    ``nursery`` holds the clients' tasks (and the one that rebuilds them): the
    broker's, so they end with it. Replaced clients stay open ``retire_after`` seconds
    (the longest one call holds them) for the calls still using them.
    """

    is_cluster = True

    def __init__(
        self,
        target: ClusterTarget,
        nursery: trio.Nursery,
        command_timeout: float,
        max_readers: int,
        retire_after: float,
    ) -> None:
        self._target = target
        self._retire_after = retire_after
        self._nursery = nursery
        self._timeout = command_timeout
        self._max_readers = max_readers
        self._known: list[TCPLocation] = list(target.nodes)  # seeds, then every node seen
        self._generation: _Generation | None = None
        self._suspect = trio.Event()

    @property
    def commands(self) -> Client:
        assert self._generation is not None, "ClusterClients.start() first"
        return self._generation.commands

    @property
    def readers(self) -> Client:
        assert self._generation is not None, "ClusterClients.start() first"
        return self._generation.readers

    async def start(self) -> None:
        """Make the first clients, and start watching for failures.

        Raises:
            BrokerUnavailableError: No node answered with the cluster's slots.
        """
        try:
            with trio.fail_after(self._timeout):
                await self._rebuild()
        except _COREDIS_FAILURES as exc:
            raise BrokerUnavailableError(
                f"Redis Cluster at {self._target.where} did not answer: {_sole(exc)!r}"
            ) from exc
        self._nursery.start_soon(self._watch, name="trio_sse.redis:cluster-map")

    def failed(self) -> None:
        self._suspect.set()

    async def _watch(self) -> None:
        while True:
            await self._suspect.wait()
            try:
                with trio.fail_after(self._timeout):
                    await self._rebuild()
            except _COREDIS_FAILURES as exc:
                logger.warning(
                    "Redis Cluster at %s: could not read its slots again (%r)",
                    self._target.where,
                    _sole(exc),
                )
            await trio.sleep(REBUILD_INTERVAL)
            # Failures until now were on the clients just replaced (or asked for this).
            self._suspect = trio.Event()

    async def _rebuild(self) -> None:
        """New clients seeded with the nodes that answer now; then retire the old ones."""
        live: list[TCPLocation] = []
        seen: set[TCPLocation] = set()
        async with trio.open_nursery() as nursery:
            for node in self._known:
                nursery.start_soon(self._probe, node, live, seen)
        # Nodes added since (a new master, a replica) are asked next time.
        self._known += [node for node in seen if node not in self._known]
        # Keep the seeds' order among the live nodes: the first one is asked first.
        seeds = [node for node in self._known if node in live] or list(self._target.nodes)
        options = {
            **_options(self._timeout),
            "startup_nodes": seeds,
            "password": self._target.password,
        }
        generation = _Generation(
            coredis.RedisCluster(**options),
            # One blocked XREAD per topic read, each on the topic's own master: up to
            # max_readers connections to one node, never one per topic per node.
            coredis.RedisCluster(
                **options, max_connections=self._max_readers, max_connections_per_node=True
            ),
            self._retire_after,
        )
        await self._nursery.start(generation.hold)
        previous, self._generation = self._generation, generation
        if previous is not None:
            previous.retire()
            logger.info("Redis Cluster at %s: read its slots again", self._target.where)

    async def _probe(
        self, node: TCPLocation, live: list[TCPLocation], seen: set[TCPLocation]
    ) -> None:
        """Add ``node`` to ``live`` if it answers, and the nodes it knows to ``seen``."""
        with trio.move_on_after(_PROBE_TIMEOUT):
            try:
                async with coredis.Redis(
                    node.host,
                    node.port,
                    password=self._target.password,
                    retry_policy=NoRetryPolicy(),
                    connect_timeout=_PROBE_TIMEOUT,
                ) as client:
                    details = await client.cluster_nodes()
            except _COREDIS_FAILURES:
                return
            live.append(node)
            seen.update(TCPLocation(detail["host"], int(detail["port"])) for detail in details)
