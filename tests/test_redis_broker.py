"""RedisBroker behaviour the memory broker has no counterpart for, on a real redis-server.

Several brokers in one Trio run stand for several processes: each has its own
connections, readers and fan-out, and they share only Redis. (Real processes are in
test_redis_serve.py.)
"""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import coredis
import pytest
import trio
import trio.testing
from coredis.tokens import PureToken

from tests.redis_server import RedisServer, require_redis_server
from tests.test_broker_contract import ids_of, receive_ids
from tests.wire import TIMEOUT, count_tasks
from trio_sse import BrokerUnavailableError, InvalidEventError, ServerSentEvent
from trio_sse.redis import RedisBroker, open_redis_broker, parse_stream_id


@pytest.fixture
def prefix() -> str:
    return f"test:{uuid.uuid4().hex}:"


@asynccontextmanager
async def broker_on(server: RedisServer, prefix: str, **options: Any) -> AsyncIterator[RedisBroker]:
    async with open_redis_broker(server.url, key_prefix=prefix, **options) as broker:
        yield broker


async def redis_clients(server: RedisServer) -> int:
    async with coredis.Redis(port=server.port) as client:
        listed = await client.client_list()
        return len(listed) - 1  # not this one


async def xread_clients(server: RedisServer) -> int:
    """Connections whose last command was XREAD: the readers' own."""
    async with coredis.Redis(port=server.port) as client:
        return sum(1 for entry in await client.client_list() if entry["cmd"] == "xread")


def reader_tasks() -> int:
    """The broker's reader tasks (named ``trio_sse.redis:<topic>``) in this Trio run."""
    return count_tasks("trio_sse.redis:")


@pytest.mark.parametrize(("ci", "outcome"), [("true", "failed"), ("", "skipped")])
def test_a_missing_redis_server_fails_under_ci_and_skips_locally(
    monkeypatch: pytest.MonkeyPatch, ci: str, outcome: str
) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.setenv("CI", ci)
    expected = pytest.fail.Exception if outcome == "failed" else pytest.skip.Exception
    with pytest.raises(expected, match="redis-server is not installed"):
        require_redis_server()


def test_stream_ids_parse_as_pairs_of_integers() -> None:
    assert parse_stream_id("1732400000000-12") == (1732400000000, 12)
    assert parse_stream_id("9-0") < parse_stream_id("10-0")  # type: ignore[operator]
    for bad in ["", "12", "a-1", "1-", "-1", "1-2-3", " 1-2", "1-2\n", f"{2**64}-0"]:
        assert parse_stream_id(bad) is None


async def test_event_ids_are_redis_stream_ids(redis_server: RedisServer, prefix: str) -> None:
    async with broker_on(redis_server, prefix) as broker:
        event_id = await broker.publish("t", ServerSentEvent("x"))
    assert parse_stream_id(event_id) is not None
    async with coredis.Redis(port=redis_server.port) as client:
        (entry,) = await client.xrange(f"{prefix}{{t}}")
    assert entry.identifier == event_id.encode()
    # Besides the event's fields: when it was added (its age), and the id before it.
    assert entry.field_values.keys() == {b"data", b"t", b"p"}
    assert entry.field_values[b"data"] == b"x"
    assert entry.field_values[b"p"] == b"0-0"


async def test_an_explicit_id_must_be_a_stream_id_above_the_newest(
    redis_server: RedisServer, prefix: str
) -> None:
    async with broker_on(redis_server, prefix) as broker:
        assert await broker.publish("t", ServerSentEvent("a", id="5-1")) == "5-1"
        for bad in ["custom", "0-0", "5-1", "4-9"]:
            with pytest.raises(InvalidEventError, match="stream id"):
                await broker.publish("t", ServerSentEvent("b", id=bad))
        assert broker.statistics().published == 1


@pytest.mark.slow
async def test_history_is_trimmed_to_about_its_size(redis_server: RedisServer, prefix: str) -> None:
    async with broker_on(redis_server, prefix, history=10) as broker:
        for i in range(1000):
            await broker.publish("t", ServerSentEvent(str(i)))
    async with coredis.Redis(port=redis_server.port) as client:
        length = await client.xlen(f"{prefix}{{t}}")
    # Approximate trimming drops whole internal nodes (at most 100 entries each).
    assert 10 <= length <= 10 + 100


