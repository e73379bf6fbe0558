"""examples/deploy's nginx config, run by a real nginx in front of two `trio-sse serve` on Redis.

The test renders the same template users get (its three placeholders filled, nothing
else changed) and includes it from a minimal main config of its own, which only puts
nginx's pid, logs and temp files in a temp dir. nginx is Debian's package: locally
the tests skip without it; with CI=true they fail (.ci/run installs it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
import pytest
import trio

from tests.redis_server import RedisServer, free_port
from tests.test_cli import SERVE, listening_process
from tests.wire import TIMEOUT, SSEConnection

TEMPLATE: Path = Path(__file__).parent.parent / "examples/deploy/nginx/trio-sse.conf.template"

# nginx starts in milliseconds; generous for a loaded 2-core machine.
NGINX_START = 10.0


# The main config around the template: what a test needs (foreground, files in a temp
# dir) and a hostile gzip setting. Everything about SSE is in the template.
MAIN_CONFIG = """\
daemon off;
worker_processes 1;
{user}
pid {prefix}/nginx.pid;
error_log {prefix}/error.log notice;
events {{
    worker_connections 256;
}}
http {{
    access_log {prefix}/access.log;
    # As a main config may have it (some compress every type): the template must
    # still stream, uncompressed, to a browser that accepts gzip.
    gzip on;
    gzip_types *;
    gzip_min_length 1;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {prefix}/trio-sse.conf;
}}
"""


def require_nginx() -> str:
    """Debian's nginx binary: skip (locally) or fail (CI=true) when there is none."""
    # /usr/sbin is not on every user's PATH.
    binary = shutil.which("nginx", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    if binary is None:
        message = "nginx is not installed (apt-get install nginx)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return binary


def render(template: str, values: Mapping[str, str]) -> str:
    """What ``envsubst '${NAME} ...'`` does with these names: each ``${NAME}`` replaced."""
    for name, value in values.items():
        placeholder = "${" + name + "}"
        assert placeholder in template, f"the template has no {placeholder}"
        template = template.replace(placeholder, value)
    left = re.findall(r"\$\{\w+\}", template)
    assert not left, f"placeholders left unfilled: {left}"
    return template


@asynccontextmanager
async def running_nginx(
    directory: Path, *, upstreams: list[tuple[str, int]]
) -> AsyncIterator[tuple[str, int]]:
    """nginx with the rendered template, in the foreground, listening on a free port."""
    binary = require_nginx()
    port = free_port()
    values = {"TRIO_SSE_LISTEN": f"127.0.0.1:{port}"}
    for index, (host, upstream_port) in enumerate(upstreams, start=1):
        values[f"TRIO_SSE_UPSTREAM_{index}"] = f"{host}:{upstream_port}"
    template = await trio.Path(TEMPLATE).read_text()
    await trio.Path(directory, "trio-sse.conf").write_text(render(template, values))
    # As root, nginx's workers would otherwise run as nobody, who cannot enter the
    # test's private temp dir.
    user = "user root root;" if os.geteuid() == 0 else ""
    main = trio.Path(directory, "nginx.conf")
    await main.write_text(MAIN_CONFIG.format(prefix=directory, user=user))
    error_log = trio.Path(directory, "error.log")
    # -e: the log for start-up errors too, before the config names one.
    command = [binary, "-p", str(directory), "-c", str(main), "-e", str(error_log)]
    process = await trio.lowlevel.open_process(command, stdin=subprocess.DEVNULL)
    try:
        with trio.fail_after(NGINX_START):
            # A separate process gives no readiness event: connect on a short beat.
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"nginx exited: {await error_log.read_text()}")
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", port)
                except OSError:
                    await trio.sleep(0.02)
                    continue
                await stream.aclose()
                break
        yield "127.0.0.1", port
    finally:
        if process.returncode is None:
            process.terminate()  # SIGTERM: nginx's fast shutdown, open streams cut
        with trio.fail_after(NGINX_START):
            await process.wait()


@dataclass
class Server:
    """One `trio-sse serve --access-log` process."""

    process: trio.Process
    address: tuple[str, int]
    log: IO[bytes]

    @property
    def url(self) -> str:
        return f"http://{self.address[0]}:{self.address[1]}"

    async def subscribers(self) -> int:
        async with httpx.AsyncClient(base_url=self.url, timeout=TIMEOUT) as http:
            count: int = (await http.get("/stats")).json()["subscribers"]
            return count

    def publish_connections(self) -> tuple[int, set[str]]:
        """How many publishes its access log shows answered, and from how many client ports."""
        self.log.seek(0)
        # Hypercorn also logs a line with status "-" for some requests: count the 202s.
        answered = rb'127\.0\.0\.1:(\d+) - - \[[^]]*\] "POST [^"]*" 202 '
        found = re.findall(answered, self.log.read())
        return len(found), {port.decode() for port in found}


