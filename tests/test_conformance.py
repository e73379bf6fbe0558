"""Conformance of `trio-sse listen URL --json` to WHATWG HTML 9.2 ("Server-sent events").

Each case is a scripted HTTP exchange, served byte for byte by a raw Trio server
(``ScriptedServer``), and the command's ``listen()`` runs against it in this process
(a few cases also run the real command as a subprocess, end to end). The
cases follow the parsing and connection rules of the spec and the scenarios of
web-platform-tests' ``eventsource/`` directory (the names in brackets), re-stated
as bytes on the wire and the JSON lines that must come out:

* parsing: BOM, line ends, comments, field parsing, ``data``/``event``/``id``/``retry``
  fields, dispatch, UTF-8 decoding, an unterminated event at the end;
* the connection: request headers, ``Last-Event-ID`` on reconnection, ``retry``
  delays, 204, other statuses, Content-Type, redirects (a reconnection requests
  the original URL again), a connection reset mid-stream.

A parsing case ends the way a browser test would: the server closes the stream,
the command reconnects (the case checks the ``Last-Event-ID`` it sends), and the
second answer is 204, which must end the command with status 0. Most cases start
with ``retry: 20`` so that reconnection is quick; those where that line would
change the meaning (a BOM must be the first bytes; ``retry`` cases) keep the
default reconnection time of 3 s.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial

import pytest
import trio

from trio_sse.cli._listen import listen as run_listen

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "trio_sse.cli", "listen", "--json"]
# The slowest case waits out the default reconnection time (3 s) once.
CASE_TIMEOUT = 20
FAST_RETRY = b"retry: 20\n"
_MAX_HEAD = 16 * 1024

Event = tuple[str, str, str]  # (event type, data, last event id), as the JSON line has them


@dataclass(frozen=True)
class Request:
    """A request as the server saw it."""

    target: str
    headers: dict[str, bytes]
    arrived: float  # trio.current_time()


@dataclass
class Exchange:
    """The answers to the 1st, 2nd, ... request of a case; every request after them gets 204."""

    answers: Sequence[bytes]
    requests: list[Request] = field(default_factory=list)
    closed: list[float] = field(default_factory=list)  # when each answer's connection closed


def response(
    body: bytes = b"",
    *,
    status: str = "200 OK",
    content_type: str | None = "text/event-stream",
    headers: Sequence[tuple[str, str]] = (),
    chunked: bool = False,
    complete: bool = True,
) -> bytes:
    """An HTTP/1.1 response, framed by chunked encoding or by closing the connection.

    ``complete=False`` leaves out the last chunk, so the body ends in a protocol error.
    """
    head = [f"HTTP/1.1 {status}"]
    if content_type is not None:
        head.append(f"Content-Type: {content_type}")
    head += [f"{name}: {value}" for name, value in headers]
    if chunked:
        head.append("Transfer-Encoding: chunked")
        # Uneven chunk sizes, so chunk boundaries fall inside lines, CRLFs and characters.
        pieces, at, size = [], 0, 1
        while at < len(body):
            piece = body[at : at + size]
            pieces.append(b"%x\r\n%s\r\n" % (len(piece), piece))
            at, size = at + size, size % 5 + 1
        body = b"".join(pieces) + (b"0\r\n\r\n" if complete else b"")
    else:
        head.append("Connection: close")
    return "\r\n".join(head).encode() + b"\r\n\r\n" + body


NO_CONTENT = response(status="204 No Content", content_type=None)


class ScriptedServer:
    """Serves ``/<case>`` (and ``/<case>/...``) from that case's :class:`Exchange`."""

    def __init__(self) -> None:
        self.exchanges: dict[str, Exchange] = {}
        self.port = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            head = bytearray()
            while b"\r\n\r\n" not in head:
                chunk = await stream.receive_some()
                if not chunk or len(head) > _MAX_HEAD:
                    return
                head += chunk
            lines = bytes(head).split(b"\r\n\r\n", 1)[0].split(b"\r\n")
            target = lines[0].split(b" ")[1].decode()
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers[name.decode().lower()] = value.strip()
            exchange = self.exchanges[target.split("/")[1]]
            index = len(exchange.requests)
            exchange.requests.append(Request(target, headers, trio.current_time()))
            answer = exchange.answers[index] if index < len(exchange.answers) else NO_CONTENT
            await stream.send_all(answer)
        exchange.closed.append(trio.current_time())


