"""The subscribers: one task per logical client, connecting, reading, reconnecting; and the churn.

Each subscriber connects (at most ``max_connecting`` connects in flight), reads, and
reconnects with ``Last-Event-ID`` whenever its connection drops or fails. The ramp
starts subscriber ``g`` (its number over the whole run, whichever process holds it)
at ``g / ramp`` seconds. The churn drops a random open connection ``churn`` times a
second (FIN, RST or stall, in turn) by cancelling its read scope; its task drops the
socket that way and reconnects. The drain waits until every subscriber has every
event it should (:meth:`Subscribers.start_drain`, :attr:`Subscribers.all_caught_up`).

With source addresses, subscriber ``g`` binds to address ``g mod len(addresses)``
before it connects, so one machine is not limited to one address's ephemeral ports.
"""

from __future__ import annotations

import itertools
import random
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import trio

from ._connection import (
    Address,
    DropMethod,
    ErrorKind,
    StreamConnection,
    StreamFailureError,
)
from ._http import Target
from ._ledger import Ledger
from ._options import LoadTestOptions
from ._tally import Tally

__all__ = ["Subscribers"]

# A subscriber whose connects keep failing waits 0.25, 0.5, 1, 2, 4, then 5 s between
# tries (with jitter), so a dead server is not hammered by 10,000 loops.
_BACKOFF_FIRST: Final = 0.25
_BACKOFF_MAX: Final = 5.0


class _OpenSet:
    """The subscribers with an open connection, with O(1) add, remove and random pick."""

    __slots__ = ("_items", "_positions")

    def __init__(self) -> None:
        self._items: list[int] = []
        self._positions: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item: int) -> bool:
        return item in self._positions

    def add(self, item: int) -> None:
        if item not in self._positions:
            self._positions[item] = len(self._items)
            self._items.append(item)

    def discard(self, item: int) -> None:
        position = self._positions.pop(item, None)
        if position is None:
            return
        last = self._items.pop()
        if last != item:
            self._items[position] = last
            self._positions[last] = position

    def pick(self, rng: random.Random) -> int | None:
        return rng.choice(self._items) if self._items else None


@dataclass(slots=True)
class _Slot:
    """The churn's handle on a subscriber: cancel ``scope`` to drop it by ``drop``."""

    scope: trio.CancelScope | None = None
    drop: DropMethod | None = None


