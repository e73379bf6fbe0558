"""The soak test: 20,000 connect/disconnect cycles leave nothing behind (see tests/soak.py).

The 100,000-cycle variant runs as ``nox -s soak``, not in CI.
"""

from __future__ import annotations

import os

import pytest

from tests.soak import (
    KINDS,
    MALLOC_GROWTH_LIMIT,
    RSS_GROWTH_LIMIT,
    blocks_growth_limit,
    can_measure_malloc,
    soak,
)

CYCLES = 20_000


@pytest.mark.slow
async def test_20000_cycles_leave_no_subscriber_no_task_and_no_memory_behind() -> None:
    if not can_measure_malloc():
        message = "the soak needs glibc's mallinfo2 to count the bytes malloc hands out"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    result = await soak(CYCLES)
    assert sum(result.cycles.values()) == CYCLES
    assert set(result.cycles) == set(KINDS)
    assert result.subscribers_after == 0
    assert result.tasks_back_to_baseline
    assert result.blocks_growth < blocks_growth_limit(CYCLES), result
    assert result.malloc_growth is not None
    assert result.malloc_growth < MALLOC_GROWTH_LIMIT, result
    assert result.rss_growth < RSS_GROWTH_LIMIT, f"RSS grew {result.rss_growth / 1024:.0f} KiB"
