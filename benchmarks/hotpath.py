"""Pure client CPU of one ``*IDN?`` exchange, layer by layer, with no scheduler in the way.

``python -m benchmarks.hotpath [--profile] [--backend asyncio|trio|uvloop]``

The peer is the other end of a ``socketpair`` in the same thread: its answer is queued
*before* each query, so no context switch happens, only one event-loop wait per exchange
(every client below waits for readiness once, as it would for a real answer). What is left
is the Python cost of each layer:

* ``floor``: blocking ``send`` + ``recv_into`` (no event loop at all);
* ``plain``: the plain non-blocking client of the round-trip benchmark on the same loop
  (a ``BufferedProtocol`` on asyncio and uvloop; ``wait_readable`` + ``recv_into`` on trio);
* ``transport``: ``SocketTransport.exchange`` (what ``Instrument.query`` calls);
* ``instrument``: ``Instrument.query`` (lock, deadline, cancellation check, encode/decode);
* ``answered`` and ``contended``: ``Instrument.query`` against a peer that answers inside
  the client's ``send`` (as a fast peer on the same CPU does), from one task and from
  :data:`TASKS` tasks sharing the instrument: the difference is the price of handing the
  exchange lock from task to task.

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
TASKS = 100  #: tasks sharing one instrument in the contended layer


class _AnsweringSocket(socket.socket):
    """The client's end of a socketpair whose peer answers inside every ``send``."""

    peer: socket.socket
    sends = 0

    def send(self, data: Any, flags: int = 0, /) -> int:
        sent = super().send(data, flags)
        self.peer.send(ANSWER)
        self.sends += 1
        if self.sends % _DRAIN_EVERY == 0:
            self.peer.recv(1 << 20)
        return sent


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


async def _plain(n: int, backend: str) -> float:
    """The plain non-blocking client of ``client_floor`` on the running loop."""
    a, b = socket.socketpair()
    message = b"*IDN?\n"
    with a, b:
        if backend == "trio":
            import trio

            a.setblocking(False)
            wait_readable = trio.lowlevel.wait_readable
            buffer = bytearray(4096)

            async def query() -> None:
                a.send(message)
                await wait_readable(a)
                a.recv_into(buffer)

        else:
            import asyncio

            from .client_floor import _LineProtocol

            loop = asyncio.get_running_loop()
            transport, protocol = await loop.create_connection(_LineProtocol, sock=a)

            async def query() -> None:
                protocol.length = 0
                transport.write(message)
                if not protocol.length or protocol.buffer[protocol.length - 1] != 0x0A:
                    protocol.waiter = loop.create_future()
                    await protocol.waiter

        try:
            for _warm_then_measure in range(2):  # the last pass counts
                t0 = time.process_time()
                for i in range(n):
                    b.send(ANSWER)
                    await query()
                    if i % _DRAIN_EVERY == 0:
                        b.recv(1 << 20)
                elapsed = (time.process_time() - t0) / n
        finally:
            if backend != "trio":
                transport.close()
    return elapsed


async def _layers(n: int, backend: str, profiler: cProfile.Profile | None) -> dict[str, float]:
    import aiotmc
    from aiotmc.transports.tcp import SocketTransport

    out = {"plain": await _plain(n, backend)}
    a, b = socket.socketpair()
    a.setblocking(False)
    transport = SocketTransport(a, host="peer", port=0, resource="TCPIP0::peer::0::SOCKET")
    inst = aiotmc.Instrument(transport)
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
                        await transport.exchange(b"*IDN?\n", max_size=1 << 20)
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
    out.update(await _contended(n))
    return out


async def _contended(n: int) -> dict[str, float]:
    """``Instrument.query`` from one task, then from :data:`TASKS` tasks, against a peer
    that answers inside ``send``."""
    import anyio

    import aiotmc
    from aiotmc.transports.tcp import SocketTransport

    a, b = socket.socketpair()
    sock = _AnsweringSocket(fileno=a.detach())
    sock.peer = b
    sock.setblocking(False)
    transport = SocketTransport(sock, host="peer", port=0, resource="TCPIP0::peer::0::SOCKET")
    inst = aiotmc.Instrument(transport)
    per_task = max(1, n // TASKS)

    async def one_task() -> None:
        for _ in range(per_task * TASKS):
            await inst.query("*IDN?")

    async def worker() -> None:
        for _ in range(per_task):
            await inst.query("*IDN?")

    async def many_tasks() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(TASKS):
                tg.start_soon(worker)

    out: dict[str, float] = {}
    try:
        for label, run in (
            ("answered", one_task),
            ("contended", many_tasks),
        ):
            await run()  # warm-up
            t0 = time.process_time()
            await run()
            out[label] = (time.process_time() - t0) / (per_task * TASKS)
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
    layers = anyio.run(_layers, n, args.backend, profiler, backend=backend, backend_options=options)
    print(f"client CPU per *IDN? exchange, {args.backend}, no context switches (µs):")
    print(f"  floor (blocking socket)        {floor * 1e6:7.2f}")
    for label, value in layers.items():
        print(f"  {label:<30} {value * 1e6:7.2f}   ({value / floor:.1f}x floor)")
    print(f"  (answered / contended: the peer answers inside send; 1 / {TASKS} tasks)")
    if profiler is not None:
        print("\n(profiled run of Instrument.query; cProfile inflates every call)")
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
