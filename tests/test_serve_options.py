"""serve()'s own settings: its security timeouts as parameters, Hypercorn's Config for the rest."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
from hypercorn.config import Config

from tests.wire import TIMEOUT
from trio_sse import MemoryBroker, create_app, serve


@asynccontextmanager
async def serving(**options: Any) -> AsyncIterator[tuple[str, int]]:
    broker = MemoryBroker()
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(
            partial(
                serve,
                create_app(broker=broker),
                port=0,
                graceful_timeout=0.2,
                on_shutdown=broker.aclose,
                shutdown_trigger=stop.wait,
                **options,
            )
        )
        host, port = urls[0].removeprefix("http://").rsplit(":", 1)
        try:
            yield host, int(port)
        finally:
            stop.set()


async def read_until_closed(stream: trio.SocketStream) -> bytes:
    received = b""
    while data := await stream.receive_some():
        received += data
    return received


async def test_a_request_head_timeout_given_cuts_a_slow_head_at_that_time() -> None:
    async with serving(request_head_timeout=0.3) as address:
        stream = await trio.open_tcp_stream(*address)
        async with stream:
            await stream.send_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n")  # never finished
            started = trio.current_time()
            with trio.fail_after(TIMEOUT):
                assert await read_until_closed(stream) == b""
            # The default is 5 s: a cut well before it is the parameter's.
            assert trio.current_time() - started < 3.0


async def test_a_request_head_over_the_size_given_gets_431() -> None:
    async with serving(max_request_head_size=1024) as address:
        stream = await trio.open_tcp_stream(*address)
        async with stream:
            await stream.send_all(b"GET /livez HTTP/1.1\r\nX-Big: " + b"a" * 4096)
            with trio.fail_after(TIMEOUT):
                answer = await read_until_closed(stream)
            assert answer.startswith(b"HTTP/1.1 431")


async def test_hypercorn_settings_serve_does_not_name_come_from_the_config_given() -> None:
    config = Config()
    config.include_server_header = False
    config.keep_alive_timeout = 999.0  # named by serve(): its own value wins
    async with serving(config=config) as address:
        stream = await trio.open_tcp_stream(*address)
        async with stream:
            await stream.send_all(b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            with trio.fail_after(TIMEOUT):
                answer = await read_until_closed(stream)
    head = answer.partition(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 200")
    assert b"\r\nserver:" not in head
    assert config.keep_alive_timeout == 999.0  # copied, never changed


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"request_head_timeout": 0}, "request_head_timeout"),
        ({"tls_handshake_timeout": float("inf")}, "tls_handshake_timeout"),
        ({"max_request_head_size": 0}, "max_request_head_size"),
    ],
)
async def test_bad_serve_settings_are_refused(options: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        await serve(create_app(), port=0, **options)
