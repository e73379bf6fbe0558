"""Batching across time: whether a stream writes what is queued now, or a little later.

A stream always writes everything queued for it as one chunk. This decides when to
*wait* for more: each write has a fixed cost (a wake-up and a system call), so while
the event loop is saturated, holding each stream's next write for a short window lets
everything published meanwhile share it, and the publisher gets the loop to itself
for that time. While the loop has time to spare, waiting would only add latency.

Two parts, both pure bookkeeping with no I/O:

* :class:`LoopLoad`, one per Trio run: whether the loop is saturated. The signal is how
  late the loop runs a stream that a publish woke (its scheduling delay). That does not
  depend on what a write costs, so the rule holds whether writes take 200 µs or 2 µs
  (an earlier rule timed the writes themselves, and broke when they became cheap), and
  a write stuck on a client that stopped reading, which costs no CPU, is no signal.
  It is shared by every stream of the run, so that they hold together: a stream that
  happens to run first after a publish sees no delay, but the loop is busy all the same.
* :class:`BatchWindow`, one per stream: whether to hold, given the loop's load and the
  stream's own timing. Only flowing events are held: at a few events per second every
  event goes out at once, however busy the loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import trio

__all__ = ["DEFAULT_WINDOW", "BatchWindow", "LoopLoad", "loop_load"]

# Clients of SSE (dashboards, chats, progress bars) do not notice a quarter of a
# second, and the window only applies while events flow faster than the loop writes.
DEFAULT_WINDOW: Final = 0.25

# Events "flow" when the next one is queued within this part of the window after the
# last write ended; at a few events per second they come later, and go out at once.
_FLOWING: Final = 0.5

# A stream woken by a publish that runs later than this part of the window (5 ms by
# default) found the loop busy with a few ms of other work per round.
_LATE: Final = 0.02

# The loop is saturated once it has run streams late without a break for this part of
# the window (12.5 ms by default): a fan-out or a round of writes that long, not a
# one-off pause (a full garbage collection, a burst of new connections) that it soon
# catches up on. A delivery on time, or none for _LATE, breaks the streak.
_SATURATED: Final = 0.05


@dataclass(frozen=True, slots=True)
class BatchWindow:
    """When a stream writes its queued frames: at once, or at the end of its window.

    Args:
        seconds: The window; 0 writes every batch as soon as it is queued.
    """

    seconds: float = DEFAULT_WINDOW

    def __post_init__(self) -> None:
        if not self.seconds >= 0:
            raise ValueError(f"the batching window must be >= 0 seconds, got {self.seconds}")

    def hold_until(
        self, *, last_write_end: float, queued_at: float, now: float, is_loop_busy: bool
    ) -> float | None:
        """When to write the frames now queued.

        Args:
            last_write_end: When the stream's previous write returned.
            queued_at: When the oldest frame now queued was queued.
            now: The current time (all three on one clock, e.g. ``trio.current_time()``).
            is_loop_busy: What :meth:`LoopLoad.is_busy` says now.

        Returns:
            ``None`` to write now, else the time until which to let more frames queue
            (the stream still writes earlier if its queue fills halfway or closes).
        """
        window = self.seconds
        if window <= 0 or not is_loop_busy:
            return None
        if queued_at - last_write_end >= _FLOWING * window:
            # A quiet spell came first: a low rate, where batching only adds latency.
            return None
        hold = last_write_end + window
        return hold if hold > now else None


class LoopLoad:
    """Whether the event loop of this Trio run is saturated, as streams see it.

    Streams report how late they ran after a publish woke them, or how far into its
    fan-out a publish wrote to them directly. Late deliveries without a break for a
    twentieth of the window mark the loop busy for the window that follows.
    """

    __slots__ = ("_busy_until", "_last_late", "_late_since")

    def __init__(self) -> None:
        self._busy_until = -math.inf
        self._late_since = -math.inf  # the start of the current streak of late wake-ups
        self._last_late = -math.inf

    def note_wake_delay(self, delay: float, *, now: float, window: BatchWindow) -> None:
        """A delivery came ``delay`` seconds after its publish; ``now`` is the time."""
        seconds = window.seconds
        if seconds <= 0:
            return
        if delay < _LATE * seconds:
            self._late_since = -math.inf  # on time: the streak is broken
            return
        if now - self._last_late > _LATE * seconds:
            self._late_since = now  # a new streak
        self._last_late = now
        if now - self._late_since >= _SATURATED * seconds:
            self._busy_until = max(self._busy_until, now + seconds)

    def is_busy(self, now: float) -> bool:
        return now < self._busy_until


# Per Trio run, not per process: state shared between runs would leak across them
# (tests start many runs), and an object per app would have to be threaded through
# every event_stream() call.
_LOAD: Final = trio.lowlevel.RunVar[LoopLoad]("trio_sse_loop_load")


def loop_load() -> LoopLoad:
    """The :class:`LoopLoad` of the current Trio run."""
    try:
        return _LOAD.get()
    except LookupError:
        load = LoopLoad()
        _LOAD.set(load)
        return load
