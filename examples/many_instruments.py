"""Query many instruments at once: a bench of simulated DMMs served on real TCP sockets.

Each instrument answers after 10 ms; 50 of them answer together in about 10 ms, not 500.

    python examples/many_instruments.py [--count 50] [--backend trio]
"""

from __future__ import annotations

import argparse
import time
from contextlib import AsyncExitStack

import anyio

import aiotmc
from aiotmc.sim.devices import create_device
from aiotmc.sim.server import serve_many


async def main(count: int) -> None:
    devices = [create_device("dmm", latency=0.010) for _ in range(count)]
    async with serve_many(devices) as servers, AsyncExitStack() as stack:
        instruments = [await stack.enter_async_context(aiotmc.open(s.resource)) for s in servers]
        readings: dict[str, float] = {}

        async def measure(inst: aiotmc.Instrument) -> None:
            readings[inst.resource] = float(await inst.query("MEAS:VOLT?"))

        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for inst in instruments:
                tg.start_soon(measure, inst)
        elapsed = time.perf_counter() - start
        print(f"{len(readings)} instruments, 10 ms each, answered in {elapsed * 1000:.1f} ms")
        for resource, value in sorted(readings.items())[:3]:
            print(f"  {resource}: {value:+.6f} V")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args()
    anyio.run(main, args.count, backend=args.backend)
