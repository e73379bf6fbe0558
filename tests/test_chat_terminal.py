"""The chat client (examples/chat/client.py) as a person uses it: in a terminal (a pty).

The client is a subprocess whose stdin, stdout and stderr are the pty's terminal end;
the test types on the other end and reads what the terminal shows, against a real
chat server on a loopback port.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import termios
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from tests.examples import EXAMPLES
from tests.test_chat import load_chat
from tests.test_cli_client import free_port
from tests.wire import TIMEOUT, Server, SSEConnection, running_server
from trio_sse import MemoryBroker

CLIENT = str(EXAMPLES / "chat" / "client.py")


class Terminal:
    """The other end of the pty a client runs in: what it shows, and a keyboard."""

    def __init__(self, master: int, process: trio.Process) -> None:
        self.process = process
        self._screen = trio.lowlevel.FdStream(master)
        self.shown = ""

    async def type(self, keys: str) -> None:
        await self._screen.send_all(keys.encode())

    async def wait_for_line(self, pattern: str) -> re.Match[str]:
        """The first line shown that matches ``pattern`` (a regex), waiting for it."""
        with trio.fail_after(TIMEOUT):
            while True:
                for line in self.shown.split("\r\n"):
                    if match := re.fullmatch(pattern, line):
                        return match
                await self._read()

    async def wait_for_exit(self) -> int:
        """The exit status, once the client has exited; reads the screen to its end."""
        with trio.fail_after(TIMEOUT):
            while await self._read():
                pass
            return await self.process.wait()

    async def _read(self) -> bool:
        try:
            data = await self._screen.receive_some()
        except trio.BrokenResourceError:  # EIO: the client exited, its terminal is gone
            return False
        self.shown += data.decode(errors="replace")
        return bool(data)

    async def aclose(self) -> None:
        await self._screen.aclose()


def _take_terminal() -> None:
    # In the child, in its own session (start_new_session): make the pty its
    # controlling terminal, so that Ctrl-C typed on it is a SIGINT, as in a shell.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


@asynccontextmanager
async def terminal_client(url: str, *args: str) -> AsyncIterator[Terminal]:
    """The chat client in a new terminal, on the room at ``url``; killed if still running."""
    master, slave = os.openpty()
    command = [sys.executable, CLIENT, "--url", url, *args]
    try:
        process = await trio.lowlevel.open_process(
            command,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            preexec_fn=_take_terminal,
            # The time of a message is shown in local time: UTC here, as the server.
            env={**os.environ, "TZ": "UTC"},
        )
    finally:
        os.close(slave)
    terminal = Terminal(master, process)
    try:
        yield terminal
    finally:
        if process.returncode is None:
            process.kill()
            with trio.move_on_after(TIMEOUT):
                await process.wait()
        await terminal.aclose()


def sent_at(event_data: str) -> str:
    """``HH:MM`` (UTC) of a message's ``sent`` field."""
    sent: str = json.loads(event_data)["sent"]
    return sent[11:16]


async def test_a_line_typed_is_sent_and_shown_with_the_others_then_ctrl_d_leaves() -> None:
    broker = MemoryBroker()
    async with running_server(app=load_chat().create_chat_app(broker), broker=broker) as server:
        room = await SSEConnection.open(server, "/chat")
        await server.wait_for_subscribers(1)
        async with terminal_client(f"{server.url}/chat", "--user", "ana") as terminal:
            # Typed once the client is in the room (before, it would not see its own line).
            await terminal.wait_for_line(r"\* Welcome to the chat! \(2 online\)")
            await terminal.type("hello, room\n")
            _, said = await room.read_events(2)
            assert json.loads(said.data).items() >= {"user": "ana", "text": "hello, room"}.items()
            # The terminal echoes what is typed; the room's copy comes with its time.
            await terminal.wait_for_line(re.escape(f"[{sent_at(said.data)}] ana: hello, room"))

            response = await server.http.post("/chat", json={"user": "ben", "text": "hi ana"})
            assert response.status_code == 202
            other = (await room.read_events(3))[2]  # the events so far, in order
            await terminal.wait_for_line(re.escape(f"[{sent_at(other.data)}] ben: hi ana"))

            await terminal.type("\x04")  # Ctrl-D at the start of a line: the input ends
            assert await terminal.wait_for_exit() == 0
            assert "Traceback" not in terminal.shown
        await room.close_fin()


