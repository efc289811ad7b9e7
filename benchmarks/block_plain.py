"""The plain non-blocking socket client for block reads, on each event loop aiotmc runs on.

The reference of the rows "read N MB block ... vs the plain non-blocking socket on <loop>"
(measured by the floor client, metric ``mb_s_nb_<loop>``): what an event-loop client with
no library reaches, against the blocking floor's one ``recv`` per wait. The pattern:
send the query; one read of at most 16 KiB for the header (and the first payload bytes,
copied into the target); then ``recv_into`` straight into the target, tried first, with
the loop's wait (``loop.sock_recv_into`` on asyncio and uvloop,
``trio.lowlevel.wait_readable`` on trio) only when the socket is empty.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from .common import median
from .figures import HOST, MB, reused_buffer

__all__ = ["FIRST_READ", "plain_block_rates", "read_block"]

FIRST_READ = 16 * 1024  #: the first read: the header and the payload's start

Wait = Callable[[socket.socket, memoryview], Awaitable[int]]
Recv = Callable[[memoryview], Awaitable[int]]


async def read_block(
    sock: socket.socket,
    command: bytes,
    first: memoryview,
    into: bytearray | memoryview | None,
    recv: Recv,
) -> None:
    """One block read of the plain client: send ``command`` (short: the socket takes it at
    once); one ``recv`` into ``first`` (:data:`FIRST_READ` bytes) for the header and the
    payload's start, copied into the target (``into``, or a new buffer); then ``recv``
    straight into the target; then the terminator, unless it came already."""
    sock.sendall(command)
    n = await recv(first)
    while n < 2 or n < 2 + first[1] - 0x30:  # the header may come in pieces
        n += await recv(first[n:])
    digits = first[1] - 0x30
    length = int(bytes(first[2 : 2 + digits]))
    begin = 2 + digits
    target = memoryview(into if into is not None else bytearray(length))[:length]
    have = min(n - begin, length)
    target[:have] = first[begin : begin + have]
    pos = have
    while pos < length:
        pos += await recv(target[pos:])
    if begin + have >= n:  # the terminator has not come with the first read
        await recv(first)


def plain_block_rates(
    port: int, command: bytes, size: int, reuse: bool, reps: int
) -> dict[str, float]:
    """MB/s of the plain client on asyncio, uvloop and trio (those installed)."""
    out: dict[str, float] = {}
    loops: list[tuple[str, Any]] = [("asyncio", None)]
    try:
        import uvloop
    except ImportError:
        pass
    else:
        loops.append(("uvloop", uvloop.new_event_loop))
    for name, factory in loops:
        with asyncio.Runner(loop_factory=factory) as runner:
            seconds = runner.run(_asyncio_trial(port, command, size, reuse, reps))
        out[f"mb_s_nb_{name}"] = size / MB / seconds
    try:
        import trio
    except ImportError:
        pass
    else:
        out["mb_s_nb_trio"] = size / MB / trio.run(_trio_trial, port, command, size, reuse, reps)
    return out


async def _asyncio_trial(port: int, command: bytes, size: int, reuse: bool, reps: int) -> float:
    return await _trial(port, command, size, reuse, reps, asyncio.get_running_loop().sock_recv_into)


async def _trio_trial(port: int, command: bytes, size: int, reuse: bool, reps: int) -> float:
    import trio

    async def wait_and_recv(sock: socket.socket, view: memoryview) -> int:
        while True:
            await trio.lowlevel.wait_readable(sock)
            try:
                return sock.recv_into(view)
            except BlockingIOError:  # woken without data: wait again
                continue

    return await _trial(port, command, size, reuse, reps, wait_and_recv)


async def _trial(
    port: int, command: bytes, size: int, reuse: bool, reps: int, wait_and_recv: Wait
) -> float:
    """Median seconds per block read (one warm-up read, then ``reps``; 2 s budget)."""
    import time

    sock = socket.create_connection((HOST, port), timeout=10.0)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    first = memoryview(bytearray(FIRST_READ))
    into = reused_buffer(size) if reuse else None

    async def recv(view: memoryview) -> int:
        try:
            got = sock.recv_into(view)
        except BlockingIOError:
            got = await wait_and_recv(sock, view)
        if not got:
            raise ConnectionError("closed by the simulator")
        return got

    async def read() -> None:
        await read_block(sock, command, first, into, recv)

    try:
        await read()
        times: list[float] = []
        stop = time.perf_counter() + 2.0
        for _ in range(max(1, reps)):
            t0 = time.perf_counter()
            await read()
            times.append(time.perf_counter() - t0)
            if time.perf_counter() > stop:
                break
        return median(times)
    finally:
        sock.close()
