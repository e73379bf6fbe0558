"""A terminal chat for the room in server.py, on trio_sse's client.

    python examples/chat/client.py --user NAME [--url http://127.0.0.1:8000/chat]
    python examples/chat/client.py --user ana --say "hi all"
    python examples/chat/client.py --listen

By default it is a terminal chat: each line typed is sent to the room as NAME, and
the room is printed as it comes: the server's welcome, then each message as
``[HH:MM] <user>: <text>``, HH:MM being the time the server accepted it, in local
time. Without ``--user`` it asks for a name when the input is a terminal. Ctrl-D
(the end of the input) leaves with status 0, Ctrl-C with 130. Lines can also be
piped in: each is sent, in order, and the end of the input leaves.

When the connection drops it says so on stderr and reconnects; the client sends
``Last-Event-ID``, so the server replays what was missed and no message is lost or
shown twice. It exits with status 1 and one line on stderr when the server cannot be
reached, or refuses the stream or a message (with the server's reason).

``--listen`` only prints the room; ``--say TEXT`` posts one message and exits.

Only trio_sse's public API is used (plus httpx for the POST). The input is read on
POSIX systems only (Trio waits for file descriptor 0 to be readable).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import stat
import sys
import threading
import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, Final

import httpx
import trio

import trio_sse
import trio_sse.client

DEFAULT_URL: Final = "http://127.0.0.1:8000/chat"
# The server sends a heartbeat comment after 15 s of silence; three missed in a row
# means the connection is dead even if TCP has not noticed.
IDLE_TIMEOUT: Final = 45.0
# Seconds a message may take to be accepted before the client gives up on the server.
SEND_TIMEOUT: Final = 10.0
# The longest input line, in bytes: far more than the server takes in a message (2000
# characters), but a bound on what is held while waiting for the end of a line.
MAX_LINE: Final = 64 * 1024
EXIT_INTERRUPTED: Final = 130


class ChatError(Exception):
    """The chat cannot go on; the message says why, in one line."""


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


def sent_time(body: dict[str, Any]) -> str | None:
    """``HH:MM`` in local time of the message's ``sent`` field, or ``None`` if it has none."""
    sent = body.get("sent")
    if not isinstance(sent, str):
        return None
    try:
        when = datetime.fromisoformat(sent)
    except ValueError:
        return None
    if when.tzinfo is None:  # not what the server sends: do not guess the zone
        return None
    return when.astimezone().strftime("%H:%M")


def render(event: trio_sse.client.MessageEvent) -> str | None:
    """The line to show for ``event``, or ``None`` for events this client ignores."""
    body = _parse(event.data)
    if event.type == "hello" and body is not None:
        return f"* {_printable(str(body.get('text', '')))} ({body.get('online', '?')} online)"
    if event.type == "message" and body is not None:
        when = sent_time(body)
        line = f"{_printable(str(body.get('user', '?')))}: {_printable(str(body.get('text', '')))}"
        return line if when is None else f"[{when}] {line}"
    if event.type in ("join", "leave") and body is not None:
        verb = "joined" if event.type == "join" else "left"
        return f"* {_printable(str(body.get('sub', '?')))} {verb}"
    if event.type == "reset":
        # The server no longer had the messages after our Last-Event-ID.
        return "* some messages were missed while disconnected"
    if event.type in ("hello", "message"):
        return f"* unreadable {event.type} event: {_printable(event.data)}"
    return None


