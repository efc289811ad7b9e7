"""The socket's wake-up threshold (SO_RCVLOWAT) while a long block payload arrives: set
for the waits of a long rest, back to 1 when the payload is in, fails or is cancelled."""

from __future__ import annotations

import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.lowlevel
import pytest
from anyio.abc import SocketStream

from aiotmc import ReadTimeout
from aiotmc._wake_threshold import BULK_MAX, BULK_MIN, wake_threshold
from aiotmc.protocol.ieee4882 import block_header
from aiotmc.transports.tcp import SocketTransport
from tests.transports.test_tcp import raw_peer

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="SO_RCVLOWAT is used on Linux")

PAYLOAD = bytes(range(256)) * (3 * 1024 * 1024 // 256)  # 3 MiB: a long rest
FIRST = 64 * 1024  # what the peer sends before it holds back


def lowat(sock: socket.socket) -> int:
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT)


async def threshold_raised(sock: socket.socket) -> None:
    """Until the reader has taken the first part and waits for the rest (no task is
    blocked before the loop has polled the socket, so wait until the state is seen)."""
    while lowat(sock) != BULK_MAX:
        await anyio.lowlevel.checkpoint()


@linux_only
def test_threshold_covers_only_bytes_the_payload_guarantees() -> None:
    with (
        socket.create_server(("127.0.0.1", 0)) as listener,
        socket.create_connection(listener.getsockname()) as sock,
    ):
        assert wake_threshold(sock, BULK_MIN - 1, 1) == 1  # short rest: default
        assert lowat(sock) == 1
        assert wake_threshold(sock, 5 * BULK_MAX, 1) == BULK_MAX
        assert lowat(sock) == BULK_MAX
        assert wake_threshold(sock, BULK_MIN, BULK_MAX) == BULK_MIN  # never past the end
        assert lowat(sock) == BULK_MIN
        assert wake_threshold(sock, 0, BULK_MIN) == 1
        assert lowat(sock) == 1


def test_a_closed_socket_keeps_the_state_it_had() -> None:
    sock = socket.socket()
    sock.close()
    assert wake_threshold(sock, 0, BULK_MAX) == BULK_MAX


@asynccontextmanager
async def held_back_block(release: anyio.Event) -> AsyncIterator[SocketTransport]:
    """A transport whose peer answers ``BLK?`` with a 3 MiB block, of which it sends the
    header and 64 KiB, then the rest only when ``release`` is set; ``ID?`` gets ``id``."""

    async def handler(stream: SocketStream) -> None:
        async with stream:
            while True:
                try:
                    command = await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return
                if command == b"ID?\n":
                    await stream.send(b"id\n")
                    continue
                await stream.send(block_header(len(PAYLOAD)) + PAYLOAD[:FIRST])
                await release.wait()
                try:
                    await stream.send(PAYLOAD[FIRST:] + b"\n")
                except anyio.BrokenResourceError:  # the reader gave up on this connection
                    return

    async with raw_peer(handler) as port:
        transport = await SocketTransport.connect("127.0.0.1", port)
        try:
            yield transport
        finally:
            await transport.aclose()


async def read_block(transport: SocketTransport, deadline: float = float("inf")) -> bytes:
    await transport.send_message((b"BLK?\n",))
    view = await transport.receive_block(None, max_size=len(PAYLOAD), deadline=deadline)
    return bytes(view)


@linux_only
async def test_long_rest_is_awaited_with_a_raised_threshold_then_reset() -> None:
    release = anyio.Event()
    got: list[bytes] = []
    with anyio.fail_after(10):
        async with held_back_block(release) as transport:

            async def reader() -> None:
                got.append(await read_block(transport))

            sock = transport._sock
            assert sock is not None
            async with anyio.create_task_group() as tg:
                tg.start_soon(reader)
                await threshold_raised(sock)
                await anyio.wait_all_tasks_blocked()
                assert not got  # the reader waits for the rest
                release.set()
            assert got == [PAYLOAD]
            assert lowat(sock) == 1
            # a short answer after the block wakes the reader at once
            assert await transport.exchange(b"ID?\n", max_size=10) == b"id\n"


@linux_only
async def test_cancelled_wait_resets_the_threshold() -> None:
    release = anyio.Event()
    with anyio.fail_after(10):
        async with held_back_block(release) as transport:
            sock = transport._sock
            assert sock is not None
            async with anyio.create_task_group() as tg:
                tg.start_soon(read_block, transport)
                await threshold_raised(sock)
                tg.cancel_scope.cancel()
            assert lowat(sock) == 1
            release.set()
            # the cancelled read left the link out of step: the next call reconnects
            assert await transport.exchange(b"ID?\n", max_size=10) == b"id\n"
            assert transport.reconnects == 1


@linux_only
async def test_stalled_sender_below_the_threshold_meets_the_deadline() -> None:
    release = anyio.Event()  # never set: the peer stalls with 64 KiB sent
    with anyio.fail_after(10):
        async with held_back_block(release) as transport:
            sock = transport._sock
            assert sock is not None
            with pytest.raises(ReadTimeout):
                await read_block(transport, deadline=anyio.current_time() + 0.2)
            assert lowat(sock) == 1
