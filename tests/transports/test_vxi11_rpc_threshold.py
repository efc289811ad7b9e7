"""The RPC channel's wake-up threshold (SO_RCVLOWAT) while the rest of a long record is
awaited (VXI-11 block reads): raised for that wait, back to 1 before any other wait."""

from __future__ import annotations

import socket
import sys

import anyio
import pytest
from anyio.abc import SocketStream

from aiotmc.protocol.oncrpc import encode_reply, record_mark, reply_header
from aiotmc.transports.vxi11.rpc import RpcChannel
from tests.transports.test_tcp import raw_peer
from tests.transports.test_wake_threshold import lowat, threshold_raised

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="SO_RCVLOWAT is used on Linux")

PAYLOAD = bytes(range(256)) * (3 * 1024 * 1024 // 256)  # a 3 MiB result: a long rest
FIRST = 64 * 1024  # what the peer sends before it holds back


async def test_long_record_rest_is_awaited_with_a_raised_threshold() -> None:
    release = anyio.Event()

    async def handler(stream: SocketStream) -> None:
        async with stream:
            call = await stream.receive()  # the large call
            xid = int.from_bytes(call[4:8], "big")
            record = reply_header(xid) + PAYLOAD
            await stream.send(record_mark(len(record)) + record[:FIRST])
            await release.wait()
            await stream.send(record[FIRST:])
            call = await stream.receive()  # then a small one
            reply = encode_reply(int.from_bytes(call[4:8], "big"), b"ok")
            await stream.send(record_mark(len(reply)) + reply)

    async with raw_peer(handler) as port:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setblocking(False)
        channel = RpcChannel(sock, prog=0x0607AF, vers=1, max_record=8 << 20)
        target = bytearray(len(PAYLOAD))
        got: list[tuple[int, int] | None] = []

        def place(prefix: memoryview, length: int) -> tuple[int, memoryview]:
            return 24, memoryview(target)[: length - 24]

        async def read() -> None:
            [xid] = await channel.send_calls([(11, [b"\0" * 4])])
            _, placed = await channel.reply_placed(xid, place)
            got.append(placed)

        try:
            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(read)
                    await threshold_raised(sock)  # the reader waits for the rest
                    assert not got
                    release.set()
                assert got == [(24, len(PAYLOAD))]
                assert target == PAYLOAD
                # the next receive puts the threshold back before it waits
                [xid] = await channel.send_calls([(12, [])])
                assert bytes(await channel.reply(xid)) == b"ok"
                assert lowat(sock) == 1
        finally:
            await channel.aclose()