@asynccontextmanager
async def scripted_server() -> AsyncIterator[ScriptedServer]:
    server = ScriptedServer()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, host="127.0.0.1"), server.handle, 0)
        server.port = listeners[0].socket.getsockname()[1]
        yield server
        nursery.cancel_scope.cancel()


@dataclass(frozen=True)
class Run:
    code: int
    events: list[Event]
    stderr: str


async def listen(
    server: ScriptedServer,
    name: str,
    exchange: Exchange,
    *,
    last_event_id: str | None = None,
    as_process: bool = False,
) -> Run:
    """Run `trio-sse listen --json` on ``/<name>`` until it exits by itself.

    In this process (the command's own ``listen()``, with its output captured) unless
    ``as_process``: a process costs about a second of start-up, and the cases are many.
    A few cases run the real command end to end (``test_cases_through_the_real_command``).
    """
    server.exchanges[name] = exchange
    url = f"http://127.0.0.1:{server.port}/{name}"
    with trio.fail_after(CASE_TIMEOUT):
        if as_process:
            options = [] if last_event_id is None else ["--last-event-id", last_event_id]
            done = await trio.run_process(
                [*CLI, url, *options], capture_stdout=True, capture_stderr=True, check=False
            )
            code, stdout, stderr = done.returncode, done.stdout.decode(), done.stderr.decode()
        else:
            out, err = io.StringIO(), io.StringIO()
            code = await run_listen(
                url, out=out, err=err, is_json=True, last_event_id=last_event_id
            )
            stdout, stderr = out.getvalue(), err.getvalue()
    events = []
    for line in stdout.splitlines():
        fields = json.loads(line)
        assert set(fields) == {"event", "data", "id"}, line
        events.append((fields["event"], fields["data"], fields["id"]))
    return Run(code, events, stderr)


@pytest.fixture
async def server() -> AsyncIterator[ScriptedServer]:
    async with scripted_server() as running:
        yield running


# --- Parsing ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ParseCase:
    name: str
    body: bytes
    events: list[Event]
    # The Last-Event-ID of the reconnection; None: the header must be absent.
    reconnect_id: str | None = None
    fast: bool = True  # start the body with FAST_RETRY
    content_type: str = "text/event-stream"