@dataclass
class Deployment:
    nginx: tuple[str, int]
    servers: list[Server]

    @property
    def url(self) -> str:
        return f"http://{self.nginx[0]}:{self.nginx[1]}"

    def publish_connections(self) -> list[tuple[int, set[str]]]:
        return [server.publish_connections() for server in self.servers]

    async def wait_for_subscribers(self, count: int) -> None:
        """Until the servers together report ``count`` subscribers (bounded)."""
        with trio.fail_after(TIMEOUT):
            # Other processes: their /stats is the only view of their subscribers.
            while sum([await server.subscribers() for server in self.servers]) != count:  # noqa: ASYNC110
                await trio.sleep(0.01)


@pytest.fixture
async def deployment(redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[Deployment]:
    """Two `trio-sse serve` on one Redis, behind nginx with the example config."""
    require_nginx()
    with tempfile.TemporaryFile() as log_one, tempfile.TemporaryFile() as log_two:
        async with AsyncExitStack() as stack:
            servers = []
            for log in (log_one, log_two):
                command = [*SERVE, "--port", "0", "--broker", redis_server.url, "--access-log"]
                process, address = await stack.enter_async_context(
                    listening_process(command, log=log)
                )
                servers.append(Server(process, address, log))
            nginx = await stack.enter_async_context(
                running_nginx(tmp_path, upstreams=[server.address for server in servers])
            )
            yield Deployment(nginx, servers)


def new_topic() -> str:
    # One Redis serves the whole session: a topic of its own keeps this test apart.
    return f"deploy-{uuid.uuid4().hex[:8]}"


async def publish(http: httpx.AsyncClient, topic: str, data: str) -> str:
    response = await http.post(f"/events/{topic}", json={"data": data})
    assert response.status_code == 202, response.text
    event_id: str = response.json()["id"]
    return event_id


# Two `serve` processes to start: seconds on a 2-core machine.
@pytest.mark.slow
async def test_nginx_passes_each_event_on_before_the_next_is_published(
    deployment: Deployment,
) -> None:
    topic = new_topic()
    # As a browser asks: nginx could compress, and then hold events to fill a block.
    gzip = [("Accept-Encoding", "gzip, deflate")]
    conn = await SSEConnection.open(deployment.nginx, f"/events/{topic}", headers=gzip)
    assert conn.status == 200
    assert conn.headers["content-type"].startswith("text/event-stream")
    assert "content-encoding" not in conn.headers
    await deployment.wait_for_subscribers(1)
    ids = []
    async with httpx.AsyncClient(base_url=deployment.url, timeout=TIMEOUT) as http:
        for i in range(6):
            ids.append(await publish(http, topic, f"e{i}"))
            # Unbuffered: this event is through nginx before the next one exists.
            events = await conn.read_events(i + 1)
            assert [event.last_event_id for event in events] == ids
    assert [event.data for event in conn.events] == [f"e{i}" for i in range(6)]
    # HTTP/1.1 with keep-alive to the servers: the publishes shared connections.
    with trio.fail_after(TIMEOUT):
        # A server logs a request after answering it; its log is a file: re-read it.
        while sum(count for count, _ in deployment.publish_connections()) < 6:  # noqa: ASYNC110
            await trio.sleep(0.02)
    publishes = deployment.publish_connections()
    assert sum(len(ports) for _, ports in publishes) < 6, publishes
    await conn.close_fin()


@pytest.mark.slow
async def test_a_client_resumes_through_nginx_on_the_other_server_when_one_dies(
    deployment: Deployment,
) -> None:
    topic = new_topic()
    conn = await SSEConnection.open(deployment.nginx, f"/events/{topic}")
    await deployment.wait_for_subscribers(1)
    async with httpx.AsyncClient(base_url=deployment.url, timeout=TIMEOUT) as http:
        ids = [await publish(http, topic, f"e{i}") for i in range(3)]
        events = await conn.read_events(3)
        assert [event.last_event_id for event in events] == ids
        # Kill the server holding the stream, with no chance to end it cleanly.
        (holder,) = [server for server in deployment.servers if await server.subscribers()]
        (survivor,) = [server for server in deployment.servers if server is not holder]
        holder.process.kill()
        with trio.fail_after(TIMEOUT):
            await holder.process.wait()
        await conn.read_to_end()
        await conn.close_fin()
        # Published while the client is away: nginx sends them all to the survivor.
        ids += [await publish(http, topic, f"e{i}") for i in range(3, 6)]
        resumed = await SSEConnection.open(
            deployment.nginx, f"/events/{topic}", headers=[("Last-Event-ID", ids[2])]
        )
        assert resumed.status == 200
        assert await survivor.subscribers() == 1
        ids.append(await publish(http, topic, "live"))
        events = await resumed.read_events(4)
    # No gap, no duplicate: the three it missed, then the live one.
    assert [event.last_event_id for event in events] == ids[3:]
    assert [event.data for event in events] == ["e3", "e4", "e5", "live"]
    await resumed.close_fin()


@pytest.mark.slow
async def test_several_topics_batch_publish_and_presence_pass_through_nginx(
    deployment: Deployment,
) -> None:
    a, b = new_topic(), new_topic()
    conn = await SSEConnection.open(deployment.nginx, f"/events?topic={a}&topic={b}")
    assert conn.status == 200
    await deployment.wait_for_subscribers(2)  # one stream, a subscription per topic
    async with httpx.AsyncClient(base_url=deployment.url, timeout=TIMEOUT) as http:
        response = await http.post("/publish", json={"topics": [a, b], "data": "both"})
        assert response.status_code == 202, response.text
        events = await conn.read_events(2)
        assert sorted(event.type for event in events) == sorted([a, b])
        # Presence is answered by either server: both count the stream, wherever it is.
        with trio.fail_after(TIMEOUT):
            while (presence := (await http.get(f"/presence/{a}")).json())["streams"] != 1:  # noqa: ASYNC110
                await trio.sleep(0.02)
        assert presence["topic"] == a
    await conn.close_fin()


async def raw_get(address: tuple[str, int], target: str) -> tuple[int, bytes]:
    """GET ``target`` exactly as written (httpx would normalise ``..`` and ``//``)."""
    stream = await trio.open_tcp_stream(*address)
    async with stream:
        request = f"GET {target} HTTP/1.1\r\nHost: example\r\nConnection: close\r\n\r\n"
        await stream.send_all(request.encode())
        received = b""
        with trio.fail_after(TIMEOUT):
            while data := await stream.receive_some(65536):
                received += data
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.slow
async def test_nginx_exposes_livez_but_not_stats_or_metrics(deployment: Deployment) -> None:
    server = deployment.servers[0]
    # The routes exist on the servers' own port ...
    for path in ["/stats", "/metrics", "/healthz", "/livez"]:
        status, _ = await raw_get(server.address, path)
        assert status == 200, path
    # ... and through nginx only /livez answers.
    status, body = await raw_get(deployment.nginx, "/livez")
    assert (status, body) == (200, b'{"status":"alive"}\n')
    hidden = ["/stats", "/metrics", "/healthz", "/metrics/", "/stats?format=json", "//metrics"]
    # Paths that nginx normalises to a hidden route, or that it passes on as written
    # because they normalise into /events/ or /livez.
    hidden += [
        "/events/../metrics",
        "/events/%2e%2e/stats",
        "/events/..%2fmetrics",
        "/events/x/../../stats",
        "/metrics/../events/x",
        "/livez/../stats",
        "/%6detrics",
    ]
    for path in hidden:
        status, body = await raw_get(deployment.nginx, path)
        assert status in (403, 404), (path, status, body)
        assert b"# TYPE" not in body, path
        assert b"subscribers" not in body, path
        assert b"backplane" not in body, path


def test_the_documented_envsubst_command_leaves_nginx_variables_alone() -> None:
    """The command in the template's header renders what the test renders."""
    envsubst = shutil.which("envsubst")
    if envsubst is None:
        pytest.skip("envsubst is not installed (apt-get install gettext-base)")
    template = TEMPLATE.read_text()
    documented = re.search(r"envsubst '([^']*)'", template)
    assert documented is not None
    values = {
        "TRIO_SSE_LISTEN": "8080",
        "TRIO_SSE_UPSTREAM_1": "app1:8000",
        "TRIO_SSE_UPSTREAM_2": "app2:8000",
    }
    result = subprocess.run(
        [envsubst, documented[1]],
        input=template,
        env={**os.environ, **values, "host": "eaten"},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert result.stdout == render(template, values)
    assert "$host" in result.stdout
