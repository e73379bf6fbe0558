"""A worker process of ``--processes N``: one share of the streams, steered by the parent.

Started by :mod:`._parent` as a new interpreter calling :func:`main` (not with
``-m``, so that the plan's classes are this module's, however it was imported). Its stdin
carries the parent's commands and its stdout its reports, one JSON object per line
(the first stdin line is the :class:`WorkerPlan`, pickled: parent and worker are the
same program, so nothing untrusted is unpickled). Its stderr is the parent's.

Worker ``i`` of ``N`` holds subscribers ``i, i + N, i + 2N...`` (their run-wide
numbers set their ramp times and source addresses, as in one process), churns at
``churn / N`` and connects at most ``max_connecting / N`` at once. The conversation::

    parent -> worker         worker -> parent
                             {"kind": "sample", ...}   every second, from the start
                             {"kind": "ramp_done"}     every share tried once
    {"kind": "steady"}                                 (every worker's ramp is done)
    {"kind": "drain", "last": L, "failed": [...]}
                             {"kind": "drained", "is_drained": B}
    {"kind": "close"}
                             {"kind": "closed"}        every socket closed
    {"kind": "finish"}
                             {"kind": "done"}          the record is written

The worker's record (its ledgers and counts) goes to the plan's ``record_path``,
pickled, for the parent to merge. If stdin ends early (the parent died), the worker
stops at once.
"""

from __future__ import annotations

import base64
import json
import math
import os
import pickle
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from ..errors import LoadTestError
from ._board import SeqBoard
from ._connection import Address
from ._http import Target
from ._monitor import SAMPLE_INTERVAL
from ._options import LoadTestOptions
from ._setup import check_file_limit, finish_record, new_record
from ._subscribers import Subscribers
from ._tally import Tally

__all__ = ["MAX_MESSAGE", "WorkerPlan", "decode_message", "encode_message", "main"]

# A message is a line of JSON; the longest is the drain's list of failed seqs, which
# a run at saturation can make long. Anything longer is a broken peer.
MAX_MESSAGE = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class WorkerPlan:
    """What one worker runs: its share, where the board and its record live, when to start."""

    options: LoadTestOptions
    index: int
    address: Address
    target: Target
    board_path: Path
    record_path: Path
    run_id: str
    # time.monotonic() at the run's start (the machine's one monotonic clock).
    start_monotonic: float


def encode_message(kind: str, **fields: Any) -> bytes:
    """One message, as the line that carries it."""
    return json.dumps({"kind": kind, **fields}, separators=(",", ":")).encode() + b"\n"


def decode_message(line: bytes) -> dict[str, Any]:
    """One line's message.

    Raises:
        LoadTestError: Not a message.
    """
    try:
        message = json.loads(line)
    except ValueError:
        message = None
    if not isinstance(message, dict) or not isinstance(message.get("kind"), str):
        raise LoadTestError(f"not a load-test worker message: {line[:80]!r}")
    return message


class Lines:
    """A stream's lines, each at most :data:`MAX_MESSAGE` bytes."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def next(self) -> bytes | None:
        """The next line, without its newline; ``None`` at the end of the stream."""
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                return line
            if len(self._buffer) > MAX_MESSAGE:
                raise LoadTestError("a load-test worker message is over 64 MiB")
            data = await self._stream.receive_some(65536)
            if not data:
                return None
            self._buffer += data


class _Worker:
    def __init__(self, plan: WorkerPlan, commands: Lines, out: trio.abc.SendStream) -> None:
        o = plan.options
        self._plan = plan
        self._o = o
        self._commands = commands
        self._out = out
        self._send_lock = trio.Lock()
        self.record = new_record(o)
        self.record.run_id = plan.run_id
        self.board = SeqBoard(o.processes, own=plan.index, path=plan.board_path)
        self.tally = Tally(o, self.record, self.board)
        self.subscribers = Subscribers(
            o,
            self.tally,
            address=plan.address,
            target=plan.target,
            numbers=range(plan.index, o.connections, o.processes),
            churn=o.churn / o.processes,
            max_connecting=math.ceil(o.max_connecting / o.processes),
        )
        # The parent's start, on this process's Trio clock.
        self.start = trio.current_time() - (time.monotonic() - plan.start_monotonic)
        self.record.clock_start = self.start

    async def send(self, kind: str, **fields: Any) -> None:
        async with self._send_lock:
            await self._out.send_all(encode_message(kind, **fields))

    async def expect(self, kind: str) -> dict[str, Any]:
        line = await self._commands.next()
        if line is None:
            raise LoadTestError("the load test's parent process went away")
        message = decode_message(line)
        if message["kind"] != kind:
            raise LoadTestError(f"expected {kind!r} from the parent, got {message['kind']!r}")
        return message

    async def send_sample(self) -> None:
        taken = self.tally.window.take()
        await self.send(
            "sample",
            connections=len(self.subscribers.open),
            delivered=taken.delivered,
            errors=taken.errors,
            drops=taken.drops,
            latency=taken.latency.to_data(),
        )

    async def sample_every_second(self) -> None:
        tick = self.start
        while True:
            tick += SAMPLE_INTERVAL
            await trio.sleep_until(tick)
            await self.send_sample()

    async def run(self) -> None:
        subscribers = self.subscribers
        async with trio.open_nursery() as sampling:
            sampling.start_soon(self.sample_every_second)
            async with trio.open_nursery() as streams:
                async with trio.open_nursery() as load:
                    load.start_soon(subscribers.ramp, streams, self.start)
                    await subscribers.ramp_done.wait()
                    await self.send("ramp_done")
                    await self.expect("steady")
                    load.start_soon(subscribers.churn)
                    drain = await self.expect("drain")
                    load.cancel_scope.cancel()
                self.tally.excuse_failed(frozenset(drain["failed"]))
                last = int(drain["last"])
                if not self._o.is_publishing:
                    self.record.last_seq = last
                subscribers.start_drain(last)
                with trio.move_on_after(self._o.drain_timeout):
                    await subscribers.all_caught_up.wait()
                await self.send("drained", is_drained=subscribers.all_caught_up.is_set())
                await self.expect("close")
                streams.cancel_scope.cancel()
            sampling.cancel_scope.cancel()
        await self.send_sample()
        await self.send("closed")
        await self.expect("finish")
        finish_record(self.record, None, self.tally)
        self._plan.record_path.write_bytes(pickle.dumps(self.record))
        await self.send("done")


async def _main(plan: WorkerPlan, commands: Lines) -> None:
    out = trio.lowlevel.FdStream(os.dup(sys.stdout.fileno()))
    worker = _Worker(plan, commands, out)
    try:
        await worker.run()
    finally:
        worker.board.close()
        await out.aclose()


def main() -> int:
    """Read the plan from stdin, run the share, write the record; the exit status."""

    async def start() -> None:
        commands = Lines(trio.lowlevel.FdStream(os.dup(sys.stdin.fileno())))
        first = await commands.next()
        if first is None:
            raise LoadTestError("no plan on stdin")
        plan = pickle.loads(base64.b64decode(first))  # noqa: S301 - from our own parent
        if not isinstance(plan, WorkerPlan):
            raise LoadTestError("not a worker plan")
        check_file_limit(plan.options)
        await _main(plan, commands)

    try:
        trio.run(start)
    except LoadTestError as exc:
        sys.stderr.write(f"trio-sse loadtest worker: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
