"""Per-subscriber accounting: which published events arrived, which never did, which twice.

The load tester numbers its events 1, 2, 3... (``seq``, in the event data). A
*subscriber* is one logical client: its first connection and every reconnection
after a drop, each resuming with ``Last-Event-ID``. Its ledger answers, at the end:

* **delivered**: distinct events received;
* **lost**: events it should have received and never did, though a later one
  arrived (certainly lost);
* **undelivered**: events it should have received after the last one that arrived
  (late or lost: the run ended before anything told them apart);
* **duplicated**: events received again (a resume that replays too much);
* **gaps**: runs of consecutive lost events (a resume that replays too little
  leaves one gap, however many events it spans).

Which events should a subscriber receive? Every one published after the server had
subscribed it. The server subscribes before it sends the first body bytes (for
``trio-sse serve`` that is the ``retry`` and ``: stream open`` prelude), so the
*floor* is the last ``seq`` handed to a publisher when those bytes arrive: events
up to the floor may or may not arrive, events after it must. A connection dropped
before it received any event has no ``Last-Event-ID`` to resume from: its successor
starts afresh, with a new floor, as a browser's would.

Memory: events arrive in order on one connection, so the ledger keeps the highest
``seq`` seen plus the few holes below it, not a set of everything received.

At the end, :meth:`Ledger.judge` tells lost from undelivered in the server's order of
the events where their ids say one (see :mod:`._order`): concurrent publishes may be
numbered by the server in another order than their seqs.

To explain a loss, the ledger also keeps its last :data:`STREAMS_KEPT` streams: the
last seq handed out when each one's first body bytes arrived, and the
``Last-Event-ID`` it resumed from (the report pairs the lost seqs with the server's id
for each, from the publish answers).

Pure code.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Container
from typing import Final, NamedTuple

from ._order import ServerOrder

__all__ = ["STREAMS_KEPT", "Judgement", "Ledger", "StreamStart"]

# Enough to see the resumes around a loss; a subscriber dropped more often keeps the
# latest. 10,000 subscribers cost at most 80,000 small tuples.
STREAMS_KEPT: Final = 8


class StreamStart(NamedTuple):
    """One stream's start, as the ledger saw it.

    Attributes:
        published: The last seq handed out when its first body bytes arrived.
        last_event_id: The ``Last-Event-ID`` it was opened with ("": none, a fresh start).
    """

    published: int
    last_event_id: str


class Judgement(NamedTuple):
    """A subscriber's missing events, told apart.

    Attributes:
        lost: Seqs that a later event overtook (certainly lost), lowest first.
        undelivered: Missing events after the last one received (late, or lost).
        gaps: Runs of consecutive lost events.
    """

    lost: list[int]
    undelivered: int
    gaps: int


def _runs(values: list[int]) -> int:
    """How many runs of consecutive integers the sorted ``values`` make."""
    return sum(1 for i, value in enumerate(values) if i == 0 or values[i - 1] != value - 1)


class Ledger:
    """What one subscriber received; see the module docs."""

    __slots__ = (
        "_early",
        "_floor",
        "_holes",
        "_replay_floor",
        "connects",
        "delivered",
        "duplicated",
        "high",
        "replayed",
        "streams",
    )

    def __init__(self) -> None:
        self._floor = -1  # -1 until the first connection's first body bytes
        self.high = -1  # the highest seq received (or the floor)
        self._holes: set[int] = set()  # seqs in (floor, high) not received yet
        self._early: set[int] = set()  # seqs at or below the floor that were received
        self._replay_floor = -1
        self.connects = 0
        self.delivered = 0
        self.duplicated = 0
        self.replayed = 0
        self.streams: deque[StreamStart] = deque(maxlen=STREAMS_KEPT)

    @property
    def is_started(self) -> bool:
        """Whether a connection has delivered its first body bytes."""
        return self._floor >= 0

    @property
    def floor(self) -> int | None:
        """Events up to this seq may or may not arrive; ``None`` before the first stream."""
        return self._floor if self._floor >= 0 else None

    def start_stream(self, published: int, *, is_resume: bool, last_event_id: str = "") -> None:
        """A connection's first body bytes arrived.

        Args:
            published: The last seq handed out to a publisher.
            is_resume: The connection was opened with a ``Last-Event-ID``.
            last_event_id: That ``Last-Event-ID``, kept to explain losses.
        """
        if self._floor < 0 or (not is_resume and self.delivered == 0):
            self._floor = self.high = published
        self._replay_floor = published
        self.connects += 1
        self.streams.append(StreamStart(published, last_event_id))

    def receive(self, seq: int, failed: Container[int] = ()) -> bool:
        """Record event ``seq``; return whether it was live (not replayed from history).

        Args:
            seq: The event's number.
            failed: Seqs whose publish failed: never published, so never missing.
        """
        if seq > self.high:
            self._holes.update(range(self.high + 1, seq))
            self.high = seq
            self.delivered += 1
        elif seq in self._holes:
            self._holes.discard(seq)
            self.delivered += 1
        elif seq <= self._floor and seq not in self._early:
            self._early.add(seq)
            self.delivered += 1
        else:
            self.duplicated += 1
        is_live = seq > self._replay_floor
        if not is_live:
            self.replayed += 1
        return is_live

    def missing(self, last: int, failed: Container[int] = ()) -> list[int]:
        """Events after the floor, up to ``last``, never received (failed publishes excepted)."""
        if self._floor < 0:
            return []  # never connected: counted as an error, not as losses
        holes = sorted(s for s in self._holes if s not in failed)
        return holes + [s for s in range(self.high + 1, last + 1) if s not in failed]

    def lost_seqs(self, failed: Container[int] = (), limit: int | None = None) -> list[int]:
        """The :meth:`lost` events' seqs, lowest first (the first ``limit`` of them)."""
        return sorted(s for s in self._holes if s not in failed)[:limit]

    def lost(self, failed: Container[int] = ()) -> int:
        """Missing events that a later event overtook: certainly lost, not late."""
        return sum(1 for s in self._holes if s not in failed)

    def undelivered(self, last: int, failed: Container[int] = ()) -> int:
        """Missing events after the last one received: late, or lost; nothing tells."""
        if self._floor < 0:
            return 0
        return sum(1 for s in range(self.high + 1, last + 1) if s not in failed)

    def gaps(self, failed: Container[int] = ()) -> int:
        """Runs of consecutive :meth:`lost` events."""
        return _runs(sorted(s for s in self._holes if s not in failed))

    def has_caught_up(self, last: int, failed: Container[int] = ()) -> bool:
        """Whether every event up to ``last`` that it must receive has arrived."""
        return self._floor >= 0 and not self.missing(last, failed)

    def judge(
        self, last: int, failed: Container[int] = (), order: ServerOrder | None = None
    ) -> Judgement:
        """Its missing events, lost or undelivered, in ``order`` (the server's) if known.

        A missing event is lost if an event that came after it in the server's order
        arrived: a stream delivers in that order, and a resume replays in it. Without
        an order, "after" is by seq (:meth:`lost`, :meth:`undelivered`).
        """
        if self._floor < 0:
            return Judgement([], 0, 0)
        if order is None:
            return Judgement(
                self.lost_seqs(failed), self.undelivered(last, failed), self.gaps(failed)
            )
        latest = max(self._latest_received(order), order.latest_of(self._early))
        lost: list[int] = []
        lost_ranks: list[int] = []
        undelivered = 0
        for seq in self.missing(last, failed):
            rank = order.rank(seq)
            # No rank: a publish with no answer at the end; nothing places it.
            if rank is not None and rank < latest:
                lost.append(seq)
                lost_ranks.append(rank)
            else:
                undelivered += 1
        return Judgement(lost, undelivered, _runs(sorted(lost_ranks)))

    def _latest_received(self, order: ServerOrder) -> int:
        """The latest rank among the seqs received above the floor."""
        latest, start = -1, self._floor + 1
        for hole in sorted(self._holes):
            latest = max(latest, order.latest(start, hole - 1))
            start = hole + 1
        return max(latest, order.latest(start, self.high))
