"""The plain-socket floor: the fastest honest client without any library.

Round trips and blocks use a blocking socket (``sendall``, ``recv_into`` a reused buffer,
exact-size reads of the block payload); the round-trip trial also measures the plain
non-blocking socket client on asyncio, uvloop and trio (the reference each aiotmc backend
is held to: the faster of two patterns on asyncio and uvloop). Fan-out uses plain asyncio
with non-blocking sockets (``loop.sock_sendall``/``sock_recv_into``, which try the syscall
first).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from .block_plain import plain_block_rates
from .common import NotAvailable, Result, median, repeat, result, time_calls
from .figures import (
    BLOCK_QUERY,
    HOST,
    IDN,
    MB,
    MEAS,
    PLAIN_BLOCK_MAX,
    UPLOAD,
    UPLOAD_CHECK,
    pattern_ok,
    reused_buffer,
)

__all__ = ["FloorClient"]

_LINE = 64 * 1024  # largest text answer the floor accepts


def _connect(port: int) -> socket.socket:
    """A truly blocking socket: with a timeout set, CPython polls before every call."""
    sock = socket.create_connection((HOST, port), timeout=10.0)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(None)
    return sock


def _query(sock: socket.socket, message: bytes, buffer: bytearray) -> int:
    """Send ``message``; read one ``\\n``-terminated answer into ``buffer``; its length."""
    sock.sendall(message)
    view = memoryview(buffer)
    n = 0
    while n < _LINE:
        got = sock.recv_into(view[n:])
        if not got:
            raise ConnectionError("closed by the simulator")
        n += got
        if buffer[n - 1] == 0x0A:
            return n
    raise ValueError("answer too long")


def _recv_exact(sock: socket.socket, view: memoryview) -> None:
    pos, size = 0, len(view)
    while pos < size:
        got = sock.recv_into(view[pos:])
        if not got:
            raise ConnectionError(f"closed after {pos} of {size} bytes")
        pos += got


def _read_block(
    sock: socket.socket, command: bytes, into: bytearray | memoryview | None
) -> memoryview:
    sock.sendall(command)
    head = bytearray(12)
    hv = memoryview(head)
    _recv_exact(sock, hv[:2])
    if head[0] != 0x23 or not 0x31 <= head[1] <= 0x39:
        raise ValueError(f"not a definite block: {bytes(head[:2])!r}")
    digits = head[1] - 0x30
    _recv_exact(sock, hv[2 : 2 + digits])
    length = int(head[2 : 2 + digits])
    target = memoryview(into if into is not None else bytearray(length))[:length]
    _recv_exact(sock, target)
    _recv_exact(sock, hv[:1])
    if head[0] != 0x0A:
        raise ValueError("no terminator after the block")
    return target


class FloorClient:
    """Plain sockets, no library."""

    name = "floor"

    def versions(self) -> dict[str, str]:
        """Nothing but the interpreter."""
        return {}

    def run(self, kind: str, params: dict[str, Any]) -> Result:
        """Run one trial of ``kind``."""
        method = getattr(self, f"_{kind}", None)
        if method is None:
            raise NotAvailable("not applicable to the plain-socket floor")
        out: Result = method(params)
        return out

    def _rtt(self, p: dict[str, Any]) -> Result:
        message = (IDN + "\n").encode()
        buffer = bytearray(_LINE)
        queries = p["queries"]
        with _connect(p["scope"]) as sock:
            rtt_us, cpu_us = time_calls(
                partial(_query, sock, message, buffer), queries, p["warmup"]
            )
        out = result(rtt_us=rtt_us, cpu_us=cpu_us)
        out["metrics"].update(_nonblocking_references(p["scope"], queries, p["warmup"]))
        return out

    def _fanout(self, p: dict[str, Any]) -> Result:
        ports = p["dmm"][: p["instruments"]]
        times = asyncio.run(_fanout(ports, p["reps"]))
        return result(ms=median(times) * 1e3)

    def _block(self, p: dict[str, Any]) -> Result:
        size = p["size"]
        command = (BLOCK_QUERY.format(size=size) + "\n").encode()
        with _connect(p["scope"]) as sock:
            if not pattern_ok(_read_block(sock, command, None), size):
                raise RuntimeError("block payload does not match the test pattern")
            into = reused_buffer(size) if p["reuse"] else None
            times = repeat(lambda: _read_block(sock, command, into), p["reps"])
        out = result(mb_s=size / MB / median(times))
        if size <= PLAIN_BLOCK_MAX:
            rates = plain_block_rates(p["scope"], command, size, p["reuse"], p["reps"])
            out["metrics"].update(rates)
        return out

    def _upload(self, p: dict[str, Any]) -> Result:
        size = p["size"]
        payload = memoryview((bytes(range(256)) * (size // 256 + 1))[:size])
        digits = str(size)
        head = f"{UPLOAD}#{len(digits)}{digits}".encode()
        check = (UPLOAD_CHECK + "\n").encode()
        buffer = bytearray(_LINE)
        with _connect(p["scope"]) as sock:

            def send() -> bytes:
                sock.sendall(head)
                sock.sendall(payload)
                sock.sendall(b"\n")
                return bytes(buffer[: _query(sock, check, buffer)])

            if not send().startswith(f"{size},".encode()):
                raise RuntimeError("upload not confirmed by the device")
            times = repeat(send, p["reps"])
        return result(mb_s=size / MB / median(times))

    def _concurrent(self, p: dict[str, Any]) -> Result:
        total = p["tasks"] * p["per_task"]
        message = (IDN + "\n").encode()
        buffer = bytearray(_LINE)
        with _connect(p["scope"]) as sock:

            def everyone() -> None:
                for _ in range(total):
                    _query(sock, message, buffer)

            everyone()
            times = repeat(everyone, 3)
        return result(us_per_query=median(times) / total * 1e6)


class _LineProtocol(asyncio.BufferedProtocol):
    """Reads answers straight into one buffer; wakes a waiter at the terminator."""

    def __init__(self) -> None:
        self.buffer = bytearray(_LINE)
        self.length = 0
        self.waiter: asyncio.Future[None] | None = None
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self.buffer)[self.length :]

    def buffer_updated(self, nbytes: int) -> None:
        self.length += nbytes
        if self.buffer[self.length - 1] == 0x0A and self.waiter and not self.waiter.done():
            self.waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter and not self.waiter.done():
            self.waiter.set_exception(exc or ConnectionError("closed by the simulator"))


def _nonblocking_references(port: int, queries: int, warmup: int) -> dict[str, float]:
    """The plain non-blocking socket client on each event loop aiotmc runs on.

    The fastest pattern found for each loop, with no library. On asyncio and uvloop two
    are measured and the faster counts (``rtt_nb_<loop>_us``; both are kept in the JSON):
    a ``BufferedProtocol`` reading straight into one buffer (the loop keeps the socket
    registered and reads in its own callback), and ``recv_into`` tried right after the
    send with ``loop.sock_recv_into`` only when the socket is empty. On trio:
    ``recv_into`` first, ``trio.lowlevel.wait_readable`` only when the socket is empty.
    """
    out: dict[str, float] = {}
    loops: list[tuple[str, Any]] = [("asyncio", None)]
    try:
        import uvloop
    except ImportError:
        pass
    else:
        loops.append(("uvloop", uvloop.new_event_loop))
    for loop_name, factory in loops:
        for pattern, client in (("protocol", _protocol_rtt), ("sock", _sock_rtt)):
            with asyncio.Runner(loop_factory=factory) as runner:
                out[f"rtt_nb_{loop_name}_{pattern}_us"] = runner.run(client(port, queries, warmup))
        out[f"rtt_nb_{loop_name}_us"] = min(
            out[f"rtt_nb_{loop_name}_protocol_us"], out[f"rtt_nb_{loop_name}_sock_us"]
        )
    try:
        import trio
    except ImportError:
        pass
    else:
        out["rtt_nb_trio_us"] = trio.run(_trio_rtt, port, queries, warmup)
    return out


def _nonblocking_socket(port: int) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=10.0)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    return sock


async def _sock_rtt(port: int, queries: int, warmup: int) -> float:
    return await _looking_rtt(port, queries, warmup, asyncio.get_running_loop().sock_recv_into)


async def _looking_rtt(
    port: int,
    queries: int,
    warmup: int,
    wait_and_recv: Callable[[socket.socket, memoryview], Awaitable[int]],
) -> float:
    """``recv_into`` right after the send; ``wait_and_recv`` only when the socket is empty."""
    message = (IDN + "\n").encode()
    buffer = bytearray(_LINE)
    view = memoryview(buffer)
    with _nonblocking_socket(port) as sock:

        async def query() -> None:
            sock.send(message)
            n = 0
            while True:
                try:
                    got = sock.recv_into(view[n:])
                except BlockingIOError:
                    got = await wait_and_recv(sock, view[n:])
                if not got:
                    raise ConnectionError("closed by the simulator")
                n += got
                if buffer[n - 1] == 0x0A:
                    return

        return await _atime(query, queries, warmup)


async def _protocol_rtt(port: int, queries: int, warmup: int) -> float:
    loop = asyncio.get_running_loop()
    message = (IDN + "\n").encode()
    transport, protocol = await loop.create_connection(_LineProtocol, HOST, port)
    try:
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        async def buffered() -> None:
            protocol.length = 0
            transport.write(message)
            if not protocol.length or protocol.buffer[protocol.length - 1] != 0x0A:
                protocol.waiter = loop.create_future()
                await protocol.waiter

        return await _atime(buffered, queries, warmup)
    finally:
        transport.close()


async def _trio_rtt(port: int, queries: int, warmup: int) -> float:
    import trio

    wait_readable = trio.lowlevel.wait_readable

    async def wait_and_recv(sock: socket.socket, view: memoryview) -> int:
        while True:
            await wait_readable(sock)
            try:
                return sock.recv_into(view)
            except BlockingIOError:  # woken without data: wait again
                continue

    return await _looking_rtt(port, queries, warmup, wait_and_recv)


async def _atime(query: Any, queries: int, warmup: int) -> float:
    """Median µs of ``queries`` timed calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        await query()
    samples: list[float] = []
    clock = time.perf_counter
    for _ in range(queries):
        t0 = clock()
        await query()
        samples.append(clock() - t0)
    return median(samples) * 1e6


async def _fanout(ports: list[int], reps: int) -> list[float]:
    loop = asyncio.get_running_loop()
    message = (MEAS + "\n").encode()
    socks: list[socket.socket] = []
    try:
        for port in ports:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await loop.sock_connect(sock, (HOST, port))
        buffers = [bytearray(_LINE) for _ in socks]

        async def one(sock: socket.socket, buffer: bytearray) -> None:
            await loop.sock_sendall(sock, message)
            view = memoryview(buffer)
            n = 0
            while n < _LINE:
                got = await loop.sock_recv_into(sock, view[n:])
                if not got:
                    raise ConnectionError("closed by the simulator")
                n += got
                if buffer[n - 1] == 0x0A:
                    float(buffer[:n])
                    return
            raise ValueError("answer too long")

        async def everyone() -> None:
            await asyncio.gather(*(one(s, b) for s, b in zip(socks, buffers, strict=True)))

        await everyone()  # warm-up
        times: list[float] = []
        stop = time.perf_counter() + 2.0
        for _ in range(max(1, reps)):
            t0 = time.perf_counter()
            await everyone()
            times.append(time.perf_counter() - t0)
            if time.perf_counter() > stop:
                break
        return times
    finally:
        for sock in socks:
            sock.close()
