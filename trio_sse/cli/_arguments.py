"""The argument types the commands share: numbers with a bound, durations, a port.

Each is an ``argparse`` ``type=``: it takes the text given and returns the value, or
raises :class:`argparse.ArgumentTypeError`, whose message argparse prints after the
option's name (``argument --history: must be >= 0, got -1``) before exiting 2.
"""

from __future__ import annotations

import argparse
import functools
import math

__all__ = [
    "at_least",
    "count",
    "finite_positive_seconds",
    "finite_seconds",
    "port",
    "positive_seconds",
    "seconds",
]


def at_least(minimum: float, kind: type[int] | type[float], text: str) -> float:
    """``text`` as a ``kind`` no less than ``minimum``."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= minimum:  # also rejects NaN
        raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text}")
    return value


def count(minimum: int) -> functools.partial[float]:
    """A type for a whole number no less than ``minimum``."""
    return functools.partial(at_least, minimum, int)


def seconds(minimum: float = 0.0) -> functools.partial[float]:
    """A type for a duration no less than ``minimum``; ``inf`` is allowed."""
    return functools.partial(at_least, minimum, float)


def positive_seconds(text: str) -> float:
    """A duration above 0; ``inf`` is allowed."""
    value = at_least(0.0, float, text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def finite_positive_seconds(text: str) -> float:
    """A duration above 0 and below ``inf``."""
    value = positive_seconds(text)
    if math.isinf(value):
        raise argparse.ArgumentTypeError("must be finite")
    return value


def finite_seconds(text: str) -> float:
    """A duration of 0 or more, below ``inf``."""
    value = at_least(0.0, float, text)
    if math.isinf(value):
        raise argparse.ArgumentTypeError("must be finite")
    return value


def port(text: str) -> int:
    """A TCP port, 0 to 65535 (0: the system picks a free one)."""
    number = int(at_least(0, int, text))
    if number > 65535:
        raise argparse.ArgumentTypeError(f"must be <= 65535, got {text}")
    return number
