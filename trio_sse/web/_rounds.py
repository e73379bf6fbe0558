"""Which streams of this Trio run have a write in flight: the clock of batching across time.

Hypercorn's trio worker spends ~200 µs of CPU per chunk, and Trio runs every runnable
task once per scheduling batch. When one event is published to 1000 streams, their
1000 writes form one round of ~0.2 s during which a publish request, which needs a
dozen scheduling steps, barely moves. Streams that each wait a fixed time after
their own write drift apart, and rounds then overlap without a gap, so the publisher
never gets ahead and every write carries one event. A stream that batches waits
instead for the round it took part in to end, then its window: the publish path gets
that whole window to itself, and what it publishes meanwhile shares the next round.
"""

from __future__ import annotations

from typing import Final

import trio

__all__ = ["WriteRounds", "write_rounds"]


class WriteRounds:
    """A count of streams with a chunk handed to the server and not yet written."""

    __slots__ = ("_ended", "_started_at", "in_flight", "last_duration")

    def __init__(self) -> None:
        self.in_flight = 0
        self.last_duration = 0.0  # seconds, from the first write of a round to its end
        self._started_at = 0.0
        self._ended = trio.Event()

    def started(self) -> None:
        if not self.in_flight:
            self._started_at = trio.current_time()
        self.in_flight += 1

    def finished(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self.last_duration = trio.current_time() - self._started_at
            self._ended.set()
            self._ended = trio.Event()

    @property
    def duration(self) -> float:
        """How long the current round has lasted, or the last one if none is in flight."""
        if self.in_flight:
            return trio.current_time() - self._started_at
        return self.last_duration

    async def wait_ended(self) -> None:
        """Return once no stream has a write in flight (at once if none has)."""
        if self.in_flight:
            await self._ended.wait()
        else:
            await trio.lowlevel.checkpoint()


# Per Trio run, not per process: state shared between runs would leak across them
# (tests start many runs), and an object per app would have to be threaded through
# every event_stream() call.
_ROUNDS: Final = trio.lowlevel.RunVar[WriteRounds]("trio_sse_write_rounds")


def write_rounds() -> WriteRounds:
    """The :class:`WriteRounds` of the current Trio run."""
    try:
        return _ROUNDS.get()
    except LookupError:
        rounds = WriteRounds()
        _ROUNDS.set(rounds)
        return rounds
