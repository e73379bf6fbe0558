"""Shutdown with open streams: SIGTERM to `trio-sse serve` with N streams open.

    PYTHONPATH=. python benchmarks/shutdown.py [--streams 50 1000]

For each N: starts the server, opens N raw-socket streams, sends SIGTERM, and
reports when every stream had ended (and how many with the terminating chunk, i.e.
cleanly) and when the process exited.
"""

from __future__ import annotations

import argparse
import signal

import httpx
import trio

from tests.test_cli import serve_process, signal_and_time
from tests.wire import SSEConnection, wait_for_remote_subscribers


async def one(streams: int) -> None:
    async with serve_process() as (process, address):
        conns = [await SSEConnection.open(address, "/events/t") for _ in range(streams)]
        async with httpx.AsyncClient(base_url=f"http://{address[0]}:{address[1]}") as http:
            await wait_for_remote_subscribers(http, streams, timeout=60)
        ended, exited = await signal_and_time(
            process, conns, signal.SIGTERM, streams_within=10, exit_within=30
        )
        clean = sum(conn.ended_cleanly for conn in conns)
        for conn in conns:
            await conn.close_fin()
    print(
        f"{streams} streams: all ended {ended * 1e3:.0f} ms after SIGTERM "
        f"({clean}/{streams} cleanly); process exited after {exited:.2f} s "
        f"(exit code {process.returncode})"
    )


async def main(args: argparse.Namespace) -> None:
    for streams in args.streams:
        await one(streams)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[50, 1000])
    trio.run(main, parser.parse_args())
