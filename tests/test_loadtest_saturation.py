"""A verdict to trust when the server is saturated: publishes the load tester gave up on,
publishes the server numbered out of order, and the detail that explains a loss.

Each case makes, deterministically and at a small scale, what a saturated server does
now and then: answer a publish after the load tester stopped waiting (it made the
event all the same), or take concurrent POSTs in another order than they were numbered.
A real Hypercorn on a loopback port, a few dozen connections, a second or two.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.test_loadtest_generic import SHORT, _loadtest, _report_of
from tests.wire import running_server
from trio_sse import MemoryBroker, ServerSentEvent
from trio_sse.loadtest import (
    SCHEMA_VERSION,
    DropMethod,
    LoadTestOptions,
    Report,
    build_report,
    format_summary,
    run_loadtest,
)
from trio_sse.loadtest._ledger import Ledger, StreamStart
from trio_sse.loadtest._publisher import answered_id

RUN_TIMEOUT = 60.0
# The load tester's publish timeout in these runs, and how late the slow publish is:
# a second, so that no other publish passes it on a loaded machine.
PUBLISH_TIMEOUT = 1.0
LATE = 2.0
SLOW_PUBLISH = 3  # the publish (in the server's order of arrival) that is slow


class _SlowPublish(MemoryBroker):
    """A broker whose publish number ``SLOW_PUBLISH`` is slow, in one of three ways.

    * ``answer_late``: made at once, answered ``LATE`` s later;
    * ``made_late``: made ``LATE`` s late, so that later POSTs overtake it (numbered
      first); made even though the load tester has hung up, as a server that has
      started a publish finishes it;
    * ``half``: as ``made_late``, and delivered to every other subscriber only (the
      others miss it: a server that loses an event).

    Attributes:
        ids: The id of each event made, by the seq in its data.
        slow_seq: The slow publish's seq.
    """

    def __init__(self, mode: str, late: float = LATE) -> None:
        super().__init__()
        self._mode = mode
        self._late = late
        self._count = 0
        self.ids: dict[int, str] = {}
        self.slow_seq = 0

    async def publish(
        self, topic: str, event: ServerSentEvent, *, idempotency_key: str | None = None
    ) -> str:
        self._count += 1
        if self._count != SLOW_PUBLISH:
            return self._note(event, await super().publish(topic, event))
        self.slow_seq = int(json.loads(event.data)["seq"])
        # Shielded: the load tester hangs up at its timeout, and the handler is
        # cancelled then; the server has committed to this publish already.
        with trio.CancelScope(shield=True):
            return await self._slow(topic, event)
        raise AssertionError("unreachable: a shielded scope catches nothing")  # for mypy

    async def _slow(self, topic: str, event: ServerSentEvent) -> str:
        if self._mode == "answer_late":
            event_id = self._note(event, await super().publish(topic, event))
            await trio.sleep(self._late)
            return event_id
        await trio.sleep(self._late)
        if self._mode == "made_late":
            return self._note(event, await super().publish(topic, event))
        subscribers = self._fanout._by_topic[topic]
        skipped = list(subscribers)[::2]
        for subscription in skipped:
            del subscribers[subscription]
        try:
            return self._note(event, await super().publish(topic, event))
        finally:
            for subscription in skipped:
                subscribers[subscription] = None

    def _note(self, event: ServerSentEvent, event_id: str) -> str:
        self.ids[int(json.loads(event.data)["seq"])] = event_id
        return event_id


async def _run(broker: _SlowPublish, **overrides: Any) -> Report:
    options: dict[str, Any] = {
        "connections": 20,
        "duration": 3.0,  # the slow publish (LATE) is made within it
        "publish_rate": 8.0,
        "publish_timeout": PUBLISH_TIMEOUT,
        "drain_timeout": 3.0,
        "clean_timeout": 10.0,
    }
    options.update(overrides)
    async with running_server(broker=broker) as server:
        with trio.fail_after(RUN_TIMEOUT):
            record = await run_loadtest(LoadTestOptions(f"{server.url}/events/sat", **options))
    return build_report(record)


async def test_a_timed_out_publish_the_server_made_is_reported_with_each_seqs_id() -> None:
    broker = _SlowPublish("answer_late")
    report = await _run(broker)
    events = report["events"]
    assert report["schema_version"] == SCHEMA_VERSION == 3
    assert events["publish_failed"] == 1
    assert report["errors"]["by_kind"] == {"publish_timeout": 1}
    # Before: nothing said the failed publish had reached every subscriber all the
    # same (delivered 20 x published while only published - 1 were acknowledged).
    assert events["publish_failed_delivered"] == 1
    assert events["delivered"] == 20 * events["published"]
    assert (events["lost"], events["undelivered"], events["duplicated"]) == (0, 0, 0)
    rows = {row["seq"]: row for row in report["publishes"]}
    assert sorted(rows) == list(range(1, events["published"] + 1))
    slow = broker.slow_seq
    assert rows[slow]["outcome"] == "timeout"
    assert rows[slow]["error"] == "publish_timeout"
    assert rows[slow]["id"] is None  # no answer: no id
    assert rows[slow]["took"] >= PUBLISH_TIMEOUT
    assert rows[slow]["received_by"] == 20
    # Every other seq carries the id the server gave it, from the publish's answer.
    assert {seq: row["id"] for seq, row in rows.items() if seq != slow} == {
        seq: event_id for seq, event_id in broker.ids.items() if seq != slow
    }
    assert all(row["outcome"] == "ok" for seq, row in rows.items() if seq != slow)
    assert "1 of them delivered all the same" in format_summary(report)


@pytest.mark.slow
async def test_a_loss_of_an_event_whose_publish_timed_out_is_counted_and_explained() -> None:
    broker = _SlowPublish("half")
    report = await _run(broker)
    events = report["events"]
    slow = broker.slow_seq
    assert events["publish_failed"] == 1
    assert events["publish_failed_delivered"] == 1
    # Before: lost 0, gaps 0, exit 0: the event was excused as never published,
    # though the server made it and 10 of the 20 subscribers never got it.
    assert events["lost"] == 10
    assert report["churn"]["gaps"] == 10
    assert events["per_connection"]["with_loss"] == 10
    lossy = [row for row in report["per_connection"] if row["lost"]]
    assert all(row["lost_seqs"] == [slow] for row in lossy)
    # Each lossy subscriber's floor was below the event, on a stream that never resumed.
    assert all(row["floor"] is not None and row["floor"] < slow for row in lossy)
    assert all(row["streams"] and row["streams"][0]["last_event_id"] == "" for row in lossy)
    row = next(row for row in report["publishes"] if row["seq"] == slow)
    assert (row["outcome"], row["received_by"]) == ("timeout", 10)
    # The server made it after the later seqs: its id is above theirs.
    assert int(broker.ids[slow]) > int(broker.ids[slow + 1])


@pytest.mark.slow
async def test_posts_the_server_numbers_out_of_seq_order_are_not_counted_lost() -> None:
    # Slow but answered in time: later POSTs (other publish workers) overtake it.
    broker = _SlowPublish("made_late", late=0.3)
    report = await _run(
        broker,
        publish_timeout=5.0,
        publish_rate=20.0,
        connections=40,
        churn=30.0,
        drop=tuple(DropMethod),
        stall_for=0.5,
    )
    events = report["events"]
    slow = broker.slow_seq
    assert events["publish_failed"] == 0
    assert int(broker.ids[slow]) > int(broker.ids[slow + 1])  # numbered out of order
    assert events["id_inversions"] >= 1
    assert sum(report["churn"]["drops"].values()) >= 10
    assert (events["lost"], events["undelivered"], events["duplicated"]) == (0, 0, 0)
    assert report["phases"]["is_drained"]
    rows = {row["seq"]: row for row in report["publishes"]}
    assert rows[slow]["id"] == broker.ids[slow]


# -- pure parts ---------------------------------------------------------------------


def test_answered_id_reads_the_id_of_a_json_answer_or_nothing() -> None:
    assert answered_id(b'{"id": "1712"}') == "1712"
    assert answered_id(b'{"id": 42}') == "42"
    assert answered_id(b'{"id": true}') is None
    assert answered_id(b'{"ok": 1}') is None
    assert answered_id(b"[1]") is None
    assert answered_id(b"accepted") is None
    assert answered_id(b"") is None
    assert answered_id(b'{"id": "' + b"9" * 500 + b'"}') == "9" * 128


def test_ledger_lists_lost_seqs_and_keeps_its_last_stream_starts() -> None:
    ledger = Ledger()
    ledger.start_stream(2, is_resume=False)
    for seq in (3, 5, 6, 9):
        ledger.receive(seq)
    assert ledger.floor == 2
    assert ledger.lost_seqs() == [4, 7, 8]
    assert ledger.lost_seqs(failed={7}) == [4, 8]
    assert ledger.lost_seqs(limit=2) == [4, 7]
    for n in range(20):
        ledger.start_stream(10 + n, is_resume=True, last_event_id=f"id-{n}")
    assert len(ledger.streams) == 8
    assert ledger.streams[-1] == StreamStart(29, "id-19")
    assert ledger.floor == 2  # resumes keep the floor


@pytest.mark.slow
async def test_cli_takes_a_publish_timeout_and_refuses_a_bad_one(tmp_path: Path) -> None:
    code, _, err = await _loadtest("http://127.0.0.1:1/events/a", "--publish-timeout", "0")
    assert code == 2
    assert "--publish-timeout: must be > 0, got 0" in err
    async with running_server() as server:
        code, out, report = await _report_of(
            f"{server.url}/events/t", *SHORT, "--publish-timeout", "2.5", tmp_path=tmp_path
        )
    assert code == 0, out
    options, publishes = report["options"], report["publishes"]
    assert isinstance(options, dict)
    assert isinstance(publishes, list)
    assert options["publish_timeout"] == 2.5
    assert publishes
    assert all(row["outcome"] == "ok" and row["id"] for row in publishes)