async def test_a_publish_reaches_subscribers_of_every_broker(
    redis_server: RedisServer, prefix: str
) -> None:
    async with (
        broker_on(redis_server, prefix) as one,
        broker_on(redis_server, prefix) as two,
        one.subscribe("t") as on_one,
        two.subscribe("t") as on_two,
        two.subscribe("t") as also_on_two,
    ):
        ids = [await one.publish("t", ServerSentEvent(str(i))) for i in range(5)]
        ids += [await two.publish("t", ServerSentEvent(str(i))) for i in range(5)]
        for sub in (on_one, on_two, also_on_two):
            assert await receive_ids(sub, 10) == ids
        # Two readers in all, one per broker: never one per subscriber.
        assert one.statistics().backplane.readers == 1  # type: ignore[union-attr]
        assert two.statistics().backplane.readers == 1  # type: ignore[union-attr]


async def test_replay_with_an_id_from_another_broker(
    redis_server: RedisServer, prefix: str
) -> None:
    async with broker_on(redis_server, prefix) as one, broker_on(redis_server, prefix) as two:
        ids = [await one.publish("t", ServerSentEvent(str(i))) for i in range(10)]
        async with two.subscribe("t", last_event_id=ids[2]) as sub:
            ids.append(await one.publish("t", ServerSentEvent("live")))
            assert await receive_ids(sub, 8) == ids[3:]


@pytest.mark.slow
async def test_hand_over_when_the_client_is_ahead_of_this_reader(
    redis_server: RedisServer, prefix: str
) -> None:
    # A client that saw an event through another worker can reconnect here before
    # this worker's reader has read it: it must get neither that event again (a
    # duplicate) nor miss the ones after it (a gap).
    published: list[str] = []
    received: list[str] = []
    twenty_published = trio.Event()
    async with (
        broker_on(redis_server, prefix, queue_size=10_000) as one,
        broker_on(redis_server, prefix, queue_size=10_000) as two,
        two.subscribe("t"),  # keeps two's reader running
    ):

        async def publisher() -> None:
            for i in range(300):
                published.append(await one.publish("t", ServerSentEvent(str(i))))
                if i == 19:
                    twenty_published.set()

        async def subscriber() -> None:
            await twenty_published.wait()
            # Right after a publish returned: two's reader has most likely not read it.
            seen_elsewhere = published[-1]
            async with two.subscribe("t", last_event_id=seen_elsewhere) as sub:
                expected = 300 - published.index(seen_elsewhere) - 1
                received.extend(await receive_ids(sub, expected))
            received.insert(0, seen_elsewhere)

        with trio.fail_after(TIMEOUT * 2):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(publisher)
                nursery.start_soon(subscriber)
    assert received == published[published.index(received[0]) :]


async def test_hand_over_ahead_of_the_reader_is_gap_and_duplicate_free(
    redis_server: RedisServer, prefix: str
) -> None:
    async with (
        broker_on(redis_server, prefix) as one,
        broker_on(redis_server, prefix) as two,
        two.subscribe("t") as watcher,
    ):
        first = await one.publish("t", ServerSentEvent("a"))
        assert await receive_ids(watcher, 1) == [first]
        # two's reader is now at `first`; `second` is acknowledged but not yet read.
        second = await one.publish("t", ServerSentEvent("b"))
        async with two.subscribe("t", last_event_id=second) as sub:
            third = await one.publish("t", ServerSentEvent("c"))
            assert await receive_ids(sub, 1) == [third]
            assert await receive_ids(watcher, 2) == [second, third]


