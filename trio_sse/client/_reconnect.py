"""How long an event source waits before it reconnects: a pure function of its state.

The rules, all in :meth:`ReconnectPolicy.delay`:

* Never sooner than the reconnection time (the server's ``retry``, else 3 s): "wait a
  delay equal to the reconnection time of the event source" (WHATWG HTML 9.2.3).
  Jitter only ever adds to it.
* After a stream that was open ends or breaks (no failed attempt since): the
  reconnection time plus a jitter of at most 10% of it, and at most 1 s. Spreads a
  crowd of clients that a server restart disconnected at the same instant, without
  making any of them wait much longer than the server asked.
* After ``n`` failed attempts in a row (refused, reset or silent before the response
  headers): exponential back-off with "equal jitter", so clients do not storm a
  server that is recovering. The ceiling is ``unit * 2**n`` capped at ``max_delay``,
  where ``unit`` is the reconnection time but at least ``min_backoff``; the delay is
  drawn uniformly from the upper half of ``[0, ceiling]``, then raised to the
  reconnection time if below it. A reconnection time above ``max_delay`` wins: the
  server asked for it.

Pure code: no clock, no I/O; the random source is injected so tests can pin it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "DEFAULT_MAX_DELAY",
    "DEFAULT_MIN_BACKOFF",
    "FIRST_JITTER_CAP",
    "FIRST_JITTER_RATIO",
    "ReconnectPolicy",
]

# Long enough that a fleet of clients backs off a struggling server by an order of
# magnitude over the 3 s default, short enough that users see recovery within a minute.
DEFAULT_MAX_DELAY: Final = 30.0
# A server may send "retry: 0"; back-off must still grow from something, or failing
# clients would reconnect in a tight loop.
DEFAULT_MIN_BACKOFF: Final = 1.0
# The first reconnect after an open stream adds at most this share of the
# reconnection time: spreads a thundering herd while staying close to what was asked.
FIRST_JITTER_RATIO: Final = 0.1
# ... and at most this many seconds, so a long server-set retry is not stretched much.
FIRST_JITTER_CAP: Final = 1.0
# 2**64 times any positive unit exceeds every sane max_delay; a larger exponent could
# only overflow the float arithmetic.
_MAX_EXPONENT: Final = 64


def _check_delay(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, not {value!r}")
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be finite and >= 0 seconds, got {value!r}")


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """The reconnect delay rules of an event source (see the module docs).

    Args:
        max_delay: Cap, in seconds, on the back-off ceiling after failed attempts.
        min_backoff: The least unit, in seconds, the back-off grows from.
        random: Returns floats in ``[0, 1)``; ``random.random`` by default. Inject a
            seeded ``random.Random(...).random`` or a stub in tests.

    Raises:
        ValueError: A delay is negative, infinite or NaN.
        TypeError: A delay is not a number.
    """

    max_delay: float = DEFAULT_MAX_DELAY
    min_backoff: float = DEFAULT_MIN_BACKOFF
    # Jitter needs no unpredictability against an attacker, only spread.
    random: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_delay("max_delay", self.max_delay)
        _check_delay("min_backoff", self.min_backoff)

    def delay(self, retry: float, failures: int) -> float:
        """Return how many seconds to wait before the next connection attempt.

        Args:
            retry: The reconnection time, in seconds (the server's ``retry`` / 1000).
            failures: Failed attempts in a row since the last stream that opened (or
                since the start). 0 means the last attempt opened a stream.

        Returns:
            A delay of at least ``retry`` seconds.

        Raises:
            ValueError: ``retry`` or ``failures`` is negative (or ``retry`` not finite).
        """
        _check_delay("retry", retry)
        if failures < 0:
            raise ValueError(f"failures must be >= 0, got {failures}")
        if failures == 0:
            span = min(retry * FIRST_JITTER_RATIO, FIRST_JITTER_CAP)
            return retry + self.random() * span
        unit = max(retry, self.min_backoff)
        ceiling = max(retry, min(unit * 2.0 ** min(failures, _MAX_EXPONENT), self.max_delay))
        floor = max(retry, ceiling / 2)
        return floor + self.random() * (ceiling - floor)
