"""Presence across processes: each process writes its own book to Redis; scripts merge.

A process (a "worker" here, whatever runs it) keeps its open streams per topic in a
:class:`~trio_sse.broker.PresenceBook`, changed synchronously as streams open and
close, with no I/O on that path. One task per broker writes the changes to Redis
(``PRESENCE_SYNC``, one script per changed topic, at most every ``_SYNC_INTERVAL``
seconds) and refreshes every topic it holds every ``ttl / 3`` seconds. A worker
that stops refreshing (it crashed, or lost Redis) is swept out by the next script
run on the topic by anyone, at most ``ttl`` after its last refresh; the subjects
that leave with it then get their ``leave`` events from whoever swept them.

The scripts count, per subject, the workers where it is present, so ``join`` and
``leave`` go out once per subject however many workers and tabs it has.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

import trio

from ..broker import (
    DEFAULT_PRESENCE_TTL,
    Presence,
    PresenceBook,
    PresenceChange,
    presence_event,
)
from ..protocol import ServerSentEvent
from . import _scripts
from ._clients import RedisClients

__all__ = ["DEFAULT_PRESENCE_TTL", "PresenceSync"]

logger = logging.getLogger("trio_sse.redis")

# A burst of streams opening or closing becomes one write per topic, at most this
# often: presence lags a change by about this plus a round trip.
_SYNC_INTERVAL: Final = 0.05
_RETRY_DELAY: Final = 1.0

Announce = Callable[[str, ServerSentEvent], Awaitable[object]]


def _texts(values: Sequence[object]) -> list[str]:
    return [bytes(value).decode() if isinstance(value, bytes) else str(value) for value in values]


class PresenceSync:
    """This process's presence on Redis: its book, and the task that writes it out.

    Args:
        clients: The broker's Redis clients.
        key_of: A topic's key (``<prefix>{<topic>}``); presence keys extend it.
        ttl: See :data:`~trio_sse.broker.DEFAULT_PRESENCE_TTL`.
        timeout: Seconds one script may take.
        announce: Publishes a ``join`` or ``leave`` event; ``None``: no presence events.
        on_failure: Told of each failed script, as the broker's readers tell it.
    """

    def __init__(
        self,
        *,
        clients: RedisClients,
        key_of: Callable[[str], str],
        ttl: float,
        timeout: float,
        announce: Announce | None,
        on_failure: Callable[[BaseException], None],
    ) -> None:
        if not ttl > 0:
            raise ValueError(f"presence_ttl must be > 0 seconds, got {ttl}")
        self.book = PresenceBook()
        self._clients = clients
        self._key_of = key_of
        self._ttl_ms = max(1, round(ttl * 1000))
        self._refresh = ttl / 3
        self._timeout = timeout
        self._announce = announce
        self._on_failure = on_failure
        # Tells this process's entries apart from other processes' in Redis.
        self._worker = secrets.token_hex(8)
        self._sync_script = clients.commands.register_script(_scripts.PRESENCE_SYNC)
        self._read_script = clients.commands.register_script(_scripts.PRESENCE_READ)
        # Per topic, the subjects Redis holds for this worker, as of the last write;
        # absent: the next write is a full one.
        self._synced: dict[str, set[str]] = {}
        self._dirty: set[str] = set()
        self._wake = trio.Event()
        self._running = trio.CancelScope()  # run()'s; withdraw() ends it

    def enter(self, topic: str, subject: str | None) -> None:
        """A stream opened on ``topic`` (never blocks: written out by :meth:`run`)."""
        self.book.enter(topic, subject)
        self._changed(topic)

    def leave(self, topic: str, subject: str | None) -> None:
        """A stream on ``topic`` closed (never blocks, so it may run in a cancelled scope)."""
        self.book.leave(topic, subject)
        self._changed(topic)

    def _changed(self, topic: str) -> None:
        self._dirty.add(topic)
        self._wake.set()

    def _keys(self, topic: str) -> tuple[list[str], str]:
        key = self._key_of(topic)
        return [f"{key}:pw", f"{key}:ps", f"{key}:pj"], f"{key}:pm:"

    async def run(self) -> None:
        """Write changes and refreshes to Redis until cancelled (the broker's nursery)."""
        with self._running:
            await self._run()

    async def _run(self) -> None:
        next_refresh = trio.current_time() + self._refresh
        while True:
            with trio.move_on_at(next_refresh):
                await self._wake.wait()
            self._wake = trio.Event()
            now = trio.current_time()
            if now >= next_refresh:
                self._dirty.update(self._synced)
                self._dirty.update(self.book.topics())
                next_refresh = now + self._refresh
            failed = await self._sync_dirty()
            # Changes made meanwhile wait for the next round: a burst is one write.
            await trio.sleep(_RETRY_DELAY if failed else _SYNC_INTERVAL)
            if self._dirty:
                self._wake.set()

    async def _sync_dirty(self) -> bool:
        """Write every changed topic; True if any write failed (it is retried)."""
        topics, self._dirty = self._dirty, set()
        failed = False
        for topic in topics:
            try:
                await self._sync(topic, self.book.subjects(topic), self.book.streams(topic))
            except Exception as exc:  # noqa: BLE001 (see below)
                # Not only Redis's errors, as for a reader: this task must not end
                # the broker. The next write of the topic is a full one.
                failed = True
                self._synced.pop(topic, None)
                self._dirty.add(topic)
                self._on_failure(exc)
        return failed

    async def _sync(self, topic: str, present: set[str], streams: int) -> None:
        synced = self._synced.get(topic)
        if synced is None:
            full, added, removed = True, sorted(present), []
        else:
            full, added, removed = False, sorted(present - synced), sorted(synced - present)
        keys, member_prefix = self._keys(topic)
        arguments: list[str | int] = [
            member_prefix,
            self._worker,
            self._ttl_ms,
            streams,
            int(full),
            len(added),
            *added,
            *removed,
        ]
        reply: object
        with trio.fail_after(self._timeout):
            reply = await self._sync_script(
                keys=[*keys, member_prefix + self._worker],
                args=arguments,
                client=self._clients.commands,
            )
        assert isinstance(reply, list), f"unexpected reply {reply!r}"
        assert len(reply) >= 2, f"unexpected reply {reply!r}"
        resync, joined = int(reply[0]), int(reply[1])
        subjects = _texts(reply[2:])
        if resync:
            # This worker's entries had expired (it was away longer than the ttl).
            self._synced.pop(topic, None)
            self._changed(topic)
        elif streams == 0 and not present:
            self._synced.pop(topic, None)  # the script removed this worker
        else:
            self._synced[topic] = present
        await self._tell(topic, subjects[:joined], subjects[joined:])

    async def read(self, topic: str, limit: int) -> Presence:
        """Presence on ``topic`` over every worker (sweeping those that expired)."""
        keys, member_prefix = self._keys(topic)
        reply: object
        with trio.fail_after(self._timeout):
            reply = await self._read_script(
                keys=keys, args=[member_prefix, limit], client=self._clients.commands
            )
        assert isinstance(reply, list), f"unexpected reply {reply!r}"
        assert len(reply) >= 3, f"unexpected reply {reply!r}"
        streams, count, listed = (int(value) for value in reply[:3])
        subjects = _texts(reply[3:])
        await self._tell(topic, [], subjects[listed:])
        return Presence(
            topic=topic,
            streams=streams,
            subjects=tuple(sorted(subjects[:listed])),
            subject_count=count,
        )

    async def withdraw(self) -> None:
        """Take this worker out of presence now, with the leave events that follow.

        For a clean stop: the others need not wait ``ttl`` to see its streams gone.
        Ends :meth:`run` first, so that no write of its follows.
        """
        self._running.cancel()
        for topic in list(self._synced):
            await self._sync(topic, set(), 0)

    async def _tell(self, topic: str, joins: list[str], leaves: list[str]) -> None:
        if self._announce is None:
            return
        changes = [(PresenceChange.JOIN, s) for s in joins]
        changes += [(PresenceChange.LEAVE, s) for s in leaves]
        for change, subject in changes:
            try:
                await self._announce(topic, presence_event(change, subject))
            except Exception as exc:  # noqa: BLE001 (logged; presence goes on)
                # Presence itself is right in Redis; only the notice is lost.
                logger.warning(
                    "presence: could not publish %s of %r on topic %s: %s",
                    change.value,
                    subject,
                    topic,
                    exc,
                )
