"""Losses judged in the server's order of the events (issue 16, item 7). Pure code.

A saturated run reported "lost" events on connections that were merely behind: two
POSTs in flight at once were numbered by the server in the other order (seq 9 got
the id after seq 11's), the stream delivered 10, 11 and had not yet delivered 9 when
the run closed, and seq order called 9 lost. The figures in these tests are those of
the run that showed it (benchmarks/loadtest_serve.py, 10,000 connections).
"""

from __future__ import annotations

import pytest

from trio_sse.loadtest._ledger import Ledger
from trio_sse.loadtest._order import ServerOrder

# Seqs 1-11 and the memory broker's ids the server gave them, as in that run:
# 9, 10 and 11 were posted together and numbered 608, 606, 607.
IDS = {seq: str(1796070392464597 + seq) for seq in range(1, 9)}
IDS |= {9: "1796070392464608", 10: "1796070392464606", 11: "1796070392464607"}


def ledger_that_received(seqs: list[int], floor: int = 0) -> Ledger:
    ledger = Ledger()
    ledger.start_stream(floor, is_resume=False)
    for seq in seqs:
        ledger.receive(seq)
    return ledger


def test_an_event_the_server_placed_later_is_undelivered_not_lost() -> None:
    order = ServerOrder.from_ids(IDS)
    assert order is not None
    ledger = ledger_that_received([1, 2, 3, 4, 5, 6, 7, 8, 10, 11])
    # By seq, 9 was overtaken by 10 and 11: "lost" (what the old judgement said).
    assert ledger.judge(11, order=None) == ([9], 0, 1)
    # In the server's order (..., 606, 607, 608) it simply had not arrived yet.
    assert ledger.judge(11, order=order) == ([], 1, 0)


def test_an_event_overtaken_in_the_servers_order_is_lost() -> None:
    order = ServerOrder.from_ids(IDS)
    assert order is not None
    # 9 (id ...608) arrived, so 10 and 11 (ids ...606, ...607) were skipped: lost,
    # though seq order would call them late.
    ledger = ledger_that_received([1, 2, 3, 4, 5, 6, 7, 8, 9])
    assert ledger.judge(11, order=None) == ([], 2, 0)
    assert ledger.judge(11, order=order) == ([10, 11], 0, 1)


def test_failed_publishes_and_unanswered_ones_are_never_lost() -> None:
    ids = {1: "1", 2: "2", 4: "4"}  # 3 failed and nobody got it; 5 had no answer yet
    order = ServerOrder.from_ids(ids)
    assert order is not None
    ledger = ledger_that_received([1, 4])
    assert ledger.judge(5, failed={3}, order=order) == ([2], 1, 1)


def test_redis_stream_ids_are_ordered_as_pairs_not_as_text() -> None:
    order = ServerOrder.from_ids({1: "1700000000000-9", 2: "1700000000000-10", 3: "999-0"})
    assert order is not None
    assert [order.rank(seq) for seq in (3, 1, 2)] == [0, 1, 2]


@pytest.mark.parametrize("foreign", ["a1b2-c3", "", "1-2-3", "x"])
def test_ids_that_say_no_order_leave_the_judgement_in_seq_order(foreign: str) -> None:
    assert ServerOrder.from_ids({1: "1", 2: foreign}) is None


def test_the_latest_rank_of_a_range_matches_a_plain_scan() -> None:
    # Ranks shuffled locally, as concurrent publishes shuffle them, over many blocks.
    seqs = list(range(1, 1000))
    shuffled = [seqs[i + 1] if i % 7 == 0 and i + 1 < len(seqs) else s for i, s in enumerate(seqs)]
    order = ServerOrder({seq: rank for rank, seq in enumerate(dict.fromkeys(shuffled + seqs))})
    for low, high in [(1, 999), (3, 70), (64, 127), (65, 65), (500, 400), (0, 2000)]:
        ranks = [order.rank(s) for s in range(max(low, 0), min(high, 999) + 1)]
        expected = max((r for r in ranks if r is not None), default=-1)
        assert order.latest(low, high) == expected, (low, high)