async def listen(
    url: str,
    *,
    user: str | None = None,
    show: Callable[[str], object] = print,
    report: Callable[[str], object] | None = None,
) -> None:
    """Show the chat room at ``url`` until cancelled.

    Args:
        url: The chat stream (``GET /chat``).
        user: The name this reader is listed as online under, while it listens.
        show: Called with each line of the room.
        report: Called with each line about the connection; prints to stderr by default.

    Raises:
        ChatError: The first connection could not be made (the server is down, or
            the address is wrong). Once the stream has been open, a lost connection
            is reported and retried instead.
        trio_sse.EventSourceError: The server refused the stream (say, a 404); the
            client does not retry that.
    """
    if report is None:
        report = _print_stderr
    has_opened = is_lost = False

    def on_open() -> None:
        nonlocal has_opened, is_lost
        if is_lost:
            report("* reconnected")
        has_opened, is_lost = True, False

    def on_error(error: trio_sse.SSEError) -> None:
        nonlocal is_lost
        if not isinstance(error, trio_sse.ConnectionLostError):
            return  # about to be raised by the source itself
        if not has_opened:
            # Nobody to reconnect to yet: most likely a wrong address or a server
            # that is not running. Say so rather than retry in silence.
            raise ChatError(f"cannot reach {url}: {error}")
        is_lost = True
        report(f"* connection lost ({error}); reconnecting")

    stream_url = url if user is None else str(httpx.URL(url).copy_merge_params({"user": user}))
    async with trio_sse.client.open_event_source(
        stream_url, idle_timeout=IDLE_TIMEOUT, on_open=on_open, on_error=on_error
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


async def say(
    url: str, *, name: str, text: str, http_client: httpx.AsyncClient | None = None
) -> str:
    """Post ``text`` as ``name`` to the room at ``url``; return the message's event id.

    Args:
        url: The chat URL (``POST /chat``).
        name: Who says it.
        text: What is said.
        http_client: The client to send with (one per session saves a connection per
            message); a new one by default.

    Raises:
        ValueError: The server refused the message; its reason is the message.
        httpx.HTTPError: The server could not be reached.
    """
    if http_client is None:
        async with httpx.AsyncClient(timeout=SEND_TIMEOUT) as http:
            return await say(url, name=name, text=text, http_client=http)
    response = await http_client.post(url, json={"user": name, "text": text})
    if not response.is_success:
        try:
            reason = response.json()["error"]
        except (ValueError, KeyError, TypeError):
            reason = f"{response.status_code} {response.reason_phrase}"
        raise ValueError(f"the server refused the message: {reason}")
    event_id: str = response.json()["id"]
    return event_id


async def read_lines(fd: int = 0) -> AsyncIterator[str]:
    """The lines of the input ``fd``, without their line ends, as they are typed.

    A last line without a line end is given too. Trio waits for ``fd`` to be
    readable, then it is read in its own (blocking) mode: unlike
    :class:`trio.lowlevel.FdStream`, this never makes the terminal non-blocking,
    which it shares with stdout (a large print could then fail) and with the shell.

    Raises:
        ChatError: A line longer than :data:`MAX_LINE` bytes.
    """
    # A regular file (``< file``) is always readable, and cannot be waited for.
    can_wait = not stat.S_ISREG(os.fstat(fd).st_mode)
    pending = b""
    while True:
        if can_wait:
            await trio.lowlevel.wait_readable(fd)
        else:
            await trio.lowlevel.checkpoint()
        chunk = os.read(fd, MAX_LINE)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line.removesuffix(b"\r").decode(errors="replace")
        if len(pending) > MAX_LINE:
            raise ChatError(f"a line is longer than {MAX_LINE} bytes")
    if pending:
        yield pending.decode(errors="replace")


async def send_lines(
    url: str, *, name: str, lines: AsyncIterator[str], http_client: httpx.AsyncClient
) -> None:
    """Send each line of ``lines`` that is not blank, in order, until they end.

    Raises:
        ValueError: The server refused a message.
        httpx.HTTPError: The server could not be reached.
    """
    async for line in lines:
        if line.strip():
            await say(url, name=name, text=line, http_client=http_client)


async def chat(
    url: str,
    *,
    name: str,
    fd: int = 0,
    show: Callable[[str], object] = _print_stdout,
    report: Callable[[str], object] = _print_stderr,
) -> int:
    """The terminal chat: show the room at ``url``, send each line of ``fd`` as ``name``.

    Two tasks in one nursery, the room's reader and the input's sender; the first to
    end, or Ctrl-C (when run in the main thread), ends both.

    Returns:
        0 when the input ended, 130 on Ctrl-C.

    Raises:
        ChatError, ValueError, httpx.HTTPError, trio_sse.SSEError: As :func:`listen`
            and :func:`say` raise them; the other task has been cancelled.
    """
    failures: list[Exception] = []
    interrupted = trio.Event()
    async with httpx.AsyncClient(timeout=SEND_TIMEOUT) as http, trio.open_nursery() as nursery:

        async def until_done(task: Callable[[], Awaitable[object]]) -> None:
            # A failure is kept and raised as it is (not in an exception group), and
            # either task's end ends the chat.
            try:
                await task()
            except (ChatError, ValueError, httpx.HTTPError, trio_sse.SSEError) as exc:
                failures.append(exc)
            nursery.cancel_scope.cancel()

        nursery.start_soon(
            until_done, functools.partial(listen, url, user=name, show=show, report=report)
        )
        sender = functools.partial(
            send_lines, url, name=name, lines=read_lines(fd), http_client=http
        )
        nursery.start_soon(until_done, sender)
        # Signals can only be caught in the main thread; a test may run this in another.
        if threading.current_thread() is threading.main_thread():
            nursery.start_soon(_until_interrupted, interrupted, nursery.cancel_scope)
    if failures:
        raise failures[0]
    return EXIT_INTERRUPTED if interrupted.is_set() else 0


async def _until_interrupted(interrupted: trio.Event, scope: trio.CancelScope) -> None:
    # Ctrl-C as a signal received, not a KeyboardInterrupt raised wherever the code
    # happens to be: the tasks end by cancellation, and nothing prints a traceback.
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async for _ in signals:
            interrupted.set()
            scope.cancel()
            return


def _is_interrupt(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(KeyboardInterrupt) is not None
    return isinstance(exc, KeyboardInterrupt)


def _ask_name() -> str:
    """The user's name, asked for on the terminal."""
    while True:
        try:
            name = input("Your name: ").strip()
        except EOFError:
            raise ChatError("no name given") from None
        if name:
            return name


def main(argv: Sequence[str] | None = None) -> int:
    """Run the client; return the exit status."""
    parser = argparse.ArgumentParser(description="A terminal chat for the trio_sse chat room.")
    parser.add_argument("--url", default=DEFAULT_URL, help="the chat URL (GET streams, POST says)")
    parser.add_argument(
        "--user",
        "--name",
        dest="user",
        help="your name in the room (asked for if the input is a terminal)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--say", metavar="TEXT", help="post TEXT and exit")
    mode.add_argument("--listen", action="store_true", help="only print the room")
    args = parser.parse_args(argv)
    name = (args.user or "").strip()
    if not args.listen and not name and not sys.stdin.isatty():
        parser.error("give your name with --user NAME")
    try:
        if args.listen:
            trio.run(functools.partial(listen, args.url, show=_print_stdout))
            return 0
        if not name:
            name = _ask_name()
        if args.say is not None:
            trio.run(functools.partial(say, args.url, name=name, text=args.say))
            return 0
        return trio.run(functools.partial(chat, args.url, name=name))
    except (ChatError, ValueError, httpx.InvalidURL, trio_sse.SSEError) as exc:
        print(f"chat: {exc}", file=sys.stderr)
        return 1
    except httpx.HTTPError as exc:
        print(f"chat: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    except BaseException as exc:
        # Ctrl-C before the chat's own handler is in place (or in --listen and --say).
        if _is_interrupt(exc):
            return EXIT_INTERRUPTED
        raise


if __name__ == "__main__":
    sys.exit(main())
