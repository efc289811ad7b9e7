"""Pure client CPU of one ``*IDN?`` exchange, layer by layer, with no scheduler in the way.

``python -m benchmarks.hotpath [--profile] [--backend asyncio|trio|uvloop]``

The peer is the other end of a ``socketpair`` in the same thread: its answer is queued
*before* each query, so every ``recv_into`` finds data and no context switch or event-loop
wait happens. What is left is the Python cost of each layer:

* ``floor``: blocking ``send`` + ``recv_into``;
* ``transport``: ``SocketTransport.send_message`` + ``receive_message``;
* ``instrument``: ``Instrument.query`` (lock, timeout scope, encode/decode on top).

``--profile`` adds a cProfile listing of ``Instrument.query``, sorted by own time.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import socket
import sys
import time
from typing import Any

ANSWER = b"aiotmc,SIM-SCOPE,0001,0.1\n"
_DRAIN_EVERY = 100  # the peer drains the queries it received every this many exchanges


def _floor(n: int) -> float:
    a, b = socket.socketpair()
    buffer = bytearray(4096)
    with a, b:
        t0 = time.process_time()
        for i in range(n):
            b.send(ANSWER)
            a.send(b"*IDN?\n")
            a.recv_into(buffer)
            if i % _DRAIN_EVERY == 0:
                b.recv(1 << 20)
        return (time.process_time() - t0) / n


async def _layers(n: int, profiler: cProfile.Profile | None) -> dict[str, float]:
    import aiotmc
    from aiotmc.transports.tcp import SocketTransport

    a, b = socket.socketpair()
    a.setblocking(False)
    transport = SocketTransport(a, host="peer", port=0, resource="TCPIP0::peer::0::SOCKET")
    inst = aiotmc.Instrument(transport)
    out: dict[str, float] = {}
    try:
        for label in ("transport", "instrument"):
            # Pass 0 warms up, pass 1 is measured, pass 2 (only with --profile) is profiled.
            for rep in range(3 if profiler is not None and label == "instrument" else 2):
                if rep == 2 and profiler is not None:
                    profiler.enable()
                t0 = time.process_time()
                for i in range(n):
                    b.send(ANSWER)
                    if label == "transport":
                        await transport.send_message((b"*IDN?\n",))
                        await transport.receive_message(max_size=1 << 20)
                    else:
                        await inst.query("*IDN?")
                    if i % _DRAIN_EVERY == 0:
                        b.recv(1 << 20)
                if rep == 1:
                    out[label] = (time.process_time() - t0) / n
                if profiler is not None:
                    profiler.disable()
    finally:
        await inst.aclose()
        b.close()
    return out


def main(argv: list[str] | None = None) -> int:
    """Print µs of client CPU per exchange for each layer."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hotpath")
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio", "uvloop"])
    parser.add_argument("-n", type=int, default=20000, help="exchanges per layer")
    parser.add_argument("--profile", action="store_true", help="cProfile Instrument.query")
    args = parser.parse_args(argv)
    import anyio

    backend = "trio" if args.backend == "trio" else "asyncio"
    options: dict[str, Any] = {"use_uvloop": True} if args.backend == "uvloop" else {}
    profiler = cProfile.Profile() if args.profile else None
    n = max(1, min(args.n, 1_000_000))
    floor = _floor(n)
    layers = anyio.run(_layers, n, profiler, backend=backend, backend_options=options)
    print(f"client CPU per *IDN? exchange, {args.backend}, no context switches (µs):")
    print(f"  floor (blocking socket)        {floor * 1e6:7.2f}")
    for label, value in layers.items():
        print(f"  {label:<30} {value * 1e6:7.2f}   ({value / floor:.1f}x floor)")
    if profiler is not None:
        print("\n(profiled run of Instrument.query; cProfile inflates every call)")
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
