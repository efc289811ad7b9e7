"""Who pays for a block read on one CPU: ``python -m benchmarks.block_server``.

``[--size BYTES] [-n N] [--cpu C] [--clients floor,epoll,asyncio,aiotmc-asyncio,...]``

The main harness runs the client and the server it reads from on one CPU, so a block
read there costs the client's CPU *plus* the server's. This prints both, per block, for
several kinds of client against the two servers the harness has: aiotmc's own simulator
(asyncio + uvloop) and the independent responder (a blocking socket, one ``sendall`` of
a prebuilt block). The server's CPU is read from ``/proc/<pid>/stat`` (``utime + stime``, all
its threads), the client's with ``time.process_time``; every client reads into the
harness's reused buffer (:func:`~benchmarks.figures.reused_buffer`, placed clear of the
copy-alignment trap described in docs/performance.md, "The block target").

Clients: ``floor`` (a blocking socket, as the harness's floor), ``epoll`` (a non-blocking
socket and one ``select.epoll``, no event loop), ``asyncio`` (the plain non-blocking
client on asyncio: ``loop.sock_recv_into``) and ``aiotmc-asyncio|trio|uvloop``
(``Instrument.query_block`` into the buffer).
"""

from __future__ import annotations

import argparse
import asyncio
import select
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .block_plain import FIRST_READ, Recv, read_block
from .client_floor import _connect, _read_block
from .figures import BLOCK_QUERY, HOST, MB, reused_buffer
from .procs import ChildProcess, available_cpus, cpu_busy, pin_self, process_seconds

CLIENTS = ("floor", "epoll", "asyncio", "aiotmc-asyncio", "aiotmc-trio", "aiotmc-uvloop")
_WARMUP = 5


