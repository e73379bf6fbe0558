"""Disconnect-to-cleanup time: how long after a client's FIN or RST its subscription is gone.

    PYTHONPATH=. python benchmarks/disconnect.py [--samples 30] [--burst 100]

Runs a real Hypercorn in this process, so the broker's subscriber count can be read
without HTTP (polled every 0.1 ms). Connects raw-socket clients, closes them by FIN
or by RST, and times until the broker has no subscriber left: one client at a time
(median and max of ``--samples``), then ``--burst`` clients dropped at once.
"""

from __future__ import annotations

import argparse
import statistics

import trio

from tests.wire import Server, SSEConnection, running_server


async def close(conn: SSEConnection, how: str) -> None:
    await (conn.close_fin() if how == "fin" else conn.close_rst())


async def time_to_zero(server: Server, conns: list[SSEConnection], how: str) -> float:
    await server.wait_for_subscribers(len(conns))
    start = trio.current_time()
    for conn in conns:
        await close(conn, how)
    # A fine poll, so the figure measures the server rather than the polling.
    await server.wait_for_subscribers(0, poll=0.0001)
    return (trio.current_time() - start) * 1e3


async def main(args: argparse.Namespace) -> None:
    async with running_server() as server:
        for how in ("fin", "rst"):
            singles = [
                await time_to_zero(server, [await SSEConnection.open(server, "/events/t")], how)
                for _ in range(args.samples)
            ]
            burst = [await SSEConnection.open(server, "/events/t") for _ in range(args.burst)]
            burst_ms = await time_to_zero(server, burst, how)
            print(
                f"{how.upper()}: one client unsubscribed after {statistics.median(singles):.2f} ms "
                f"median (max {max(singles):.2f}, n={args.samples}); "
                f"{args.burst} dropped at once: all gone after {burst_ms:.1f} ms"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--burst", type=int, default=100)
    trio.run(main, parser.parse_args())
