"""``trio-sse listen``: print the events of a stream as they arrive.

Output goes to stdout, flushed after every event:

* by default, a header line ``event: TYPE  id: ID`` (``id`` left out while the
  stream has set none), then the data as sent (several lines if it has several),
  then an empty line;
* with ``--json``, exactly one JSON object per line:
  ``{"event": TYPE, "data": DATA, "id": ID}``, where ``ID`` is the last event ID
  (``""`` until the stream sets one).

With ``--topic`` (repeatable), URL is the server and the command streams those
topics on one connection (``GET /events?topic=a&topic=b``); each event then also
shows its topic: ``topic: TOPIC  event: TYPE  id: ID``, or a ``"topic"`` key in JSON,
``TYPE`` being the event's own type (``message`` if it was published without one).

Connection news (a dropped stream, a reconnect) and errors go to stderr, one line
each, prefixed ``trio-sse listen:``. Reconnection follows
:func:`trio_sse.client.open_event_source`: after a network error or the end of a
stream, with ``Last-Event-ID``; a 204 ends the command.

Exit status: 0 after a 204, ``--max-events`` events or ``--timeout`` seconds; 1 on
a fatal error (an invalid URL or header, a status other than 200 and 204, a
Content-Type other than ``text/event-stream``, ``--max-retries`` exhausted).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Final, TextIO

import trio

from ..client import open_event_source, split_event_type, topics_url
from ..errors import ConnectionLostError, SSEError
from ..protocol import MessageEvent
from ._arguments import count, positive_seconds, seconds

__all__ = ["DESCRIPTION", "configure", "format_event", "listen", "parse_headers", "run"]

DESCRIPTION: Final = (
    "Print each event of an SSE stream as it arrives, reconnecting like a browser's "
    "EventSource. By default each event is a header line (its type and id), its data "
    "and an empty line; with --json, one JSON object per line. Exits 0 after a 204, "
    "--max-events or --timeout; 1 on a fatal error."
)

# An HTTP field name is a "token" (RFC 9110, 5.1 and 5.6.2).
_FIELD_NAME: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def parse_headers(values: Sequence[str]) -> dict[str, str]:
    """Parse ``-H 'Name: value'`` options into headers; a later name replaces an earlier one.

    Raises:
        ValueError: A value without a colon, a name that is not an HTTP token, a value
            with CR, LF, NUL or non-ASCII characters (they would split or corrupt the
            request), or ``Last-Event-ID``, which has its own option.
    """
    # Keyed by lower-case name (header names are case-insensitive), keeping the
    # spelling and value of the last one given.
    by_name: dict[str, tuple[str, str]] = {}
    for text in values:
        name, colon, value = text.partition(":")
        if not colon or not _FIELD_NAME.fullmatch(name):
            raise ValueError(f"-H {text!r}: expected 'Name: value'")
        value = value.strip(" \t")
        if not value.isascii() or any(c in value for c in "\r\n\x00"):
            raise ValueError(f"-H {text!r}: the value must be ASCII without CR, LF or NUL")
        if name.lower() == "last-event-id":
            raise ValueError("use --last-event-id ID, not -H, to send Last-Event-ID")
        by_name[name.lower()] = (name, value)
    return dict(by_name.values())


def format_event(event: MessageEvent, *, is_json: bool, has_topics: bool = False) -> str:
    """The text ``listen`` prints for ``event`` (see the module docstring).

    ``has_topics``: the event comes from a stream of several topics, whose type names
    the topic (see :func:`~trio_sse.client.split_event_type`).
    """
    topic, event_type = split_event_type(event.type) if has_topics else (None, event.type)
    if is_json:
        # ensure_ascii: the line is valid whatever encoding the terminal or pipe uses.
        fields = {"event": event_type, "data": event.data, "id": event.last_event_id}
        if topic is not None:
            fields = {"topic": topic, **fields}
        return json.dumps(fields) + "\n"
    header = f"event: {event_type}"
    if topic is not None:
        header = f"topic: {topic}  {header}"
    if event.last_event_id:
        header += f"  id: {event.last_event_id}"
    return f"{header}\n{event.data}\n\n"


async def listen(
    url: str,
    *,
    out: TextIO,
    err: TextIO,
    is_json: bool = False,
    headers: Mapping[str, str] | None = None,
    last_event_id: str | None = None,
    max_events: int | None = None,
    idle_timeout: float | None = None,
    max_retries: int | None = None,
    topics: Sequence[str] = (),
) -> int:
    """Print the events of ``url`` to ``out`` until a stop rule applies.

    Args:
        url: The event stream's URL.
        out: Where events go, flushed after each one.
        err: Where connection news and the fatal error go.
        is_json: One JSON object per line instead of the readable form.
        headers: Extra request headers.
        last_event_id: Resume after this id.
        max_events: Stop after this many events.
        idle_timeout: Passed to :func:`~trio_sse.client.open_event_source`.
        max_retries: Passed to :func:`~trio_sse.client.open_event_source`.
        topics: Stream these topics of the server at ``url`` on one connection
            (:func:`~trio_sse.client.topics_url`), showing each event's topic.

    Returns:
        The exit status: 0 for a normal stop, 1 for a fatal error.

    Cancellation: ``--timeout`` is a cancel scope around this call; cancelling it
    closes the connection, and the events printed so far stay printed.

    Backpressure: writes to ``out`` block the whole program; while they do, the stream
    is not read, so a slow reader of the output slows the stream instead of growing a
    buffer here.
    """
    is_open = False
    is_lost = False
    retries = 0  # attempts since the last open stream, as max_retries counts them

    def report(line: str) -> None:
        err.write(f"trio-sse listen: {line}\n")
        err.flush()

    def on_open() -> None:
        nonlocal is_open, is_lost, retries
        if is_lost:
            report(f"reconnected to {url}")
        is_open, is_lost, retries = True, False, 0

    def on_error(error: SSEError) -> None:
        nonlocal is_open, is_lost, retries
        # A fatal error is also raised, and reported once, below.
        if not isinstance(error, ConnectionLostError):
            return
        retries += 1
        if is_open:
            report(f"{error}; reconnecting")
        elif max_retries is None:
            # An attempt failed: without a limit the command would retry silently
            # forever against a wrong host or port; say how to stop it.
            report(f"{error}; retrying (--max-retries N gives up after N attempts)")
        else:
            report(f"{error}; retry {retries} of {max_retries}")
        is_open, is_lost = False, True

    try:
        if topics:
            url = topics_url(url, topics)
        source = open_event_source(
            url,
            headers=headers,
            last_event_id=last_event_id,
            idle_timeout=idle_timeout,
            max_retries=max_retries,
            on_open=on_open,
            on_error=on_error,
        )
    except ValueError as exc:
        report(str(exc))
        return 1
    count = 0
    try:
        async with source:
            async for event in source:
                out.write(format_event(event, is_json=is_json, has_topics=bool(topics)))
                out.flush()
                count += 1
                if max_events is not None and count >= max_events:
                    break
    except SSEError as exc:
        report(str(exc))
        return 1
    return 0


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``trio-sse listen`` to ``parser``."""
    parser.add_argument(
        "url",
        metavar="URL",
        help="the stream, e.g. http://host/events/news; with --topic, the server, e.g. http://host",
    )
    parser.add_argument(
        "--topic",
        action="append",
        default=[],
        dest="topics",
        metavar="TOPIC",
        help="stream this topic of the server at URL; repeatable: several topics share one "
        "connection (GET /events?topic=...), and each event shows its topic",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        dest="is_json",
        help='one {"event": ..., "data": ..., "id": ...} object per line',
    )
    parser.add_argument("--last-event-id", metavar="ID", help="resume after this event id")
    parser.add_argument("--max-events", type=count(1), metavar="N", help="exit 0 after N events")
    parser.add_argument("--timeout", type=seconds(), metavar="S", help="exit 0 after S seconds")
    parser.add_argument(
        "--idle-timeout",
        type=positive_seconds,
        metavar="S",
        help="reconnect after S seconds without a byte (default: wait forever)",
    )
    parser.add_argument(
        "--max-retries",
        type=count(0),
        metavar="N",
        help="give up (exit 1) after N failed reconnects in a row (default: never)",
    )
    parser.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="an extra request header; repeatable",
    )


def run(args: argparse.Namespace) -> int:
    """Run ``trio-sse listen`` with the options :func:`configure` added; return its status."""
    try:
        headers = parse_headers(args.header)
    except ValueError as exc:
        print(f"trio-sse listen: {exc}", file=sys.stderr)
        return 1
    run_listen = functools.partial(
        listen,
        args.url,
        out=sys.stdout,
        err=sys.stderr,
        is_json=args.is_json,
        headers=headers,
        last_event_id=args.last_event_id,
        max_events=None if args.max_events is None else int(args.max_events),
        idle_timeout=args.idle_timeout,
        max_retries=None if args.max_retries is None else int(args.max_retries),
        topics=args.topics,
    )

    async def listen_until_timeout() -> int:
        with trio.move_on_after(math.inf if args.timeout is None else args.timeout):
            return await run_listen()
        return 0  # --timeout is a normal end

    try:
        return trio.run(listen_until_timeout)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of stdout (`| head`) has all it wanted. Point stdout at
        # /dev/null so that the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
