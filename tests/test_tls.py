"""Event streams over TLS: HTTP/2 chosen by ALPN, HTTP/1.1 still served, and the CLI.

The certificate is issued for 127.0.0.1 by a throwaway CA (trustme) that only the
test's clients trust.
"""

from __future__ import annotations

import re
import signal
import ssl
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trio
import trustme

from tests.redis_server import RedisServer
from tests.test_cli import SERVE, listening_process
from tests.test_http2 import STREAMS, read_events, stream_on_one_connection
from tests.wire import TIMEOUT, Server, running_server
from trio_sse import MemoryBroker, create_app, serve
from trio_sse.protocol import Decoder

# As in tests/test_redis_serve.py: a parent, then workers that import everything.
WORKERS_START = 30.0


@dataclass(frozen=True)
class TLSFiles:
    certfile: str
    keyfile: str
    client_context: ssl.SSLContext


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    directory = tmp_path_factory.mktemp("tls")
    certfile, keyfile = directory / "cert.pem", directory / "key.pem"
    cert.private_key_pem.write_to_path(str(keyfile))
    # The chain: leaf first, then any intermediates.
    for index, blob in enumerate(cert.cert_chain_pems):
        blob.write_to_path(str(certfile), append=index > 0)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    return TLSFiles(str(certfile), str(keyfile), client_context)


@asynccontextmanager
async def tls_server(tls: TLSFiles) -> AsyncIterator[Server]:
    async with running_server(
        certfile=tls.certfile, keyfile=tls.keyfile, verify=tls.client_context
    ) as server:
        assert server.url.startswith("https://")
        yield server


async def test_many_streams_share_one_h2_connection_over_tls(tls: TLSFiles) -> None:
    async with (
        tls_server(tls) as server,
        httpx.AsyncClient(
            base_url=server.url,
            http2=True,
            verify=tls.client_context,
            limits=httpx.Limits(max_connections=1),
            timeout=TIMEOUT,
        ) as client,
    ):
        received = await stream_on_one_connection(server, client, "tls")

        assert len(received) == STREAMS
        for events in received:
            assert [event.data for event in events] == ["one", "two"]


async def test_http11_over_tls_still_works(tls: TLSFiles) -> None:
    async with (
        tls_server(tls) as server,
        httpx.AsyncClient(
            base_url=server.url, verify=tls.client_context, timeout=TIMEOUT
        ) as client,
    ):
        async with client.stream("GET", "/events/tls") as response:
            assert response.http_version == "HTTP/1.1"
            assert response.headers["transfer-encoding"] == "chunked"
            await server.wait_for_subscribers(1)
            await server.publish("tls", data="over h1")
            with trio.fail_after(TIMEOUT):
                (event,) = await read_events(response, 1)
        assert event.data == "over h1"


async def test_a_client_that_does_not_trust_the_certificate_is_refused(tls: TLSFiles) -> None:
    async with tls_server(tls) as server, httpx.AsyncClient(timeout=TIMEOUT) as untrusting:
        with pytest.raises(httpx.ConnectError) as refused:
            await untrusting.get(f"{server.url}/healthz")
        assert any(isinstance(e, ssl.SSLCertVerificationError) for e in causes(refused.value))


