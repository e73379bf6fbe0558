"""The soak test: 20,000 connect/disconnect cycles leave nothing behind (see tests/soak.py).

The 100,000-cycle variant runs as ``nox -s soak``, not in CI.
"""

from __future__ import annotations

import pytest

from tests.soak import KINDS, soak

CYCLES = 20_000
RSS_BOUND = 2 * 1024 * 1024


@pytest.mark.slow
async def test_20000_cycles_leave_no_subscriber_no_task_and_no_memory_behind() -> None:
    result = await soak(CYCLES)
    assert sum(result.cycles.values()) == CYCLES
    assert set(result.cycles) == set(KINDS)
    assert result.subscribers_after == 0
    assert result.tasks_back_to_baseline
    assert result.rss_growth < RSS_BOUND, f"RSS grew {result.rss_growth / 1024:.0f} KiB"