async def test_publish_without_redis_raises_and_stores_nothing(
    own_redis_server: RedisServer, prefix: str
) -> None:
    async with broker_on(own_redis_server, prefix, command_timeout=1.0) as broker:
        await broker.publish("t", ServerSentEvent("before"))
        own_redis_server.stop()
        with trio.fail_after(TIMEOUT), pytest.raises(BrokerUnavailableError, match="Redis at"):
            await broker.publish("t", ServerSentEvent("lost"))
        backplane = broker.statistics().backplane
        assert backplane is not None
        assert not backplane.is_connected
        assert backplane.last_error is not None
        with trio.fail_after(TIMEOUT), pytest.raises(BrokerUnavailableError):
            await broker.ping()
        own_redis_server.start()
        with trio.fail_after(TIMEOUT):
            await broker.ping()
        assert broker.statistics().backplane.is_connected  # type: ignore[union-attr]
        assert broker.statistics().published == 1
    async with coredis.Redis(port=own_redis_server.port) as client:
        entries = await client.xrange(f"{prefix}{{t}}")
    assert [entry.field_values[b"data"] for entry in entries] == [b"before"]


async def test_opening_without_redis_is_a_clear_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        with trio.fail_after(TIMEOUT), pytest.raises(BrokerUnavailableError, match="PING"):
            async with open_redis_broker(f"redis://127.0.0.1:{port}/0"):
                pass  # pragma: no cover


