"""``aiotmc.sync`` ``*IDN?`` round trip beside PyVISA + pyvisa-py's, same server, same run.

The SimServer runs in a child process (as in ``python -m benchmarks``); each client makes
``--queries`` round trips after a warm-up; the median per call is printed, in microseconds.
Usage: ``python scripts/bench_sync.py [--queries 3000] [--backend asyncio|trio]``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any


def _serve(conn: Connection) -> None:
    import anyio

    from aiotmc.sim.devices import create_device
    from aiotmc.sim.server import SimServer

    async def main() -> None:
        async with SimServer(create_device("dmm")) as server:
            conn.send(server.port)
            await anyio.to_thread.run_sync(conn.recv)  # until the parent says stop

    anyio.run(main)


def _median_us(query: Callable[[], Any], count: int) -> float:
    for _ in range(min(200, count)):
        query()
    samples = []
    for _ in range(count):
        t0 = time.perf_counter()
        query()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=3000)
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args()
    os.environ["AIOTMC_SYNC_BACKEND"] = args.backend

    import pyvisa

    import aiotmc.sync

    parent, child = multiprocessing.Pipe()
    server = multiprocessing.Process(target=_serve, args=(child,), daemon=True)
    server.start()
    try:
        if not parent.poll(30):
            raise SystemExit("the simulator did not start within 30 s")
        name = f"TCPIP::127.0.0.1::{parent.recv()}::SOCKET"
        rm = pyvisa.ResourceManager("@py")
        visa = rm.open_resource(name, read_termination="\n", write_termination="\n")
        with aiotmc.sync.open(name) as inst:
            sync_us = _median_us(lambda: inst.query("*IDN?"), args.queries)
            visa_us = _median_us(lambda: visa.query("*IDN?"), args.queries)
        visa.close()
        print(
            f"*IDN? round trip (median): aiotmc.sync[{args.backend}] {sync_us:.0f} us, "
            f"pyvisa-py {visa_us:.0f} us, ratio {sync_us / visa_us:.2f}x"
        )
    finally:
        parent.send("stop")
        server.join(10)


if __name__ == "__main__":
    main()
