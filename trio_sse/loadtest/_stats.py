"""Latency histograms: fixed memory whatever the number of samples.

10,000 connections at a few events per second make millions of latency samples; a
list of them all would cost more memory than the connections. Samples are counted in
logarithmic buckets instead, each 1 % wider than the last, so a percentile is known
to within 1 % and a histogram holds at most a few thousand integers.

Pure code: values in, percentiles out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Final

from ._schema import HistogramData, HistogramSummary

__all__ = ["Histogram", "percentile_summary"]

# Bucket i holds values in [GROWTH**i, GROWTH**(i+1)) nanoseconds: 1 % resolution.
_GROWTH: Final = 1.01
_SCALE: Final = 1 / math.log(_GROWTH)
# Anything under a microsecond is below what a socket round trip can show; it shares
# the first bucket rather than spreading over hundreds of empty ones.
_FLOOR_NS: Final = 1_000


class Histogram:
    """Counts durations (seconds) in 1 %-wide buckets; exact count, min, max and mean."""

    __slots__ = ("_buckets", "count", "max", "min", "total")

    def __init__(self) -> None:
        self._buckets: dict[int, int] = {}
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = 0.0

    def record(self, seconds: float) -> None:
        """Count one sample; negative ones (clock steps) count as zero."""
        seconds = max(seconds, 0.0)
        index = int(math.log(max(seconds * 1e9, _FLOOR_NS)) * _SCALE)
        self._buckets[index] = self._buckets.get(index, 0) + 1
        self.count += 1
        self.total += seconds
        self.min = min(self.min, seconds)
        self.max = max(self.max, seconds)

    def merge(self, other: Histogram) -> None:
        """Add ``other``'s samples to this one."""
        for index, count in other._buckets.items():
            self._buckets[index] = self._buckets.get(index, 0) + count
        self.count += other.count
        self.total += other.total
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    @property
    def mean(self) -> float:
        """The exact mean (0 when empty)."""
        return self.total / self.count if self.count else 0.0

    def percentile(self, p: float) -> float:
        """The ``p``-th percentile (0 < p <= 100), within 1 %; 0 when empty.

        The value reported for a bucket is its geometric middle, clamped to the exact
        min and max; p100 is the true maximum.
        """
        if not 0 < p <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {p}")
        if not self.count:
            return 0.0
        rank = math.ceil(self.count * p / 100)
        if rank >= self.count:
            return self.max
        seen = 0
        for index in sorted(self._buckets):
            seen += self._buckets[index]
            if seen >= rank:
                middle = float(_GROWTH ** (index + 0.5)) / 1e9
                return min(max(middle, self.min), self.max)
        return self.max  # pragma: no cover - rank <= count always stops the loop

    def summary(self) -> HistogramSummary:
        """``count``, ``p50``, ``p90``, ``p99``, ``max`` and ``mean``, in seconds."""
        return percentile_summary(self)

    @classmethod
    def of(cls, samples: Iterable[float]) -> Histogram:
        """A histogram of ``samples``."""
        histogram = cls()
        for sample in samples:
            histogram.record(sample)
        return histogram

    def to_data(self) -> HistogramData:
        """Every bucket, as JSON: a histogram rebuilt from it merges exactly."""
        return {
            "count": self.count,
            "total": self.total,
            "min": self.min if self.count else None,
            "max": self.max,
            "buckets": {str(index): count for index, count in self._buckets.items()},
        }

    @classmethod
    def from_data(cls, data: HistogramData) -> Histogram:
        """The histogram :meth:`to_data` described.

        Raises:
            ValueError: ``data`` is not such a description.
        """
        histogram = cls()
        try:
            histogram._buckets = {int(i): int(c) for i, c in data["buckets"].items()}
            histogram.count = int(data["count"])
            histogram.total = float(data["total"])
            low = data["min"]
            histogram.min = math.inf if low is None else float(low)
            histogram.max = float(data["max"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not a histogram: {exc}") from None
        if sum(histogram._buckets.values()) != histogram.count:
            raise ValueError("not a histogram: its buckets do not add up to its count")
        return histogram

    @property
    def buckets(self) -> Mapping[int, int]:
        """Bucket index to count (read-only view, for tests and merging)."""
        return self._buckets


def percentile_summary(histogram: Histogram) -> HistogramSummary:
    """The figures every report shows for a histogram (seconds; ``count`` is a count)."""
    return {
        "count": histogram.count,
        "p50": histogram.percentile(50),
        "p90": histogram.percentile(90),
        "p99": histogram.percentile(99),
        "max": histogram.max,
        "mean": histogram.mean,
    }
