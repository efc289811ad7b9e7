"""Client CPU of one block read, aiotmc against the blocking socket, with no other process.

``python -m benchmarks.hotblock [--backend asyncio|trio|uvloop] [--size BYTES] [-n N]``

The peer is a thread of this process that answers every line on a loopback TCP connection
with one prebuilt block (``#<n><len>``, bytes 00..FF repeating, ``\\n``). Only the calling
thread's CPU is counted (``time.thread_time``), so the peer's work and how the two take
turns drop out, which on a shared machine leaves a steadier figure than the round trips
of ``python -m benchmarks``: the kernel's copy of the payload (the same for every client)
plus what each client adds around it.

* ``floor``: a blocking socket: ``sendall``, the header, one exact-size ``recv_into``
  loop straight into the target (as the harness's floor client);
* ``instrument``: ``Instrument.query_block`` on the chosen loop.

Each into a reused buffer and into a new one.
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
import time
from typing import Any

from .client_floor import _connect, _read_block
from .figures import HOST
from .responder import block_answer

_WARMUP = 5


def _serve(size: int) -> int:
    """Start the peer thread; return the port it listens on (one connection at a time)."""
    answer = block_answer(size)
    listener = socket.create_server((HOST, 0))

    def serve() -> None:
        with listener:
            while True:
                conn, _ = listener.accept()
                with conn, conn.makefile("rb") as lines:
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    for _ in lines:
                        conn.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    return int(listener.getsockname()[1])


def _floor(port: int, size: int, n: int, reuse: bool) -> float:
    command = b"BLOCK?\n"
    into = bytearray(size) if reuse else None
    with _connect(port) as sock:
        for _ in range(_WARMUP):
            _read_block(sock, command, into)
        t0 = time.thread_time()
        for _ in range(n):
            _read_block(sock, command, into)
        return (time.thread_time() - t0) / n


async def _instrument(port: int, size: int, n: int, reuse: bool) -> float:
    import aiotmc

    into = bytearray(size) if reuse else None
    resource = f"TCPIP0::{HOST}::{port}::SOCKET"
    async with aiotmc.open(resource, max_message_size=size + 64) as inst:
        for _ in range(_WARMUP):
            await inst.query_block("BLOCK?", into=into)
        t0 = time.thread_time()
        for _ in range(n):
            await inst.query_block("BLOCK?", into=into)
        return (time.thread_time() - t0) / n


def main(argv: list[str] | None = None) -> int:
    """Print µs of client CPU per block read, floor and aiotmc."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hotblock")
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio", "uvloop"])
    parser.add_argument("--size", type=int, default=1_000_000, help="payload bytes")
    parser.add_argument("-n", type=int, default=300, help="block reads per figure")
    args = parser.parse_args(argv)
    import anyio

    size = max(1, min(args.size, 200_000_000))
    n = max(1, min(args.n, 100_000))
    backend = "trio" if args.backend == "trio" else "asyncio"
    options: dict[str, Any] = {"use_uvloop": True} if args.backend == "uvloop" else {}
    port = _serve(size)
    print(f"client CPU per {size}-byte block read, {args.backend}, peer in this process (µs):")
    for reuse in (True, False):
        which = "reused" if reuse else "new"
        floor = _floor(port, size, n, reuse)
        ours = anyio.run(
            _instrument, port, size, n, reuse, backend=backend, backend_options=options
        )
        print(f"  floor      {which:<6} buffer {floor * 1e6:9.1f}")
        print(f"  instrument {which:<6} buffer {ours * 1e6:9.1f}   ({ours / floor:.2f}x floor)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
