"""The server's order of the load tester's events, from the ids it gave them.

The load tester numbers its events (``seq``) in the order it hands them to its
publishers, but concurrent POSTs may be taken by the server in another order: seq 9
may get the id after seq 11's. A stream delivers events in the server's order, so a
subscriber that got seq 11 and not yet seq 9 has lost nothing; it is one event short,
like any subscriber the run ended on. Judged in seq order, that read as a loss (issue
16, item 7: the "lost" events of a saturated run were such events). So the final
judgement ranks events by their server ids, where the ids say an order: a decimal
integer (the memory broker's), or ``<ms>-<seq>`` (a Redis stream id's). Any other form
of id (a UUID) says none, and events are judged in seq order, as before.

Pure code.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Final

__all__ = ["ServerOrder"]

_ID: Final = re.compile(r"(\d{1,20})(?:-(\d{1,20}))?")
# Seqs per block of the range-maximum index: a query scans at most two partial
# blocks and one maximum per whole block between them.
_BLOCK: Final = 64


def _key(event_id: str) -> tuple[int, int] | None:
    match = _ID.fullmatch(event_id)
    if match is None:
        return None
    return int(match[1]), int(match[2] or 0)


class ServerOrder:
    """Each made event's place in the server's order, and the latest of a seq range."""

    __slots__ = ("_block_max", "_ranks")

    def __init__(self, ranks: dict[int, int]) -> None:
        size = max(ranks, default=0) + 1
        # -1: no rank (a publish that failed and that nobody received).
        self._ranks = [ranks.get(seq, -1) for seq in range(size)]
        self._block_max = [
            max(self._ranks[start : start + _BLOCK]) for start in range(0, size, _BLOCK)
        ]

    @classmethod
    def from_ids(cls, ids: Mapping[int, str]) -> ServerOrder | None:
        """The order the server ids of ``ids`` (seq -> id) say; ``None`` if they say none."""
        keys = {}
        for seq, event_id in ids.items():
            key = _key(event_id)
            if key is None:
                return None
            keys[seq] = key
        ordered = sorted(keys, key=keys.__getitem__)
        return cls({seq: rank for rank, seq in enumerate(ordered)})

    def rank(self, seq: int) -> int | None:
        """``seq``'s place in the server's order (0 first); ``None`` if unknown."""
        rank = self._ranks[seq] if 0 <= seq < len(self._ranks) else -1
        return rank if rank >= 0 else None

    def latest(self, low: int, high: int) -> int:
        """The highest rank of the seqs from ``low`` to ``high`` (inclusive); -1 if none."""
        low, high = max(low, 0), min(high, len(self._ranks) - 1)
        best = -1
        seq = low
        while seq <= high:
            if seq % _BLOCK == 0 and seq + _BLOCK - 1 <= high:
                best = max(best, self._block_max[seq // _BLOCK])
                seq += _BLOCK
            else:
                best = max(best, self._ranks[seq])
                seq += 1
        return best

    def latest_of(self, seqs: Iterable[int]) -> int:
        """The highest rank among ``seqs``; -1 if none has one."""
        return max((self._ranks[s] for s in seqs if 0 <= s < len(self._ranks)), default=-1)