def causes(error: BaseException) -> list[BaseException]:
    """``error`` and every exception it was raised from, outermost first."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


@pytest.mark.parametrize(("given", "missing"), [("--certfile", "keyfile"), ("--keyfile", "cert")])
def test_cli_needs_both_certfile_and_keyfile(tls: TLSFiles, given: str, missing: str) -> None:
    result = subprocess.run(
        [*SERVE, given, tls.certfile], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 2
    assert "--certfile and --keyfile go together" in result.stderr


@pytest.mark.slow
def test_cli_refuses_a_missing_or_mismatched_certificate(tls: TLSFiles, tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.pem")
    for certfile, keyfile in [(missing, tls.keyfile), (tls.certfile, tls.certfile)]:
        result = subprocess.run(
            [*SERVE, "--port", "0", "--certfile", certfile, "--keyfile", keyfile],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 1
        assert re.search(r"trio-sse serve: cannot load the TLS certificate", result.stderr)
        assert "Traceback" not in result.stderr


async def test_serve_refuses_half_a_tls_configuration(tls: TLSFiles) -> None:
    app = create_app(broker=MemoryBroker())
    with pytest.raises(ValueError, match="both certfile and keyfile"):
        await serve(app, port=0, certfile=tls.certfile)


async def test_cli_serves_h2_over_tls(tls: TLSFiles) -> None:
    command = [*SERVE, "--port", "0", "--certfile", tls.certfile, "--keyfile", tls.keyfile]
    async with listening_process(command) as (process, (host, port)):
        await _h2_round_trip(f"https://{host}:{port}", tls, subscribers=3)
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(TIMEOUT):
            await process.wait()
    assert process.returncode == 0


@pytest.mark.slow
async def test_cli_workers_serve_tls(tls: TLSFiles, redis_server: RedisServer) -> None:
    command = [
        *SERVE,
        "--port",
        "0",
        "--broker",
        redis_server.url,
        "--workers",
        "2",
        "--certfile",
        tls.certfile,
        "--keyfile",
        tls.keyfile,
    ]
    async with listening_process(command, startup_timeout=WORKERS_START) as (_, (host, port)):
        await _h2_round_trip(f"https://{host}:{port}", tls, subscribers=4)


async def _h2_round_trip(url: str, tls: TLSFiles, *, subscribers: int) -> None:
    """Open h2 streams on one connection to ``url``, publish once, check each got it."""
    topic = f"t{uuid.uuid4().hex[:8]}"
    received: list[str] = []
    async with (
        httpx.AsyncClient(
            base_url=url,
            http2=True,
            verify=tls.client_context,
            limits=httpx.Limits(max_connections=1),
            timeout=TIMEOUT,
        ) as client,
        # Publishes go on a connection of their own: a request issued by httpcore on
        # an h2 connection whose other streams wait for data was seen to stall with
        # the Redis broker (a raw h2 client got its answer on such a connection).
        httpx.AsyncClient(base_url=url, verify=tls.client_context, timeout=TIMEOUT) as publisher,
    ):
        opened = trio.Semaphore(0)

        async def subscribe() -> None:
            async with client.stream("GET", f"/events/{topic}") as response:
                assert response.http_version == "HTTP/2"
                chunks = response.aiter_raw()
                # The first chunk is written after the subscription is in place.
                await anext(chunks)
                opened.release()
                decoder = Decoder()
                async for chunk in chunks:
                    if events := decoder.feed(chunk):
                        received.append(events[0].data)
                        break

        with trio.fail_after(TIMEOUT * 2):
            async with trio.open_nursery() as nursery:
                for _ in range(subscribers):
                    nursery.start_soon(subscribe)
                for _ in range(subscribers):
                    await opened.acquire()
                response = await publisher.post(f"/events/{topic}", json={"data": "secure"})
                assert response.status_code == 202
        assert received == ["secure"] * subscribers


@pytest.mark.slow
async def test_a_client_that_stalls_its_tls_handshake_is_cut(tls: TLSFiles) -> None:
    # serve()'s tls_handshake_timeout, short here (TLS_HANDSHAKE_TIMEOUT, 10 s, by default).
    handshake_timeout = 1.5
    async with running_server(
        certfile=tls.certfile,
        keyfile=tls.keyfile,
        verify=tls.client_context,
        serve_options={"tls_handshake_timeout": handshake_timeout},
    ) as server:
        host, port = server.url.removeprefix("https://").split(":")
        stream = await trio.open_tcp_stream(host, int(port))
        start = trio.current_time()
        async with stream:
            # Not a byte of ClientHello: the server can only time the handshake out.
            with trio.fail_after(handshake_timeout + TIMEOUT):
                assert await stream.receive_some() == b""
        assert trio.current_time() - start >= handshake_timeout - 0.1
