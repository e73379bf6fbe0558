"""A terminal client for the chat room in server.py, on trio_sse's client.

    python examples/chat/client.py [--url http://127.0.0.1:8000/chat] [--name NAME]
    python examples/chat/client.py --name ana --say "hi all"

Without ``--say`` it prints the room: the server's welcome, then each message as
``<user>: <text>``. When the connection drops it says so on stderr and reconnects;
the client sends ``Last-Event-ID``, so the server replays what was missed and no
message is lost or shown twice. With ``--say TEXT`` it posts one message as NAME and
exits.

Only trio_sse's public API is used (plus httpx for the POST).
"""

from __future__ import annotations

import argparse
import functools
import getpass
import json
import sys
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any, Final

import httpx
import trio

import trio_sse
import trio_sse.client

DEFAULT_URL: Final = "http://127.0.0.1:8000/chat"
# The server sends a heartbeat comment after 15 s of silence; three missed in a row
# means the connection is dead even if TCP has not noticed.
IDLE_TIMEOUT: Final = 45.0


def _printable(text: str) -> str:
    """``text`` with control characters escaped.

    Messages come from other people: raw escape sequences could move the cursor,
    recolour or retitle the terminal, or fake a line from someone else.
    """
    return "".join(
        c if c == "\n" or not unicodedata.category(c).startswith("C") else repr(c)[1:-1]
        for c in text
    )


def _parse(data: str) -> dict[str, Any] | None:
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def render(event: trio_sse.client.MessageEvent) -> str | None:
    """The line to show for ``event``, or ``None`` for events this client ignores."""
    body = _parse(event.data)
    if event.type == "hello" and body is not None:
        return f"* {_printable(str(body.get('text', '')))} ({body.get('online', '?')} online)"
    if event.type == "message" and body is not None:
        return f"{_printable(str(body.get('user', '?')))}: {_printable(str(body.get('text', '')))}"
    if event.type == "reset":
        # The server no longer had the messages after our Last-Event-ID.
        return "* some messages were missed while disconnected"
    if event.type in ("hello", "message"):
        return f"* unreadable {event.type} event: {_printable(event.data)}"
    return None


async def listen(
    url: str,
    *,
    show: Callable[[str], object] = print,
    report: Callable[[str], object] | None = None,
) -> None:
    """Show the chat room at ``url`` until cancelled.

    Args:
        url: The chat stream (``GET /chat``).
        show: Called with each line of the room.
        report: Called with each line about the connection; prints to stderr by default.

    Raises:
        trio_sse.EventSourceError: The server refused the stream (say, a 404); the
            client does not retry that.
    """
    if report is None:
        report = _print_stderr
    is_lost = False

    def on_open() -> None:
        nonlocal is_lost
        if is_lost:
            report("* reconnected")
        is_lost = False

    def on_error(error: trio_sse.SSEError) -> None:
        nonlocal is_lost
        if isinstance(error, trio_sse.ConnectionLostError):
            is_lost = True
            report(f"* connection lost ({error}); reconnecting")

    async with trio_sse.client.open_event_source(
        url, idle_timeout=IDLE_TIMEOUT, on_open=on_open, on_error=on_error
    ) as source:
        async for event in source:
            line = render(event)
            if line is not None:
                show(line)


def _print_stdout(line: str) -> None:
    # Flushed per line: piped output (a log, a test) sees each message as it comes.
    print(line, flush=True)


def _print_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


async def say(url: str, *, name: str, text: str) -> str:
    """Post ``text`` as ``name`` to the room at ``url``; return the message's event id.

    Raises:
        ValueError: The server refused the message; its reason is the message.
        httpx.HTTPError: The server could not be reached.
    """
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(url, json={"user": name, "text": text})
    if not response.is_success:
        try:
            reason = response.json()["error"]
        except (ValueError, KeyError, TypeError):
            reason = f"{response.status_code} {response.reason_phrase}"
        raise ValueError(f"the server refused the message: {reason}")
    event_id: str = response.json()["id"]
    return event_id


def _default_name() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name in this environment
        return "guest"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the client; return the exit status."""
    parser = argparse.ArgumentParser(description="A terminal client for the trio_sse chat room.")
    parser.add_argument("--url", default=DEFAULT_URL, help="the chat URL (GET streams, POST says)")
    parser.add_argument("--name", default=_default_name(), help="your name in the room")
    parser.add_argument("--say", metavar="TEXT", help="post TEXT and exit")
    args = parser.parse_args(argv)
    try:
        if args.say is not None:
            trio.run(functools.partial(say, args.url, name=args.name, text=args.say))
        else:
            trio.run(functools.partial(listen, args.url, show=_print_stdout))
    except (ValueError, httpx.InvalidURL, trio_sse.SSEError) as exc:
        print(f"chat: {exc}", file=sys.stderr)
        return 1
    except httpx.HTTPError as exc:
        print(f"chat: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