class Span:
    """The timed part of one client's reads: its CPU, the server's CPU and wall time."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self.client = self.server = self.wall = 0.0

    def start(self) -> None:
        """Just before the timed reads."""
        self.client, self.wall = time.process_time(), time.perf_counter()
        self.server = process_seconds(self._pid)

    def stop(self) -> None:
        """Just after them."""
        self.client = time.process_time() - self.client
        self.wall = time.perf_counter() - self.wall
        self.server = process_seconds(self._pid) - self.server


Reader = Callable[[int, bytes, int, int, Span], None]  # (port, command, size, n, span)


def _reused(size: int, first: Callable[[], object]) -> memoryview:
    first()  # one read into a new buffer, as the harness's clients do
    return reused_buffer(size)


def _floor(port: int, command: bytes, size: int, n: int, span: Span) -> None:
    with _connect(port) as sock:
        into = _reused(size, lambda: _read_block(sock, command, None))
        for _ in range(_WARMUP):
            _read_block(sock, command, into)
        span.start()
        for _ in range(n):
            _read_block(sock, command, into)
        span.stop()


def _nonblocking(port: int) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=10.0)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    return sock


def _plain_reader(recv: Recv) -> Callable[..., Awaitable[None]]:
    """``read(sock, command, into)``: the plain clients' block read
    (:func:`benchmarks.block_plain.read_block`) around ``recv``."""
    first = memoryview(bytearray(FIRST_READ))

    async def read(sock: socket.socket, command: bytes, into: bytearray | memoryview) -> None:
        await read_block(sock, command, first, into, recv)

    return read


def _epoll(port: int, command: bytes, size: int, n: int, span: Span) -> None:
    sock = _nonblocking(port)
    poller = select.epoll()
    poller.register(sock.fileno(), select.EPOLLIN)

    async def recv(view: memoryview) -> int:  # never suspends: epoll blocks the thread
        while True:
            try:
                got = sock.recv_into(view)
            except BlockingIOError:
                poller.poll(10.0)
                continue
            if not got:
                raise ConnectionError("closed by the server")
            return got

    try:
        _drive(_timed_reads(_plain_reader(recv), sock, command, size, n, span))
    finally:
        poller.close()
        sock.close()


async def _timed_reads(
    read: Callable[..., Any], sock: socket.socket, command: bytes, size: int, n: int, span: Span
) -> None:
    """One read into a new buffer (see :func:`_reused`), warm-up reads, then ``n`` timed
    ones into a reused buffer."""
    await read(sock, command, bytearray(size))
    into = reused_buffer(size)
    for _ in range(_WARMUP):
        await read(sock, command, into)
    span.start()
    for _ in range(n):
        await read(sock, command, into)
    span.stop()


def _drive(coro: Any) -> None:
    """Run a coroutine that never really suspends (the epoll client) to its end."""
    try:
        coro.send(None)
    except StopIteration:
        return
    coro.close()
    raise RuntimeError("the epoll client suspended")


def _asyncio(port: int, command: bytes, size: int, n: int, span: Span) -> None:
    async def run() -> None:
        sock = _nonblocking(port)
        loop = asyncio.get_running_loop()

        async def recv(view: memoryview) -> int:
            try:
                got = sock.recv_into(view)
            except BlockingIOError:
                got = await loop.sock_recv_into(sock, view)
            if not got:
                raise ConnectionError("closed by the server")
            return got

        try:
            await _timed_reads(_plain_reader(recv), sock, command, size, n, span)
        finally:
            sock.close()

    asyncio.run(run())


def _aiotmc(backend: str) -> Reader:
    def reader(port: int, command: bytes, size: int, n: int, span: Span) -> None:
        import anyio

        import aiotmc

        query = command.decode().strip()

        async def run() -> None:
            resource = f"TCPIP0::{HOST}::{port}::SOCKET"
            async with aiotmc.open(resource, max_message_size=size + 64) as inst:
                await inst.query_block(query)
                into = reused_buffer(size)
                for _ in range(_WARMUP):
                    await inst.query_block(query, into=into)
                span.start()
                for _ in range(n):
                    await inst.query_block(query, into=into)
                span.stop()

        options = {"use_uvloop": True} if backend == "uvloop" else {}
        name = "trio" if backend == "trio" else "asyncio"
        anyio.run(run, backend=name, backend_options=options)

    return reader


READERS: dict[str, Reader] = {
    "floor": _floor,
    "epoll": _epoll,
    "asyncio": _asyncio,
    "aiotmc-asyncio": _aiotmc("asyncio"),
    "aiotmc-trio": _aiotmc("trio"),
    "aiotmc-uvloop": _aiotmc("uvloop"),
}


def measure(reader: Reader, port: int, pid: int, size: int, n: int) -> dict[str, float]:
    """µs per block of client CPU, server CPU and wall time, and MB/s, over ``n`` reads
    (after one into a new buffer and a few warm-up ones)."""
    command = (BLOCK_QUERY.format(size=size) + "\n").encode()
    span = Span(pid)
    reader(port, command, size, n, span)
    return {
        "client_us": span.client / n * 1e6,
        "server_us": span.server / n * 1e6,
        "wall_us": span.wall / n * 1e6,
        "mb_s": size / MB / (span.wall / n),
    }


def main(argv: list[str] | None = None) -> int:
    """Print the table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.block_server")
    parser.add_argument("--size", type=int, default=MB, help="payload bytes")
    parser.add_argument("-n", type=int, default=2000, help="block reads per client")
    parser.add_argument("--cpu", type=int, default=None, help="the shared CPU")
    parser.add_argument("--clients", default=",".join(CLIENTS))
    args = parser.parse_args(argv)
    size = max(1, min(args.size, 200 * MB))
    n = max(1, min(args.n, 100_000))
    clients = [c for c in args.clients.split(",") if c]
    unknown = sorted(set(clients) - set(READERS))
    if unknown:
        parser.error(f"unknown clients {unknown}; choose from {', '.join(CLIENTS)}")
    cpu = args.cpu
    if cpu is None:
        busy = cpu_busy(0.3)
        cpu = min(available_cpus(), key=lambda c: busy.get(c, 0.0))
    logs = Path(__file__).resolve().parent / "results" / "logs"
    servers = {
        "simulator": ChildProcess(
            "simulator", "benchmarks.simserver", ["--cpu", str(cpu)], log=logs / "bs-sim.log"
        ),
        "responder": ChildProcess(
            "responder", "benchmarks.responder", ["--cpu", str(cpu)], log=logs / "bs-resp.log"
        ),
    }
    try:
        ports = {
            "simulator": servers["simulator"].start(timeout=60)["scope"],
            "responder": servers["responder"].start(timeout=60)["port"],
        }
        pin_self(cpu)
        print(f"{size}-byte block reads, client and server on CPU {cpu}, {n} reads each")
        print(f"{'server':<10} {'client':<15} {'client µs':>10} {'server µs':>10}", end="")
        print(f" {'wall µs':>9} {'MB/s':>7}")
        for name, server in servers.items():
            pid = server.pid
            assert pid is not None
            for client in clients:
                row = measure(READERS[client], ports[name], pid, size, n)
                print(
                    f"{name:<10} {client:<15} {row['client_us']:10.1f} {row['server_us']:10.1f}"
                    f" {row['wall_us']:9.1f} {row['mb_s']:7.0f}"
                )
    finally:
        for server in servers.values():
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
