"""The memory broker's history: bounded in events, bytes and age, per topic and in all.

Also: idle topics leave, so ``max_topics`` is never filled for good; and a reconnect
with an id from before a restart gets the events published since, after its reset.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing

from tests.test_cli import refused_serve, serve_process
from tests.wire import TIMEOUT, SSEConnection, running_server
from trio_sse import BrokerUnavailableError, MemoryBroker, ServerSentEvent, Subscription
from trio_sse.broker import RESET_EVENT_TYPE


def ids_of(frames: list[bytes]) -> list[str]:
    return [line[4:] for f in frames for line in f.decode().split("\n") if line.startswith("id: ")]


def types_of(frames: list[bytes]) -> list[str]:
    return [
        line[7:] for f in frames for line in f.decode().split("\n") if line.startswith("event: ")
    ]


def drain(subscription: Subscription) -> list[bytes]:
    try:
        return subscription.receive_batch_nowait(100_000)
    except trio.WouldBlock:
        return []


async def replay_ids(broker: MemoryBroker, topic: str, last_event_id: str) -> list[bytes]:
    async with broker.subscribe(topic, last_event_id=last_event_id) as sub:
        return drain(sub)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")  # pragma: no cover


# Bytes ------------------------------------------------------------------------------


async def test_history_is_bounded_in_bytes_per_topic() -> None:
    broker = MemoryBroker(history=1000, history_bytes=100_000)
    payload = "x" * 10_000
    ids = [await broker.publish("t", ServerSentEvent(payload)) for _ in range(50)]
    retained = broker.statistics().retained_bytes
    assert retained is not None
    assert retained <= 100_000
    # Fewer than 10 frames of 10 KB fit (each also costs a fixed overhead); the
    # newest ones are those kept.
    frames = await replay_ids(broker, "t", ids[0])
    assert types_of(frames)[:1] == [RESET_EVENT_TYPE]
    kept = ids_of(frames[1:])
    assert 5 <= len(kept) < 10
    assert kept == ids[-len(kept) :]
    # The last id forgotten is placed exactly: what follows it is all retained.
    assert ids_of(await replay_ids(broker, "t", ids[-len(kept) - 1])) == kept


async def test_history_is_bounded_in_total_bytes_oldest_first() -> None:
    broker = MemoryBroker(history_bytes=1_000_000, history_total_bytes=250_000)
    payload = "y" * 10_000
    first = [await broker.publish(f"t{i}", ServerSentEvent(payload)) for i in range(10)]
    second = [await broker.publish(f"t{i}", ServerSentEvent(payload)) for i in range(10)]
    third = [await broker.publish(f"t{i}", ServerSentEvent(payload)) for i in range(10)]
    retained = broker.statistics().retained_bytes
    assert retained is not None
    assert retained <= 250_000
    # Every topic keeps its newest events...
    for i in range(10):
        assert ids_of(await replay_ids(broker, f"t{i}", second[i])) == [third[i]]
    # ...and the events forgotten were the oldest, whatever their topic: the first
    # events of the first topics published to. (Resuming from just before a topic's
    # first event replays it if it is retained, or gets a reset if it is not.)
    lost = []
    for i in range(10):
        frames = await replay_ids(broker, f"t{i}", str(int(first[i]) - 1))
        if types_of(frames)[:1] == [RESET_EVENT_TYPE]:
            lost.append(i)
        else:
            assert ids_of(frames) == [first[i], second[i], third[i]]
    assert lost == list(range(len(lost)))
    assert 1 <= len(lost) <= 9


async def test_an_event_larger_than_the_topic_bound_is_delivered_not_retained() -> None:
    broker = MemoryBroker(history_bytes=1_000)
    async with broker.subscribe("t") as sub:
        await broker.publish("t", ServerSentEvent("z" * 5_000))
        assert len(drain(sub)) == 1
    assert broker.statistics().retained_bytes == 0


@pytest.mark.parametrize(
    "kwargs",
    [{"history_bytes": -1}, {"history_total_bytes": -1}, {"history_ttl": 0}, {"history_ttl": -1}],
)
def test_bad_history_bounds_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="history_"):
        MemoryBroker(**kwargs)  # type: ignore[arg-type]


# Age --------------------------------------------------------------------------------


async def test_history_expires_after_its_ttl(autojump_clock: trio.testing.MockClock) -> None:
    broker = MemoryBroker(history_ttl=60)
    old = await broker.publish("t", ServerSentEvent("old"))
    await trio.sleep(30)
    mid = await broker.publish("t", ServerSentEvent("mid"))
    await trio.sleep(31)  # "old" is 61 s old, "mid" 31 s
    frames = await replay_ids(broker, "t", str(int(old) - 1))
    assert types_of(frames)[:1] == [RESET_EVENT_TYPE]
    assert ids_of(frames[1:]) == [mid]
    assert ids_of(await replay_ids(broker, "t", old)) == [mid]
    assert await replay_ids(broker, "t", mid) == []
    await trio.sleep(30)  # both expired: the topic is idle and leaves
    stats = broker.statistics()
    assert (stats.retained_bytes, stats.topics) == (0, 0)


async def test_a_topic_with_subscribers_stays_when_its_history_expires(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = MemoryBroker(history_ttl=10)
    async with broker.subscribe("t") as sub:
        last = await broker.publish("t", ServerSentEvent("a"))
        drain(sub)
        await trio.sleep(11)
        assert broker.statistics().topics == 1
        # Its last event expired, but nothing after it was missed: a reconnect with
        # that id is placed exactly, without a reset.
        assert await replay_ids(broker, "t", last) == []


# Topics -----------------------------------------------------------------------------


async def test_expired_topics_free_their_slot(autojump_clock: trio.testing.MockClock) -> None:
    broker = MemoryBroker(max_topics=2, history_ttl=60)
    async with broker.subscribe("a"), broker.subscribe("b"):
        await broker.publish("a", ServerSentEvent("x"))
        await broker.publish("b", ServerSentEvent("x"))
        with pytest.raises(BrokerUnavailableError, match="max_topics"):
            await broker.publish("c", ServerSentEvent("x"))
    await trio.sleep(61)
    await broker.publish("c", ServerSentEvent("x"))
    assert broker.statistics().topics == 1


async def test_a_new_topic_at_the_cap_evicts_the_least_recently_published_unwatched_one() -> None:
    broker = MemoryBroker(max_topics=3)
    for topic in ("a", "b", "c"):
        await broker.publish(topic, ServerSentEvent("x"))
    a_id = await broker.publish("a", ServerSentEvent("again"))  # now "b" is the stalest
    async with broker.subscribe("c"):
        await broker.publish("d", ServerSentEvent("x"))
        assert broker.statistics().topics == 3
        assert await replay_ids(broker, "a", a_id) == []  # "a" kept its history
        frames = await replay_ids(broker, "b", a_id)
        assert types_of(frames) == [RESET_EVENT_TYPE]  # "b" was evicted (and is gone again)
        # Watched topics are never evicted: with all three watched, a fourth is refused.
        async with broker.subscribe("a"), broker.subscribe("d"):
            with pytest.raises(BrokerUnavailableError, match="max_topics"):
                await broker.publish("e", ServerSentEvent("x"))


async def test_many_topics_cost_no_more_than_the_cap() -> None:
    broker = MemoryBroker(max_topics=100)
    for i in range(1_000):
        await broker.publish(f"t{i}", ServerSentEvent("x"))
    assert broker.statistics().topics == 100


# Restart ----------------------------------------------------------------------------


async def test_a_reconnect_from_before_a_restart_gets_a_reset_then_the_new_events() -> None:
    before = MemoryBroker()
    stale = [await before.publish("t", ServerSentEvent(str(i))) for i in range(3)][-1]
    await before.aclose()
    after = MemoryBroker()  # the restart
    fresh = await after.publish("t", ServerSentEvent("X"))
    async with after.subscribe("t", last_event_id=stale) as sub:
        frames = drain(sub)
        live = await after.publish("t", ServerSentEvent("live"))
        frames += drain(sub)
    notice, *rest = frames
    assert types_of([notice]) == [RESET_EVENT_TYPE]
    assert ids_of(rest) == [fresh, live]
    # The notice's id resumes just before the replayed events: reconnecting with it
    # brings them again, without a second notice.
    (resume,) = ids_of([notice])
    assert ids_of(await replay_ids(after, "t", resume)) == [fresh, live]


@pytest.mark.parametrize("asked", ["nope", "007", "-5", "99999999999999999999", ""])
async def test_ids_the_broker_cannot_have_issued_get_a_reset_to_the_newest(asked: str) -> None:
    broker = MemoryBroker()
    ids = [await broker.publish("t", ServerSentEvent(str(i))) for i in range(3)]
    frames = await replay_ids(broker, "t", asked)
    assert types_of(frames) == [RESET_EVENT_TYPE]
    assert ids_of(frames) == ids[-1:]


async def test_a_restart_over_http_delivers_what_was_published_before_the_reconnect() -> None:
    async with running_server() as server:
        stale = await server.publish("room", data="before")
    async with running_server() as server:  # a new process's broker
        fresh = await server.publish("room", data="after the restart")
        conn = await SSEConnection.open(server, "/events/room", headers=[("Last-Event-ID", stale)])
        try:
            notice, message = await conn.read_events(2)
        finally:
            await conn.close_fin()
    assert notice.type == RESET_EVENT_TYPE
    assert (message.data, message.last_event_id) == ("after the restart", fresh)


# Through a real server ----------------------------------------------------------------


@pytest.mark.slow
async def test_serve_bounds_the_memory_of_4_topics_of_1000_events_of_64_kib() -> None:
    payload = "p" * (64 * 1024 - 64)  # the largest body the server takes, about
    async with (
        serve_process() as (process, (host, port)),
        httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=TIMEOUT) as http,
    ):
        baseline = rss_bytes(process.pid)

        async def publisher(topic: str) -> None:
            body = json.dumps({"data": payload}).encode()
            headers = {"Content-Type": "application/json"}
            for _ in range(1000):
                response = await http.post(f"/events/{topic}", content=body, headers=headers)
                assert response.status_code == 202, response.text

        with trio.fail_after(240):
            async with trio.open_nursery() as nursery:
                for i in range(4):
                    nursery.start_soon(publisher, f"big{i}")
        growth = rss_bytes(process.pid) - baseline
        stats = (await http.get("/stats")).json()
    # Before: +279 MiB of RSS. Now each topic keeps about 4 MiB (the default).
    assert stats["published"] == 4000
    assert stats["retained_bytes"] <= 4 * 4 * 1024 * 1024
    assert growth < 64 * 1024 * 1024, f"RSS grew by {growth / 2**20:.0f} MiB"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--history-bytes", "-1"], "must be >= 0"),
        (["--history-bytes", "lots"], "expected a number"),
        (["--history-ttl", "0"], "must be > 0"),
        (["--history-ttl", "nan"], "must be >= 0"),
        (["--history-total-bytes", "-5"], "must be >= 0"),
    ],
)
def test_bad_history_flags_exit_2_with_a_message(
    args: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, stderr = refused_serve(args, monkeypatch, capsys)
    assert code == 2
    assert message in stderr
    assert args[0] in stderr


async def test_history_flags_reach_the_broker() -> None:
    args = ["--history-bytes", "30000", "--history-ttl", "3600", "--history-total-bytes", "1000000"]
    async with (
        serve_process(*args) as (_, (host, port)),
        httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=TIMEOUT) as http,
    ):
        for _ in range(10):
            response = await http.post("/events/t", json={"data": "q" * 10_000})
            assert response.status_code == 202
        stats = (await http.get("/stats")).json()
        assert 0 < stats["retained_bytes"] <= 30_000
        metrics = (await http.get("/metrics")).text
        assert "trio_sse_history_retained_bytes " in metrics