class Subscribers:
    """This process's subscribers: ``numbers[i]`` is local subscriber ``i``'s run-wide number.

    Attributes:
        ledgers: Each local subscriber's ledger.
        open: The local subscribers with an open connection.
        ramp_done: Set when every local subscriber has tried to connect once.
        all_caught_up: Set, once the drain has begun, when every local subscriber is
            connected and has every event up to the drain's last seq.
    """

    def __init__(
        self,
        options: LoadTestOptions,
        tally: Tally,
        *,
        address: Address,
        target: Target,
        numbers: Sequence[int],
        churn: float,
        max_connecting: int,
    ) -> None:
        self._o = options
        self._tally = tally
        self._record = tally.record
        self._address = address
        self._target = target
        self._numbers = list(numbers)
        self._churn_rate = churn
        self._sources = [
            (str(a), 0) if ":" not in a else (str(a), 0, 0, 0) for a in options.source_addresses
        ]
        n = len(self._numbers)
        self.ledgers = [Ledger() for _ in range(n)]
        self._slots = [_Slot() for _ in range(n)]
        self._caught_up = bytearray(n)
        self._caught_up_count = 0
        self.all_caught_up = trio.Event()
        self._draining_last: int | None = None
        self._connecting = trio.CapacityLimiter(max_connecting)
        self._first_attempts = 0
        self.ramp_done = trio.Event()
        self.open = _OpenSet()
        self._rng = random.Random()  # noqa: S311 - picks connections to drop, not secrets
        self._record.ledgers = self.ledgers

    # -- the drain ------------------------------------------------------------------

    def start_drain(self, last: int) -> None:
        """From now on, watch for every subscriber to have every event up to ``last``."""
        self._draining_last = last
        for index in range(len(self.ledgers)):
            self._check_caught_up(index)
        if not self.ledgers:
            self.all_caught_up.set()

    def _check_caught_up(self, index: int) -> None:
        last = self._draining_last
        if last is None or self._caught_up[index] or index not in self.open:
            return
        if self.ledgers[index].has_caught_up(last, self._tally.failed):
            self._caught_up[index] = 1
            self._caught_up_count += 1
            if self._caught_up_count == len(self.ledgers):
                self.all_caught_up.set()

    # -- the ramp and the churn -----------------------------------------------------

    async def ramp(self, streams: trio.Nursery, start: float) -> None:
        """Start each subscriber at ``start + number / ramp`` (Trio's clock)."""
        for index, number in enumerate(self._numbers):
            await trio.sleep_until(start + number / self._o.ramp)
            streams.start_soon(self._subscriber, index, streams)
        if not self._numbers:
            self.ramp_done.set()

    async def churn(self) -> None:
        """Drop a random open connection ``churn`` times a second, until cancelled."""
        if self._churn_rate <= 0:
            return
        methods = itertools.cycle(self._o.drop)
        ticks = 0
        churn_start = trio.current_time()
        while True:
            ticks += 1
            await trio.sleep_until(churn_start + ticks / self._churn_rate)
            index = self.open.pick(self._rng)
            if index is None:
                continue
            slot = self._slots[index]
            assert slot.scope is not None
            slot.drop = next(methods)
            slot.scope.cancel()
            # Out of the pool at once, so that it is not picked twice.
            self.open.discard(index)
            self._record.drops[slot.drop] += 1
            self._tally.drop()

    # -- one subscriber -------------------------------------------------------------

    async def _subscriber(self, index: int, streams: trio.Nursery) -> None:
        ledger = self.ledgers[index]
        record = self._record
        last_event_id = ""
        failures = 0
        has_connected = False
        # When the last stream was lost: the reconnect time runs from there.
        lost_at: float | None = None
        while True:
            conn = await self._connect(index, last_event_id)
            if not has_connected:
                self._first_attempt_done()
            if conn is None:
                failures += 1
                await trio.sleep(self._backoff(failures))
                continue
            record.connects += 1
            if lost_at is not None:
                record.reconnect_time.record(trio.current_time() - lost_at)
            if has_connected:
                record.reconnects += 1
            has_connected = True
            opened_at = trio.current_time()
            try:
                drop = await self._read(index, conn, ledger, last_event_id)
            except BaseException:
                conn.close_fin()
                raise
            lost_at = trio.current_time()
            last_event_id = conn.decoder.last_event_id
            if drop is None:  # the stream failed; the error is counted
                conn.close_fin()
                # A stream that ran a while before failing is retried at once.
                failures = 1 if trio.current_time() - opened_at > _BACKOFF_MAX else failures + 1
                await trio.sleep(self._backoff(failures) if failures > 1 else 0)
                continue
            failures = 0
            if drop is DropMethod.FIN:
                conn.close_fin()
            elif drop is DropMethod.RST:
                conn.close_rst()
            else:
                streams.start_soon(self._hold_stalled, conn.detach_socket())

    async def _connect(self, index: int, last_event_id: str) -> StreamConnection | None:
        """Open a stream, or count the error and return None.

        At most ``max_connecting`` attempts are in flight: beyond what the server
        accepts, more would only overflow its accept queue (dropped SYNs, then resets),
        and the connect time would measure the flood instead of the server.
        """
        timeout = self._o.connect_timeout
        source = self._source_of(index)
        async with self._connecting:
            started = trio.current_time()
            try:
                with trio.fail_after(timeout):
                    conn = await StreamConnection.open(
                        self._address, self._target, last_event_id=last_event_id, source=source
                    )
            except StreamFailureError as exc:
                self._tally.error(exc.kind, str(exc))
                return None
            except trio.TooSlowError:
                self._tally.error(ErrorKind.TIMEOUT, f"no response head within {timeout:g} s")
                return None
        self._record.connect_time.record(trio.current_time() - started)
        return conn

    def _source_of(self, index: int) -> tuple[str | int, ...] | None:
        if not self._sources:
            return None
        return self._sources[self._numbers[index] % len(self._sources)]

    def _first_attempt_done(self) -> None:
        self._first_attempts += 1
        if self._first_attempts == len(self._numbers):
            self.ramp_done.set()

    def _backoff(self, failures: int) -> float:
        delay = min(_BACKOFF_FIRST * 2.0 ** (failures - 1), _BACKOFF_MAX)
        return delay * self._rng.uniform(0.5, 1.0)

    async def _read(
        self, index: int, conn: StreamConnection, ledger: Ledger, last_event_id: str
    ) -> DropMethod | None:
        """Read until the churn drops this connection (return how) or it fails (None)."""
        slot = self._slots[index]
        tally = self._tally
        has_started = False
        with trio.CancelScope() as scope:
            slot.scope, slot.drop = scope, None
            self.open.add(index)
            self._record.peak_connections = max(self._record.peak_connections, len(self.open))
            try:
                while True:
                    try:
                        events = await conn.receive()
                    except StreamFailureError as exc:
                        tally.error(exc.kind, str(exc))
                        return None
                    if not has_started and conn.has_body:
                        has_started = True
                        if self._o.is_publishing or ledger.is_started:
                            # Without a publisher, a first stream starts at its
                            # first event instead (see Tally).
                            ledger.start_stream(
                                tally.last_seq(),
                                is_resume=bool(last_event_id),
                                last_event_id=last_event_id,
                            )
                    for event in events:
                        tally.on_event(ledger, event)
                    if self._draining_last is not None:
                        # Events, or a fresh start (a new floor), may complete it.
                        self._check_caught_up(index)
            finally:
                self.open.discard(index)
                slot.scope = None
        return slot.drop

    async def _hold_stalled(self, sock: trio.socket.SocketType) -> None:
        """Keep a stalled socket open, unread, for ``stall_for`` seconds (or to the close)."""
        try:
            await trio.sleep(self._o.stall_for)
        finally:
            # With unread data queued on it, Linux sends RST here rather than FIN.
            sock.close()


def check_source_addresses(addresses: Sequence[str], family: socket.AddressFamily) -> None:
    """Refuse source addresses that this machine cannot bind, or of the wrong family.

    Raises:
        ValueError: The first address that cannot be used, and why.
    """
    for text in addresses:
        is_v6 = ":" in text
        if (family == socket.AF_INET6) != is_v6:
            raise ValueError(
                f"source address {text} is IPv{6 if is_v6 else 4}, but the server's address "
                f"is IPv{6 if family == socket.AF_INET6 else 4}"
            )
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((text, 0))
            except OSError as exc:
                raise ValueError(
                    f"cannot bind source address {text}: {exc.strerror or exc} (not an "
                    "address of this machine? on Linux all of 127.0.0.0/8 is loopback)"
                ) from None