@pytest.mark.parametrize(
    ("url", "options", "problem"),
    [
        ("http://127.0.0.1:6379", {}, "starts with redis://"),
        ("redis://127.0.0.1:port", {}, "bad port"),
        ("redis://127.0.0.1:6379/x", {}, "database"),
        ("redis://127.0.0.1:6379/0", {"history": 0}, "history must be >= 1"),
        ("redis://127.0.0.1:6379/0", {"queue_size": 0}, "queue_size"),
        ("redis://127.0.0.1:6379/0", {"command_timeout": 0}, "command_timeout"),
    ],
)
async def test_bad_options_are_refused(url: str, options: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        async with open_redis_broker(url, **options):
            pass  # pragma: no cover


@pytest.mark.slow
async def test_a_redis_restart_loses_no_acknowledged_event(
    own_redis_server: RedisServer, prefix: str
) -> None:
    acknowledged: list[str] = []
    refused = 0
    async with (
        broker_on(own_redis_server, prefix, command_timeout=1.0, queue_size=10_000) as broker,
        broker_on(own_redis_server, prefix, command_timeout=1.0, queue_size=10_000) as other,
        broker.subscribe("t") as local,
        other.subscribe("t") as remote,
    ):

        async def publish_through_the_restart() -> None:
            nonlocal refused
            while len(acknowledged) < 300:
                try:
                    acknowledged.append(await broker.publish("t", ServerSentEvent("x")))
                except BrokerUnavailableError:
                    refused += 1
                    await trio.sleep(0.01)
                if len(acknowledged) == 100:
                    # SIGKILL: no goodbye from Redis; appendfsync always kept each
                    # acknowledged XADD on disk anyway.
                    await trio.to_thread.run_sync(lambda: own_redis_server.restart(kill=True))

        with trio.fail_after(TIMEOUT * 4):
            await publish_through_the_restart()
            for sub in (local, remote):
                assert await receive_ids(sub, 300) == acknowledged
        for each in (broker, other):
            backplane = each.statistics().backplane
            assert backplane is not None
            assert backplane.reconnects >= 1
            assert backplane.is_connected


async def test_subscribers_stay_subscribed_through_an_outage(
    own_redis_server: RedisServer, prefix: str
) -> None:
    async with (
        broker_on(own_redis_server, prefix, command_timeout=0.5) as broker,
        broker.subscribe("t") as sub,
    ):
        before = await broker.publish("t", ServerSentEvent("before"))
        assert await receive_ids(sub, 1) == [before]
        own_redis_server.stop()
        # A new subscriber of a topic this process already reads needs no Redis.
        async with broker.subscribe("t") as joined_in_outage:
            # One that needs a replay does, and is told so when it reads it.
            async with broker.subscribe("t", last_event_id="1-0") as replayed:
                with trio.fail_after(TIMEOUT), pytest.raises(BrokerUnavailableError):
                    await replayed.receive_batch()
            # So does one of a topic whose reader must start first.
            with pytest.raises(BrokerUnavailableError, match="did not answer"):
                async with broker.subscribe("other"):
                    pass  # pragma: no cover
            await trio.to_thread.run_sync(own_redis_server.start)
            with trio.fail_after(TIMEOUT):
                while True:
                    try:
                        after = await broker.publish("t", ServerSentEvent("after"))
                        break
                    except BrokerUnavailableError:
                        await trio.sleep(0.05)
            assert await receive_ids(sub, 1) == [after]
            assert await receive_ids(joined_in_outage, 1) == [after]


async def test_reader_tasks_stop_when_the_subscribers_leave(
    redis_server: RedisServer, prefix: str
) -> None:
    async with broker_on(redis_server, prefix) as broker:
        assert reader_tasks() == 0
        async with trio.open_nursery() as nursery:
            entered = trio.Event()
            leave = trio.Event()
            count = 0

            async def subscriber(topic: str) -> None:
                nonlocal count
                async with broker.subscribe(topic) as sub:
                    count += 1
                    if count == 6:
                        entered.set()
                    await leave.wait()
                    del sub

            for topic in ["a", "b", "c"] * 2:
                nursery.start_soon(subscriber, topic)
            with trio.fail_after(TIMEOUT):
                await entered.wait()
                backplane = broker.statistics().backplane
                assert backplane is not None
                assert backplane.readers == 3
                assert reader_tasks() == 3
                # One reader per topic, never one per subscriber: three XREADs.
                for topic in "abc":
                    await broker.publish(topic, ServerSentEvent("x"))
                while await xread_clients(redis_server) != 3:  # noqa: ASYNC110
                    await trio.sleep(0.02)
            leave.set()
        assert broker.statistics().backplane.readers == 0  # type: ignore[union-attr]
        # Task exits and Redis's view of closed connections signal nothing: poll,
        # bounded. (coredis's own command pool may keep an extra idle connection
        # and its tasks; only the readers matter here.)
        with trio.fail_after(TIMEOUT):
            while reader_tasks():  # noqa: ASYNC110
                await trio.sleep(0.01)
            while await xread_clients(redis_server):  # noqa: ASYNC110
                await trio.sleep(0.02)


async def test_a_reader_restarts_after_its_topic_was_idle(
    redis_server: RedisServer, prefix: str
) -> None:
    async with broker_on(redis_server, prefix) as broker:
        async with broker.subscribe("t") as sub:
            first = await broker.publish("t", ServerSentEvent("1"))
            assert await receive_ids(sub, 1) == [first]
        missed = await broker.publish("t", ServerSentEvent("2"))
        async with broker.subscribe("t", last_event_id=first) as sub:
            third = await broker.publish("t", ServerSentEvent("3"))
            assert await receive_ids(sub, 2) == [missed, third]


async def test_foreign_entries_are_skipped(redis_server: RedisServer, prefix: str) -> None:
    async with broker_on(redis_server, prefix) as broker, broker.subscribe("t") as sub:
        async with coredis.Redis(port=redis_server.port) as client:
            await client.xadd(f"{prefix}{{t}}", {"not": "ours"})
            await client.xadd(f"{prefix}{{t}}", {"data": b"\xff"})
        good = await broker.publish("t", ServerSentEvent("fine"))
        frames = await sub.receive_batch()
        assert ids_of(frames) == [good]


async def test_a_reader_reads_on_from_what_redis_has_after_losing_what_it_delivered(
    redis_server: RedisServer, prefix: str
) -> None:
    """A failover to a replica without the newest entries, or a restart that lost them,
    leaves the stream behind what a reader delivered; its next ids can be lower (another
    clock, or an id given by the publisher). The reader, back after the failure, reads
    them instead of waiting above them forever."""
    async with broker_on(redis_server, prefix) as broker, broker.subscribe("t") as sub:
        with trio.fail_after(TIMEOUT):
            await broker.publish("t", ServerSentEvent("before", id="1000-0"))
            assert await receive_ids(sub, 1) == ["1000-0"]
            async with coredis.Redis(port=redis_server.port) as client:
                # As if lost: the stream and its metadata gone. Then the reader's
                # connection breaks, as on a failover.
                await client.delete([f"{prefix}{{t}}", f"{prefix}{{t}}:meta"])
                await client.client_kill(type_=PureToken.NORMAL, skipme=True)
            await broker.publish("t", ServerSentEvent("after", id="5-0"))
            assert await receive_ids(sub, 1) == ["5-0"]


async def test_an_outage_is_logged_once_per_broker_then_its_recovery(
    own_redis_server: RedisServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    topics = [f"t{n}" for n in range(5)]

    def retries_of(topic: str) -> int:
        text = f"reading topic {topic} from Redis"
        return sum(1 for record in caplog.records if record.getMessage().startswith(text))

    with caplog.at_level(logging.DEBUG, logger="trio_sse.redis"):
        async with (
            broker_on(own_redis_server, prefix, command_timeout=0.5) as broker,
            AsyncExitStack() as stack,
        ):
            subs = [await stack.enter_async_context(broker.subscribe(t)) for t in topics]
            for topic, sub in zip(topics, subs, strict=True):
                event_id = await broker.publish(topic, ServerSentEvent("up"))
                assert await receive_ids(sub, 1) == [event_id]
            own_redis_server.stop()
            with trio.fail_after(TIMEOUT):
                # Every reader retries (a line each, at DEBUG) several times.
                while min(retries_of(topic) for topic in topics) < 3:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            await trio.to_thread.run_sync(own_redis_server.start)
            # Every reader reads again.
            for topic, sub in zip(topics, subs, strict=True):
                with trio.fail_after(TIMEOUT):
                    event_id = await broker.publish(topic, ServerSentEvent("again"))
                    assert await receive_ids(sub, 1) == [event_id]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"lost Redis at 127.0.0.1:{own_redis_server.port}/0 (")
    recovered = [r.getMessage() for r in caplog.records if "recovered after" in r.getMessage()]
    assert len(recovered) == 1, recovered
    assert recovered[0].startswith(f"Redis at 127.0.0.1:{own_redis_server.port}/0 answers again")


async def test_a_long_outage_is_recalled_at_most_every_30_s(
    mock_clock: trio.testing.MockClock,
    redis_server: RedisServer,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The clock stands still unless jumped: no timeout fires while Redis is up.
    async with broker_on(redis_server, prefix) as broker:
        with caplog.at_level(logging.INFO, logger="trio_sse.redis"):
            for _ in range(20):
                # What every reader and publish does when a command fails, for 100 s.
                broker._lost(ConnectionError("Connection refused"))
                mock_clock.jump(5)
            await broker.ping()  # Redis answers: the outage is over
    messages = [record.getMessage() for record in caplog.records]
    where = f"Redis at 127.0.0.1:{redis_server.port}/0"
    assert messages == [
        f"lost {where} (ConnectionError: Connection refused); open streams wait, publishes "
        "fail; retrying",
        f"{where} still unreachable after 30 s (ConnectionError: Connection refused); retrying",
        f"{where} still unreachable after 60 s (ConnectionError: Connection refused); retrying",
        f"{where} still unreachable after 90 s (ConnectionError: Connection refused); retrying",
        f"{where} answers again: recovered after 100.0 s",
    ]


@pytest.mark.parametrize("min_replicas", [0, 1])
async def test_a_pool_that_hides_a_failed_connection_is_a_503_not_a_500(
    redis_server: RedisServer, prefix: str, min_replicas: int
) -> None:
    """coredis's cluster pool raises its own QueueFull where a connection attempt failed.

    Seen in the suite: a publish during a cluster failover, on a loaded machine,
    answered 500 (the exception escaped the broker). It is Redis being away: 503.
    """
    from coredis._concurrency import QueueFull  # noqa: PLC0415 - coredis's own, private

    async def pool_full(*_: object, **__: object) -> object:
        raise QueueFull

    async with broker_on(redis_server, prefix, min_replicas=min_replicas) as broker:
        broker._publish_script = pool_full  # type: ignore[assignment]
        if min_replicas:
            broker._publish_and_wait = pool_full  # type: ignore[assignment, method-assign]
        with pytest.raises(BrokerUnavailableError, match="did not acknowledge"):
            await broker.publish("t", ServerSentEvent("x"))