M = "message"
PARSE_CASES = [
    ParseCase("onmessage", b"data: data\n\n", [(M, "data", "")]),
    # Line ends: LF, CRLF, CR, mixed, and a CRLF split between two chunks.
    ParseCase("lf", b"data: a\ndata: b\n\n", [(M, "a\nb", "")]),
    ParseCase("crlf", b"data: a\r\ndata: b\r\n\r\n", [(M, "a\nb", "")]),
    ParseCase("cr", b"data: a\rdata: b\r\r", [(M, "a\nb", "")]),
    ParseCase(
        "newlines",  # [format-newlines]
        b"data:test\r\ndata\ndata:test\r\n\r",
        [(M, "test\n\ntest", "")],
    ),
    ParseCase(
        "cr-then-lf-is-one-line-end", b"data: a\r\n\r\ndata: b\r\r", [(M, "a", ""), (M, "b", "")]
    ),
    # BOM: one leading BOM is skipped; a second one is part of the first field name.
    ParseCase(
        "bom", b"\xef\xbb\xbfdata: 1\n\ndata: 2\n\n", [(M, "1", ""), (M, "2", "")], fast=False
    ),
    ParseCase(  # [format-bom-2]
        "bom-2",
        b"\xef\xbb\xbf\xef\xbb\xbfdata: 1\n\ndata: 2\n\ndata: 3\n\n",
        [(M, "2", ""), (M, "3", "")],
        fast=False,
    ),
    ParseCase("bom-later-is-data", b"data: \xef\xbb\xbfx\n\n", [(M, "\ufeffx", "")]),
    # Comments. [format-comments]
    ParseCase(
        "comments",
        b"data:1\r:\0\n:\r\ndata:2\n:"
        + b"x" * 2049
        + b"\rdata:3\n:data:fail\r:"
        + b"y" * 2049
        + b"\ndata:4\n\n",
        [(M, "1\n2\n3\n4", "")],
    ),
    ParseCase("comment-only", b": hello\n\n: heartbeat\n\n", []),
    # Field parsing. [format-field-parsing], [format-leading-space]
    ParseCase(
        "field-parsing",
        b"data:test\n data\ndata\nfoobar:xxx\njustsometext\n:thisisacommentyay\ndata:test\n\n",
        [(M, "test\n\ntest", "")],
    ),
    ParseCase(
        "one-leading-space-removed", b"data:\t1\ndata:  2\ndata: 3 \n\n", [(M, "\t1\n 2\n3 ", "")]
    ),
    ParseCase("colon-in-value", b"data: a: b:c\n\n", [(M, "a: b:c", "")]),
    ParseCase(
        "field-names-are-case-sensitive", b"Data: no\nDATA: no\ndata: yes\n\n", [(M, "yes", "")]
    ),
    ParseCase(
        "unknown-field", b"data: a\nfoo: bar\nretry2: 5\n\n", [(M, "a", "")]
    ),  # [format-field-unknown]
    # data. [format-field-data], [format-data-before-final-empty-line]
    ParseCase(
        "data-lines-joined",
        b"data:\n\ndata\ndata\n\ndata:test\n\n",
        [(M, "", ""), (M, "\n", ""), (M, "test", "")],
    ),
    ParseCase("empty-data-dispatches-empty-string", b"data\n\n", [(M, "", "")]),
    ParseCase("one-trailing-lf-removed", b"data: a\ndata:\n\n", [(M, "a\n", "")]),
    ParseCase("no-data-no-event", b"event: x\n\nid\n\n\n\n", []),
    ParseCase("unterminated-event-discarded", b"data: 1\n\ndata: 2\n", [(M, "1", "")]),
    ParseCase("unterminated-line-discarded", b"data: 1\n\ndata: 2", [(M, "1", "")]),
    ParseCase("null-character", b"data:\x00\n\n", [(M, "\x00", "")]),  # [format-null-character]
    # event. [format-field-event], [format-field-event-empty]
    ParseCase("event-type", b"event: test\ndata: x\n\n", [("test", "x", "")]),
    ParseCase("event-empty-is-message", b"event: \ndata: x\n\n", [(M, "x", "")]),
    ParseCase(
        "event-type-resets-after-dispatch",
        b"event: a\ndata: 1\n\ndata: 2\n\n",
        [("a", "1", ""), (M, "2", "")],
    ),
    ParseCase("event-type-reset-by-empty-dispatch", b"event: a\n\ndata: 2\n\n", [(M, "2", "")]),
    ParseCase("event-last-one-wins", b"event: a\nevent: b\ndata: 1\n\n", [("b", "1", "")]),
    ParseCase("event-named-message-or-error", b"event: error\ndata: 1\n\n", [("error", "1", "")]),
    # id. [format-field-id], [format-field-id-2], [format-field-id-3], [format-field-id-null]
    ParseCase("id", b"id: 1\ndata: a\n\n", [(M, "a", "1")], reconnect_id="1"),
    ParseCase(
        "id-persists",
        b"id: 1\ndata: 1\n\ndata: 2\n\nid: 2\ndata: 3\n\ndata: 4\n\n",
        [(M, "1", "1"), (M, "2", "1"), (M, "3", "2"), (M, "4", "2")],
        reconnect_id="2",
    ),
    ParseCase(
        "id-resets-with-colon",
        b"id: 1\ndata: 1\n\nid:\ndata: 2\n\ndata: 3\n\n",
        [(M, "1", "1"), (M, "2", ""), (M, "3", "")],
    ),
    ParseCase(
        "id-resets-without-colon",
        b"id: 1\ndata: 1\n\nid\ndata: 2\n\ndata: 3\n\n",
        [(M, "1", "1"), (M, "2", ""), (M, "3", "")],
    ),
    ParseCase("id-with-nul-ignored-1", b"id: a\x00\ndata: hello\n\n", [(M, "hello", "")]),
    ParseCase(
        "id-with-nul-ignored-2",
        b"id: 7\n\nid: \x00x\ndata: hello\n\n",
        [(M, "hello", "7")],
        reconnect_id="7",
    ),
    ParseCase("id-with-nul-ignored-3", b"id: x\x00x\ndata: hello\n\n", [(M, "hello", "")]),
    ParseCase(
        "id-set-by-event-without-data",  # the id counts even though nothing is dispatched
        b"id: 5\n\ndata: x\n\n",
        [(M, "x", "5")],
        reconnect_id="5",
    ),
    ParseCase(
        "id-of-unterminated-event-not-sent",
        b"id: 1\ndata: a\n\nid: 2\ndata: b\n",
        [(M, "a", "1")],
        reconnect_id="1",
    ),
    ParseCase(
        "id-non-ascii",
        "id: \u2026\ndata: x\n\n".encode(),
        [(M, "x", "\u2026")],
        reconnect_id="\u2026",
    ),
    ParseCase(
        # The event keeps the spaces; a server reads a header value without them.
        "id-spaces-kept",
        b"id:  a b \ndata: x\n\n",
        [(M, "x", " a b ")],
        reconnect_id="a b",
    ),
    # UTF-8, always, whatever the charset parameter says. [format-utf-8]
    ParseCase(
        "utf-8-despite-charset",
        "data:ok\u2026\n\n".encode(),
        [(M, "ok\u2026", "")],
        content_type="text/event-stream;charset=windows-1252",
    ),
    ParseCase("utf-8-invalid-bytes", b"data: a\xffb\xc3\n\n", [(M, "a\ufffdb\ufffd", "")]),
    ParseCase("utf-8-astral", "data: \U0001f600\n\n".encode(), [(M, "\U0001f600", "")]),
    ParseCase(
        "no-unicode-line-breaks",
        "data: a\u2028b\x85c\u2029d\x0ce\x1cf\n\n".encode(),
        [(M, "a\u2028b\x85c\u2029d\x0ce\x1cf", "")],
    ),
    # retry: only ASCII digits count; it is not an event. [format-field-retry-bogus], [-empty]
    ParseCase("retry-is-not-an-event", b"retry: 20\n\ndata: x\n\n", [(M, "x", "")]),
    ParseCase("retry-bogus", b"retry: 20x\ndata: x\n\n", [(M, "x", "")], fast=False),
    ParseCase("retry-empty", b"retry\ndata: test\n\n", [(M, "test", "")], fast=False),
    # Content-Type: the essence must be text/event-stream, parameters and case aside.
    ParseCase(
        "mime-trailing-semicolon", b"data: x\n\n", [(M, "x", "")], content_type="text/event-stream;"
    ),
    ParseCase("mime-upper-case", b"data: x\n\n", [(M, "x", "")], content_type="TEXT/Event-Stream"),
    ParseCase(
        "mime-charset-utf-8",
        b"data: x\n\n",
        [(M, "x", "")],
        content_type="text/event-stream; charset=utf-8",
    ),
]


