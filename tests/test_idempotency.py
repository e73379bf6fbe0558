"""Idempotent publishing: a repeated ``Idempotency-Key`` answers the original id.

A publisher that got no answer (a 503, a timeout, a broken connection) cannot tell
whether its event was stored; retrying with the same key publishes it at most once.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from tests.test_cli_client import run_main
from tests.wire import SSEConnection, running_server
from trio_sse import (
    BrokerUnavailableError,
    InvalidEventError,
    MemoryBroker,
    ServerSentEvent,
    Subscription,
)
from trio_sse.broker import MAX_IDEMPOTENCY_KEY_LENGTH
from trio_sse.cli import _publish


def ids_of(frames: list[bytes]) -> list[str]:
    return [line[4:] for f in frames for line in f.decode().split("\n") if line.startswith("id: ")]


def drain(subscription: Subscription) -> list[bytes]:
    try:
        return subscription.receive_batch_nowait(100_000)
    except trio.WouldBlock:
        return []


# The broker ------------------------------------------------------------------------


async def test_a_repeated_key_returns_the_original_id_and_publishes_nothing() -> None:
    broker = MemoryBroker()
    async with broker.subscribe("t") as sub:
        first = await broker.publish("t", ServerSentEvent("a"), idempotency_key="k1")
        again = await broker.publish("t", ServerSentEvent("a"), idempotency_key="k1")
        other = await broker.publish("t", ServerSentEvent("b"), idempotency_key="k2")
        assert again == first
        assert other != first
        assert ids_of(drain(sub)) == [first, other]
    assert broker.statistics().published == 2


async def test_keys_are_per_topic() -> None:
    broker = MemoryBroker()
    a = await broker.publish("a", ServerSentEvent("x"), idempotency_key="same")
    b = await broker.publish("b", ServerSentEvent("x"), idempotency_key="same")
    assert a != b
    assert broker.statistics().published == 2


async def test_a_key_is_remembered_while_its_event_is_retained(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = MemoryBroker(history=2, history_ttl=60)
    first = await broker.publish("t", ServerSentEvent("1"), idempotency_key="k")
    assert await broker.publish("t", ServerSentEvent("1"), idempotency_key="k") == first
    await broker.publish("t", ServerSentEvent("2"))
    await broker.publish("t", ServerSentEvent("3"))  # "1" leaves history, and "k" with it
    assert await broker.publish("t", ServerSentEvent("1"), idempotency_key="k") != first
    # Its age counts too.
    kept = await broker.publish("t", ServerSentEvent("4"), idempotency_key="old")
    await trio.sleep(61)
    assert await broker.publish("t", ServerSentEvent("4"), idempotency_key="old") != kept


async def test_a_retry_with_its_own_id_is_recognised_by_its_key() -> None:
    broker = MemoryBroker()
    first = await broker.publish("t", ServerSentEvent("x", id="100"), idempotency_key="k")
    # The id alone would be refused (not above the newest); the key answers first.
    assert await broker.publish("t", ServerSentEvent("x", id="100"), idempotency_key="k") == first
    assert broker.statistics().published == 1


@pytest.mark.parametrize(
    "key", ["", " ", "a b", "é", "x" * (MAX_IDEMPOTENCY_KEY_LENGTH + 1), "a\nb"]
)
async def test_malformed_keys_are_refused_and_nothing_is_published(key: str) -> None:
    broker = MemoryBroker()
    with pytest.raises(InvalidEventError, match="idempotency key"):
        await broker.publish("t", ServerSentEvent("x"), idempotency_key=key)
    assert broker.statistics().published == 0


# Over HTTP ---------------------------------------------------------------------------


async def test_http_a_repeated_key_answers_the_same_id_and_delivers_one_event() -> None:
    async with running_server() as server:
        conn = await SSEConnection.open(server, "/events/t")
        try:
            await server.wait_for_subscribers(1)
            headers = {"Idempotency-Key": "order-42"}
            answers = [
                await server.http.post("/events/t", json={"data": "x"}, headers=headers)
                for _ in range(3)
            ]
            assert [a.status_code for a in answers] == [202, 202, 202]
            (first, *rest) = [a.json() for a in answers]
            assert rest == [first, first]
            marker = await server.publish("t", data="marker")
            events = await conn.read_events(2)
        finally:
            await conn.close_fin()
        assert [(e.data, e.last_event_id) for e in events] == [
            ("x", first["id"]),
            ("marker", marker),
        ]
        # The same key on another topic is another event.
        other = await server.http.post("/events/u", json={"data": "x"}, headers=headers)
        assert other.status_code == 202
        assert other.json()["id"] != first["id"]
        assert server.broker.statistics().published == 3


@pytest.mark.parametrize("key", ["", "has space", "x" * (MAX_IDEMPOTENCY_KEY_LENGTH + 1)])
async def test_http_a_malformed_key_is_a_400(key: str) -> None:
    async with running_server() as server:
        response = await server.http.post(
            "/events/t", json={"data": "x"}, headers={"Idempotency-Key": key}
        )
        assert response.status_code == 400
        assert "idempotency key" in response.json()["error"]
        assert server.broker.statistics().published == 0


async def test_http_two_keys_in_one_request_are_a_400() -> None:
    async with running_server() as server:
        response = await server.http.post(
            "/events/t",
            json={"data": "x"},
            headers=[("Idempotency-Key", "a"), ("Idempotency-Key", "b")],
        )
        assert response.status_code == 400
        assert "Idempotency-Key" in response.json()["error"]


# The CLI -----------------------------------------------------------------------------


class _StoredThenUnavailable(MemoryBroker):
    """Stores the first publish and then answers 503, as a Redis that timed out does."""

    failures = 1

    async def publish(
        self, topic: str, event: ServerSentEvent, *, idempotency_key: str | None = None
    ) -> str:
        event_id = await super().publish(topic, event, idempotency_key=idempotency_key)
        if self.failures:
            self.failures -= 1
            raise BrokerUnavailableError("timed out (but stored)")
        return event_id


async def test_cli_publish_retries_a_503_once_with_the_same_key(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_publish, "RETRY_DELAY", 0.0)
    broker = _StoredThenUnavailable()
    async with running_server(broker=broker) as server:
        conn = await SSEConnection.open(server, "/events/t")
        try:
            await server.wait_for_subscribers(1)
            code = await run_main("publish", f"{server.url}/events/t", "--data", "once")
            marker = await server.publish("t", data="marker")
            events = await conn.read_events(2)
        finally:
            await conn.close_fin()
    assert code == 0
    out, err = capsys.readouterr()
    assert "answered 503" in err
    assert "retrying once with the same Idempotency-Key" in err
    assert [e.data for e in events] == ["once", "marker"]
    assert out == f"{events[0].last_event_id}\n"
    assert marker == events[1].last_event_id


async def test_cli_publish_sends_the_given_key(capsys: pytest.CaptureFixture[str]) -> None:
    async with running_server() as server:
        url = f"{server.url}/events/t"
        for _ in range(2):
            assert await run_main("publish", url, "--data", "x", "--idempotency-key", "k-1") == 0
        assert server.broker.statistics().published == 1
    first, second = capsys.readouterr().out.split()
    assert first == second
