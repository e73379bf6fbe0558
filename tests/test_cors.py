"""CORS in the reference app: the policy (pure), its headers over a real socket, the CLI options.

The browser's side of the same behaviour (blocked or not) is in tests/test_browser.py.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.test_cli import serve_process
from tests.wire import SSEConnection, running_server
from trio_sse.web import CORS_MAX_AGE, CorsPolicy

PAGE = "https://app.example.com"
OTHER = "https://evil.example.net"


def test_policy_echoes_an_allowed_origin_and_varies_on_origin() -> None:
    policy = CorsPolicy.allowing([PAGE, "http://127.0.0.1:8080"])
    assert policy.headers_for(PAGE, is_preflight=False) == {
        "Vary": "Origin",
        "Access-Control-Allow-Origin": PAGE,
    }
    assert policy.allows("http://127.0.0.1:8080")


@pytest.mark.parametrize("origin", [OTHER, None, "null", PAGE + "/", PAGE.upper()])
def test_policy_gives_no_cors_header_to_other_origins(origin: str | None) -> None:
    headers = CorsPolicy.allowing([PAGE]).headers_for(origin, is_preflight=True)
    assert headers == {"Vary": "Origin"}


def test_policy_preflight_names_methods_headers_and_max_age() -> None:
    headers = CorsPolicy.allowing([PAGE], allow_credentials=True).headers_for(
        PAGE, is_preflight=True
    )
    assert headers["Access-Control-Allow-Origin"] == PAGE
    assert headers["Access-Control-Allow-Credentials"] == "true"
    assert headers["Access-Control-Allow-Methods"] == "GET, POST"
    allowed = {name.strip().lower() for name in headers["Access-Control-Allow-Headers"].split(",")}
    assert allowed == {"content-type", "last-event-id", "authorization", "idempotency-key"}
    assert headers["Access-Control-Max-Age"] == str(CORS_MAX_AGE)


def test_policy_star_allows_any_origin_without_vary() -> None:
    policy = CorsPolicy.allowing(["*"])
    assert policy.headers_for(OTHER, is_preflight=False) == {"Access-Control-Allow-Origin": "*"}
    # No Origin header: not a CORS request, nothing to add.
    assert policy.headers_for(None, is_preflight=False) == {}


@pytest.mark.parametrize(
    ("origins", "credentials", "problem"),
    [
        (["*"], True, "cannot be allowed for every origin"),
        (["*", PAGE], False, "list it alone"),
        ([], False, "non-empty"),
        (["null"], False, "must look like"),
        (["https://app.example.com/"], False, "no path or trailing slash"),
        (["https://app.example.com/chat"], False, "must look like"),
        (["app.example.com"], False, "must look like"),
        (["HTTPS://APP.EXAMPLE.COM"], False, "lower case"),
    ],
)
def test_policy_rejects_bad_configurations(
    origins: list[str], credentials: bool, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        CorsPolicy.allowing(origins, allow_credentials=credentials)


async def test_app_answers_allowed_origins_on_streams_posts_errors_and_preflights() -> None:
    cors = CorsPolicy.allowing([PAGE], allow_credentials=True)
    async with running_server(cors=cors) as server:
        conn = await SSEConnection.open(server, "/events/news", headers=[("Origin", PAGE)])
        assert conn.status == 200
        assert conn.headers["access-control-allow-origin"] == PAGE
        assert conn.headers["access-control-allow-credentials"] == "true"
        assert "origin" in conn.headers["vary"].lower()
        await server.wait_for_subscribers(1)

        posted = await server.http.post(
            "/events/news", json={"data": "hi"}, headers={"Origin": PAGE}
        )
        assert posted.status_code == 202
        assert posted.headers["access-control-allow-origin"] == PAGE
        (event,) = await conn.read_events(1)
        assert event.data == "hi"

        # An error answer is readable too, so the page can show why.
        refused = await server.http.post(
            "/events/news",
            content=b"nope",
            headers={"Origin": PAGE, "Content-Type": "application/json"},
        )
        assert refused.status_code == 400
        assert refused.headers["access-control-allow-origin"] == PAGE

        preflight = await server.http.options(
            "/events/news",
            headers={
                "Origin": PAGE,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        assert preflight.is_success
        assert preflight.headers["access-control-allow-origin"] == PAGE
        assert "POST" in preflight.headers["access-control-allow-methods"]
        assert "Content-Type" in preflight.headers["access-control-allow-headers"]
        assert preflight.headers["access-control-max-age"] == str(CORS_MAX_AGE)
        await conn.close_fin()


async def test_app_gives_other_origins_no_cors_headers() -> None:
    async with running_server(cors=CorsPolicy.allowing([PAGE])) as server:
        conn = await SSEConnection.open(server, "/events/news", headers=[("Origin", OTHER)])
        assert conn.status == 200
        assert not any(name.startswith("access-control-") for name in conn.headers)
        assert "origin" in conn.headers["vary"].lower()
        preflight = await server.http.options(
            "/events/news", headers={"Origin": OTHER, "Access-Control-Request-Method": "POST"}
        )
        assert not any(name.startswith("access-control-") for name in preflight.headers)
        await conn.close_fin()


async def test_app_without_cors_sends_no_cors_headers() -> None:
    async with running_server() as server:
        posted = await server.http.post(
            "/events/news", json={"data": "x"}, headers={"Origin": PAGE}
        )
        assert posted.status_code == 202
        assert not any(name.startswith("access-control-") for name in posted.headers)


async def test_serve_cors_options_reach_the_app() -> None:
    async with serve_process(
        "--cors-origin", PAGE, "--cors-origin", "http://localhost:3000", "--cors-credentials"
    ) as (_, address):
        conn = await SSEConnection.open(
            address, "/events/news", headers=[("Origin", "http://localhost:3000")]
        )
        assert conn.headers["access-control-allow-origin"] == "http://localhost:3000"
        assert conn.headers["access-control-allow-credentials"] == "true"
        await conn.close_fin()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cors-origin", "*", "--cors-credentials"], "cannot be allowed for every origin"),
        (["--cors-credentials"], "--cors-credentials needs at least one --cors-origin"),
        (["--cors-origin", "https://x.example/"], "no path or trailing slash"),
    ],
)
def test_serve_rejects_bad_cors_options(args: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trio_sse.cli", "serve", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert message in result.stderr