@pytest.mark.parametrize("chunked", [False, True], ids=["close-delimited", "chunked"])
@pytest.mark.parametrize("case", PARSE_CASES, ids=lambda case: case.name)
async def test_parsing(server: ScriptedServer, case: ParseCase, chunked: bool) -> None:
    body = (FAST_RETRY if case.fast else b"") + case.body
    exchange = Exchange([response(body, content_type=case.content_type, chunked=chunked)])

    run = await listen(server, case.name, exchange)

    assert run.events == case.events
    assert run.code == 0, run.stderr  # the 204 answering the reconnection ends it
    assert len(exchange.requests) == 2
    first, second = exchange.requests
    assert "last-event-id" not in first.headers
    expected_id = None if case.reconnect_id is None else case.reconnect_id.encode()
    assert second.headers.get("last-event-id") == expected_id


_THROUGH_THE_PROCESS = {"onmessage", "crlf", "comments", "id-non-ascii", "utf-8-invalid-bytes"}


@pytest.mark.parametrize(
    "case",
    [case for case in PARSE_CASES if case.name in _THROUGH_THE_PROCESS],
    ids=lambda case: case.name,
)
async def test_cases_through_the_real_command(server: ScriptedServer, case: ParseCase) -> None:
    """The same cases through `trio-sse listen --json` as a process: its argument
    parsing, output and exit status, not only the function the other cases call."""
    exchange = Exchange([response(FAST_RETRY + case.body, chunked=True)])
    run = await listen(server, f"process-{case.name}", exchange, as_process=True)
    assert run.events == case.events
    assert run.code == 0, run.stderr
    assert len(exchange.requests) == 2


