"""EventHub: the reference app's pieces in an app of one's own, over a real socket."""

from __future__ import annotations

import jwt
import pytest
import quart
from quart_trio import QuartTrio

from tests.wire import SSEConnection, running_server
from trio_sse import MemoryBroker, ServerSentEvent
from trio_sse.hub import EventHub, Routes
from trio_sse.web import Action, AuthConfig

SECRET = "h" * 32


def token(*topics: str, sub: str = "ana") -> str:
    claims = {"trio_sse": {"subscribe": list(topics)}, "sub": sub}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def users_app(broker: MemoryBroker, max_streams: int = 100) -> tuple[QuartTrio, EventHub]:
    app = QuartTrio(__name__)
    auth = AuthConfig(jwt_key=SECRET, subscribe_requires_token=True)
    hub = EventHub(broker=broker, auth=auth, max_streams=max_streams)
    hub.init_app(
        app, url_prefix="/sse", routes=Routes.STREAM | Routes.HEALTH, stream_paths=["/room"]
    )

    @app.get("/room")
    async def room() -> quart.ResponseReturnValue:
        grant = hub.authorize(Action.SUBSCRIBE, "room")
        return hub.event_stream("room", grant=grant, backlog=2)

    @app.get("/page")
    async def page() -> quart.ResponseReturnValue:
        return "<p>the user's own page</p>"

    return app, hub


async def test_the_hub_serves_its_routes_under_a_prefix_beside_the_users_own() -> None:
    broker = MemoryBroker()
    app, hub = users_app(broker)
    assert EventHub.of(app) is hub
    async with running_server(app=app, broker=broker) as server:
        assert (await server.http.get("/sse/livez")).json() == {"status": "alive"}
        assert (await server.http.get("/page")).text == "<p>the user's own page</p>"
        # Only the route groups asked for: no publish, no stats.
        assert (await server.http.post("/sse/events/t", json={"data": "x"})).status_code == 405
        assert (await server.http.get("/sse/metrics")).status_code == 404
        # The user's own 404 is left as the user's app makes it (not turned into JSON).
        missing = await server.http.get("/nowhere")
        assert missing.status_code == 404
        assert not missing.headers["content-type"].startswith("application/json")
        auth = [("Authorization", f"Bearer {token('t')}")]
        stream = await SSEConnection.open(server, "/sse/events/t", headers=auth)
        await server.wait_for_subscribers(1)
        await broker.publish("t", ServerSentEvent("hello"))
        (event,) = await stream.read_events(1)
        assert event.data == "hello"
        await stream.close_fin()


async def test_a_users_stream_route_gets_the_hubs_auth_caps_presence_and_backlog() -> None:
    broker = MemoryBroker()
    app, hub = users_app(broker, max_streams=1)
    for i in range(3):
        await broker.publish("room", ServerSentEvent(f"m{i}"))
    async with running_server(app=app, broker=broker) as server:
        # The hub's token check, answered as JSON by the hub's error handlers.
        refused = await server.http.get("/room")
        assert refused.status_code == 401
        assert "token" in refused.json()["error"]
        forbidden = await server.http.get(
            "/room", headers={"Authorization": f"Bearer {token('other')}"}
        )
        assert forbidden.status_code == 403
        auth = [("Authorization", f"Bearer {token('room')}")]
        first = await SSEConnection.open(server, "/room", headers=auth)
        # The backlog asked for: the two newest.
        assert [e.data for e in await first.read_events(2)] == ["m1", "m2"]
        # The token's sub is present on the room.
        assert (await broker.presence("room")).subjects == ("ana",)
        # The caps count the user's stream route (stream_paths): the second is refused.
        over = await server.http.get("/room", headers=dict(auth))
        assert over.status_code == 503
        assert hub.limiter.refused == 1
        await first.close_fin()


def test_a_hub_goes_into_one_app_once_and_its_prefix_is_checked() -> None:
    app = QuartTrio(__name__)
    EventHub().init_app(app)
    with pytest.raises(ValueError, match="has an EventHub already"):
        EventHub().init_app(app)
    for prefix in ("sse", "/sse/"):
        with pytest.raises(ValueError, match="url_prefix"):
            EventHub().init_app(QuartTrio(__name__), url_prefix=prefix)
    with pytest.raises(LookupError, match="no EventHub"):
        EventHub.of(QuartTrio(__name__))
    with pytest.raises(RuntimeError, match="init_app"):
        _ = EventHub().limiter