async def test_ctrl_c_leaves_with_status_130_and_no_traceback() -> None:
    broker = MemoryBroker()
    app = load_chat().create_chat_app(broker)
    async with (
        running_server(app=app, broker=broker) as server,
        terminal_client(f"{server.url}/chat", "--user", "ana") as terminal,
    ):
        await terminal.wait_for_line(r"\* Welcome to the chat! \(1 online\)")
        await terminal.type("\x03")  # Ctrl-C: the terminal sends SIGINT
        assert await terminal.wait_for_exit() == 128 + signal.SIGINT
        assert "Traceback" not in terminal.shown
        await server.wait_for_subscribers(0)


async def test_without_user_the_client_asks_for_a_name_on_the_terminal() -> None:
    broker = MemoryBroker()
    async with running_server(app=load_chat().create_chat_app(broker), broker=broker) as server:
        room = await SSEConnection.open(server, "/chat")
        await server.wait_for_subscribers(1)
        async with terminal_client(f"{server.url}/chat") as terminal:
            await terminal.wait_for_line(r"Your name: ")
            await terminal.type("cleo\n")
            await terminal.wait_for_line(r"\* Welcome to the chat! \(2 online\)")
            await terminal.type("hey\n\x04")
            assert await terminal.wait_for_exit() == 0
        _, said = await room.read_events(2)
        assert json.loads(said.data).items() >= {"user": "cleo", "text": "hey"}.items()
        await room.close_fin()


async def test_a_refused_message_says_why_and_exits_1() -> None:
    broker = MemoryBroker()
    async with running_server(app=load_chat().create_chat_app(broker), broker=broker) as server:
        async with terminal_client(f"{server.url}/chat", "--user", "ana") as terminal:
            await terminal.wait_for_line(r"\* Welcome to the chat! \(1 online\)")
            await terminal.type("x" * 2001 + "\n")
            assert await terminal.wait_for_exit() == 1
        last = terminal.shown.rstrip("\r\n").rsplit("\r\n", 1)[-1]
        assert last == (
            'chat: the server refused the message: "text" is longer than 2000 characters'
        )
        assert broker.statistics().published == 0


async def test_a_closed_port_says_the_server_cannot_be_reached_and_exits_1() -> None:
    url = f"http://127.0.0.1:{free_port()}/chat"
    async with terminal_client(url, "--user", "ana") as terminal:
        assert await terminal.wait_for_exit() == 1
    assert re.fullmatch(rf"chat: cannot reach {re.escape(url)}: .+\r\n", terminal.shown), (
        terminal.shown
    )


def run_piped(server: Server, typed: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, CLIENT, "--url", f"{server.url}/chat", *args],
        input=typed,
        capture_output=True,
        timeout=60,
        check=False,
    )


async def test_piped_lines_are_sent_in_order_and_the_end_of_the_input_leaves() -> None:
    broker = MemoryBroker()
    async with running_server(app=load_chat().create_chat_app(broker), broker=broker) as server:
        room = await SSEConnection.open(server, "/chat")
        await server.wait_for_subscribers(1)
        typed = b"one\n\n   \ntwo\r\nthree"  # blank lines are skipped; the last has no end
        result = await trio.to_thread.run_sync(run_piped, server, typed, "--user", "ana")
        assert result.returncode == 0, result.stderr
        assert result.stderr == b""
        events = await room.read_events(4)
        await room.close_fin()
    assert [json.loads(e.data)["text"] for e in events[1:]] == ["one", "two", "three"]


async def test_piped_input_without_user_is_refused() -> None:
    async with running_server() as server:
        result = await trio.to_thread.run_sync(run_piped, server, b"hi\n")
    assert result.returncode == 2
    assert result.stderr.decode().endswith("error: give your name with --user NAME\n")