async def test_a_failed_connection_through_the_real_command(server: ScriptedServer) -> None:
    exchange = Exchange([response(b"data: no\n\n", status="404 Not Found")])
    run = await listen(server, "process-404", exchange, last_event_id="7", as_process=True)
    assert (run.code, run.events, len(exchange.requests)) == (1, [], 1)
    assert "404" in run.stderr
    assert exchange.requests[0].headers["last-event-id"] == b"7"


# --- The connection ---------------------------------------------------------------------


async def test_request_headers(server: ScriptedServer) -> None:
    """[request-accept], [request-cache-control]"""
    exchange = Exchange([NO_CONTENT])
    await listen(server, "headers", exchange)
    (request,) = exchange.requests
    assert request.headers["accept"] == b"text/event-stream"
    assert request.headers["cache-control"] == b"no-cache"
    assert "last-event-id" not in request.headers


async def test_last_event_id_option_is_sent_on_the_first_request(server: ScriptedServer) -> None:
    exchange = Exchange([response(FAST_RETRY + b"data: x\n\n")])
    run = await listen(server, "resume", exchange, last_event_id="41")
    assert run.events == [(M, "x", "41")]
    assert [r.headers.get("last-event-id") for r in exchange.requests] == [b"41", b"41"]


async def test_204_stops_without_reconnecting(server: ScriptedServer) -> None:
    """[request-status-error] 204: fail the connection, no reconnection, exit 0."""
    exchange = Exchange([NO_CONTENT])
    run = await listen(server, "no-content", exchange)
    assert (run.code, run.events, len(exchange.requests)) == (0, [], 1)


@pytest.mark.parametrize(
    "status",
    [
        "205 Reset Content",
        "210 Whatever",
        "299 Whatever",
        "404 Not Found",
        "410 Gone",
        "500 Internal Server Error",
        "503 Service Unavailable",
    ],
)
async def test_other_statuses_fail_without_reconnecting(
    server: ScriptedServer, status: str
) -> None:
    """[request-status-error] any status but 200 and 204 fails the connection for good."""
    exchange = Exchange([response(b"data: no\n\n", status=status)])
    run = await listen(server, "status", exchange)
    assert (run.code, run.events, len(exchange.requests)) == (1, [], 1)
    assert status.split(maxsplit=1)[0] in run.stderr


@pytest.mark.parametrize(
    "content_type",
    [
        "text/x-bogus",
        "x bogus",
        "text/event-stream-bogus",
        "text/html",
        "text/plain;text/event-stream",
        None,
    ],
)
async def test_wrong_content_type_fails_without_reconnecting(
    server: ScriptedServer, content_type: str | None
) -> None:
    """[format-mime-bogus], [format-mime-valid-bogus]"""
    exchange = Exchange([response(b"data: no\n\n", content_type=content_type)])
    run = await listen(server, "mime", exchange)
    assert (run.code, run.events, len(exchange.requests)) == (1, [], 1)
    assert "text/event-stream" in run.stderr


@pytest.mark.parametrize(
    "status",
    [
        "301 Moved Permanently",
        "302 Found",
        "303 See Other",
        "307 Temporary Redirect",
        "308 Permanent Redirect",
    ],
)
async def test_redirects_are_followed_and_reconnection_uses_the_original_url(
    server: ScriptedServer, status: str
) -> None:
    """[request-redirect]; "reestablish the connection" fetches the original request again."""
    moved = response(
        status=status,
        content_type=None,
        headers=[("Location", "/redirect/moved"), ("Content-Length", "0")],
    )
    exchange = Exchange([moved, response(FAST_RETRY + b"id: 1\ndata: here\n\n"), moved])
    run = await listen(server, "redirect", exchange)
    assert (run.code, run.events) == (0, [(M, "here", "1")])
    targets = [request.target for request in exchange.requests]
    assert targets == ["/redirect", "/redirect/moved", "/redirect", "/redirect/moved"]
    assert exchange.requests[2].headers["last-event-id"] == b"1"


