"""The reference app's HTTP API: publishing, validation, stats and health, over a real socket."""

from __future__ import annotations

import pytest

from tests.wire import SSEConnection, running_server
from trio_sse import MemoryBroker
from trio_sse.app import create_app

JSON = {"Content-Type": "application/json"}


async def test_publish_answers_202_with_the_id() -> None:
    async with running_server() as server:
        response = await server.http.post("/events/news", json={"data": "hi"})
        assert response.status_code == 202
        assert response.headers["content-type"] == "application/json"
        event_id = response.json()["id"]
        assert event_id.isdigit()
        chosen = str(int(event_id) + 10)
        response = await server.http.post("/events/news", json={"data": "x", "id": chosen})
        assert response.json() == {"id": chosen}


@pytest.mark.parametrize(
    ("body", "data"),
    [
        ({"data": "text"}, "text"),
        ({"data": {"a": [1, 2.5, None]}}, '{"a":[1,2.5,null]}'),
        ({"data": ["é"]}, '["é"]'),
        ({"data": 42}, "42"),
        ({"data": None}, "null"),
        ({"data": True}, "true"),
        ({"data": ""}, ""),
    ],
)
async def test_non_string_data_is_sent_as_compact_json(body: dict[str, object], data: str) -> None:
    async with running_server() as server:
        conn = await SSEConnection.open(server, "/events/t")
        await server.wait_for_subscribers(1)
        await server.publish("t", **body)
        (event,) = await conn.read_events(1)
        assert event.data == data
        await conn.close_fin()


async def test_event_type_id_and_retry_are_published() -> None:
    async with running_server() as server:
        conn = await SSEConnection.open(server, "/events/t")
        await server.wait_for_subscribers(1)
        await server.publish("t", data="d", event="update", id="7", retry=1234)
        (event,) = await conn.read_events(1)
        assert (event.type, event.data, event.last_event_id) == ("update", "d", "7")
        assert b"retry: 1234\n" in conn.body
        await conn.close_fin()


@pytest.mark.parametrize(
    ("path", "content", "problem"),
    [
        ("/events/t", b"{not json", "not valid JSON"),
        ("/events/t", b'{"data": "x", "id": ""}', '"id" must not be empty'),
        ("/events/t", b'{"data": "x", "id": "mine"}', "must be a decimal integer"),
        ("/events/t", b'{"data": "x", "id": "%s"}' % (b"7" * 40_000), "decimal integer"),
        ("/events/t", b"", "not valid JSON"),
        ("/events/t", b"\xff\xfe", "not valid JSON"),
        ("/events/t", b'{"data": NaN}', "NaN is not allowed"),
        ("/events/t", b'"just a string"', "must be a JSON object"),
        ("/events/t", b"[1]", "must be a JSON object"),
        ("/events/t", b"{}", 'missing field "data"'),
        ("/events/t", b'{"data": "x", "evnt": "typo"}', "unknown field(s): evnt"),
        ("/events/t", b'{"data": "x", "event": 5}', '"event" must be a string'),
        ("/events/t", b'{"data": "x", "id": ["1"]}', '"id" must be a string'),
        ("/events/t", b'{"data": "x", "retry": "5"}', '"retry" must be a non-negative'),
        ("/events/t", b'{"data": "x", "retry": true}', '"retry" must be a non-negative'),
        ("/events/t", b'{"data": "x", "retry": -1}', "retry must be a non-negative"),
        ("/events/t", b'{"data": "x", "event": "a\\nb"}', "event must not contain CR or LF"),
        ("/events/t", b'{"data": "x", "event": "a\\rb"}', "event must not contain CR or LF"),
        ("/events/t", b'{"data": "x", "id": "1\\ndata: evil"}', "id must not contain CR, LF"),
        ("/events/t", b'{"data": "x", "id": "a\\u0000"}', "id must not contain CR, LF or NUL"),
        ("/events/t", b'{"data": "\\ud800"}', "lone surrogate"),
        ("/events/t", b"[" * 100_000, "not valid JSON"),
        ("/events/a%20b", b'{"data": "x"}', "topic must be 1 to 128 characters"),
        ("/events/" + "x" * 129, b'{"data": "x"}', "topic must be 1 to 128 characters"),
        ("/events/%C3%A9", b'{"data": "x"}', "topic must be 1 to 128 characters"),
    ],
)
async def test_bad_publish_gets_400_naming_the_problem_and_publishes_nothing(
    path: str, content: bytes, problem: str
) -> None:
    async with running_server(max_body_size=1_000_000) as server:
        response = await server.http.post(path, content=content, headers=JSON)
        assert response.status_code == 400, response.text
        assert problem in response.json()["error"]
        assert server.broker.statistics().published == 0


async def test_oversized_body_gets_413_and_publishes_nothing() -> None:
    async with running_server(max_body_size=1000) as server:
        body = b'{"data": "' + b"x" * 1000 + b'"}'
        response = await server.http.post("/events/t", content=body, headers=JSON)
        assert response.status_code == 413
        assert "1000-byte limit" in response.json()["error"]

        async def chunked() -> object:  # no Content-Length: the limit must still hold
            yield body

        response = await server.http.post(
            "/events/t",
            content=chunked(),  # type: ignore[arg-type]
            headers=JSON,
        )
        assert response.status_code == 413
        assert server.broker.statistics().published == 0
        ok = await server.http.post("/events/t", json={"data": "x" * 900})
        assert ok.status_code == 202


async def test_bad_stream_topic_gets_400() -> None:
    async with running_server() as server:
        response = await server.http.get("/events/bad%20topic")
        assert response.status_code == 400
        assert "topic" in response.json()["error"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nope", 404),
        ("POST", "/events//t", 404),
        ("GET", "/events/t/", 404),
        ("DELETE", "/events/t", 405),
        ("POST", "/stats", 405),
    ],
)
async def test_unknown_routes_and_methods_answer_json(method: str, path: str, status: int) -> None:
    async with running_server() as server:
        response = await server.http.request(method, path)
        assert response.status_code == status
        assert response.json()["error"]


async def test_stats_counts_streams_topics_and_events() -> None:
    async with running_server() as server:
        conns = [await SSEConnection.open(server, f"/events/{t}") for t in ("a", "a", "b")]
        await server.wait_for_subscribers(3)
        await server.publish("a", data="1")
        await server.publish("c", data="2")
        stats = await server.stats()
        # Two small frames and their bookkeeping, in "a" and "c".
        assert 0 < stats.pop("retained_bytes") < 2 * 1024
        assert stats == {
            "subscribers": 3,
            "topics": 3,
            "published": 2,
            "delivered": 2,
            "dropped": 0,
            "subscribers_per_topic": {"a": 2, "b": 1},
            "backplane": None,  # the memory broker has none
        }
        for conn in conns:
            await conn.close_fin()


@pytest.mark.parametrize(
    "options",
    [
        {"heartbeat": -1.0},
        {"heartbeat": float("nan")},
        {"max_body_size": 0},
        {"min_write_interval": -0.1},
        {"min_write_interval": float("nan")},
    ],
)
def test_create_app_refuses_bad_options(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=">="):
        create_app(broker=MemoryBroker(), **options)  # type: ignore[arg-type]