async def test_redirect_to_a_bad_answer_fails(server: ScriptedServer) -> None:
    moved = response(
        status="302 Found", content_type=None, headers=[("Location", "/redirect-bad/x")]
    )
    exchange = Exchange([moved, response(b"data: no\n\n", status="404 Not Found")])
    run = await listen(server, "redirect-bad", exchange)
    assert (run.code, run.events, len(exchange.requests)) == (1, [], 2)


async def test_reconnection_waits_the_retry_time(server: ScriptedServer) -> None:
    """ "Wait a delay equal to the reconnection time": never sooner, and jitter stays small."""
    exchange = Exchange([response(b"retry: 700\ndata: a\n\n"), response(b"retry: 20\ndata: b\n\n")])
    run = await listen(server, "retry", exchange)
    assert run.events == [(M, "a", ""), (M, "b", "")]
    waits = [exchange.requests[i + 1].arrived - exchange.closed[i] for i in range(2)]
    assert waits[0] >= 0.7
    assert waits[1] >= 0.02
    # At most 10% jitter; the rest allows for a loaded machine.
    assert waits[0] < 0.77 + 2


async def test_default_retry_is_about_three_seconds(server: ScriptedServer) -> None:
    exchange = Exchange([response(b"data: a\n\n")])
    await listen(server, "default-retry", exchange)
    wait = exchange.requests[1].arrived - exchange.closed[0]
    assert 3.0 <= wait < 3.3 + 2


async def test_broken_stream_reconnects_with_last_event_id(server: ScriptedServer) -> None:
    """A network error (here, chunked framing cut short) is not fatal: reconnect and
    resume from the last dispatched id; the half-received event is discarded."""
    broken = response(
        FAST_RETRY + b"id: 1\ndata: a\n\nid: 2\ndata: b", chunked=True, complete=False
    )
    exchange = Exchange([broken, response(FAST_RETRY + b"id: 2\ndata: b\n\n")])
    run = await listen(server, "reset", exchange)
    assert run.code == 0, run.stderr
    assert run.events == [(M, "a", "1"), (M, "b", "2")]
    assert [r.headers.get("last-event-id") for r in exchange.requests] == [None, b"1", b"2"]


async def test_an_id_no_header_can_carry_fails_clearly(server: ScriptedServer) -> None:
    """An id with a control character is a valid id, but no request can carry it:
    resuming is impossible, so the command stops with a clear error rather than
    retrying the same unsendable request forever."""
    exchange = Exchange([response(FAST_RETRY + b"id: a\x01b\ndata: x\n\n")])
    run = await listen(server, "control-id", exchange)
    assert run.events == [(M, "x", "a\x01b")]
    assert (run.code, len(exchange.requests)) == (1, 1)
    assert "Last-Event-ID" in run.stderr


@pytest.mark.parametrize(
    "url", ["http://[", "http://a b/", "http:///x", "http://x:65536/", "ftp://x/"]
)
async def test_a_bogus_url_fails_at_once(url: str) -> None:
    """[eventsource-constructor-url-bogus]: the constructor throws; nothing is retried."""
    out, err = io.StringIO(), io.StringIO()
    with trio.fail_after(CASE_TIMEOUT):
        code = await run_listen(url, out=out, err=err, is_json=True)
    assert (code, out.getvalue()) == (1, "")
    assert "url" in err.getvalue()


async def test_a_bogus_url_fails_at_once_through_the_real_command() -> None:
    with trio.fail_after(CASE_TIMEOUT):
        done = await trio.run_process(
            [*CLI, "http://x:65536/"], capture_stdout=True, capture_stderr=True, check=False
        )
    assert (done.returncode, done.stdout) == (1, b"")
    assert b"url" in done.stderr


async def test_lone_cr_at_the_end_of_a_stream_still_ends_the_line(server: ScriptedServer) -> None:
    exchange = Exchange([response(FAST_RETRY + b"data: a\r\r", chunked=True)])
    run = await listen(server, "trailing-cr", exchange)
    assert run.events == [(M, "a", "")]


def test_every_parse_case_has_a_unique_name() -> None:
    names = [case.name for case in PARSE_CASES]
    assert len(names) == len(set(names))
