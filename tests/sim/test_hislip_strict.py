"""``HislipServer(strict=True)`` refuses what the lenient default only counts: a
hand-written raw-socket client sends each bad sequence to both, over real sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import pytest

from aiotmc._hislip_wire import Channel
from aiotmc.protocol import hislip as hs
from aiotmc.protocol.hislip import MessageType as T
from aiotmc.sim.hislip_server import HislipServer
from aiotmc.testing import conformance_device
from aiotmc.transports.tcp import connect_socket

FIRST = hs.FIRST_MESSAGE_ID
SERVER_MAX = 256  #: the server's maximum message size, header included
MODES = pytest.mark.parametrize("strict", [False, True], ids=["lenient", "strict"])


@dataclass
class Raw:
    """Both channels of a session, driven by hand."""

    server: HislipServer
    sync: Channel
    async_: Channel

    async def query(self, text: bytes, message_id: int, rmt: bool = False) -> hs.Message:
        """A DataEnd; the first synchronous message that comes back."""
        await self.sync.send([hs.encode(T.DataEnd, int(rmt), message_id, text)])
        return await self.sync.receive()

    async def status(self, message_id: int, rmt: bool = False) -> hs.Message:
        await self.async_.send([hs.encode(T.AsyncStatusQuery, int(rmt), message_id)])
        return await self.async_.receive()


@asynccontextmanager
async def raw_session(strict: bool, overlapped: bool = False) -> AsyncIterator[Raw]:
    device = conformance_device()
    async with HislipServer(
        device, strict=strict, max_message_size=SERVER_MAX, overlapped=overlapped
    ) as server:
        sync = Channel(
            await connect_socket("127.0.0.1", server.port, timeout=5), max_payload=1 << 16
        )
        async_ = Channel(
            await connect_socket("127.0.0.1", server.port, timeout=5), max_payload=1 << 16
        )
        try:
            with anyio.fail_after(10):
                await sync.send([hs.encode_initialize((1, 1), b"ZZ", "hislip0")])
                answer = hs.decode_initialize_response(await sync.receive())
                await async_.send([hs.encode(T.AsyncInitialize, 0, answer.session_id)])
                assert (await async_.receive()).type == T.AsyncInitializeResponse
                await async_.send([hs.encode_max_message_size(T.AsyncMaximumMessageSize, 1 << 16)])
                reply = await async_.receive()
                assert hs.decode_max_message_size(reply) == SERVER_MAX
                yield Raw(server, sync, async_)
        finally:
            sync.close()
            async_.close()


def _answer(message: hs.Message, text: bytes, message_id: int) -> None:
    assert (message.type, message.param, message.payload) == (T.DataEnd, message_id, text)


def _refused(message: hs.Message, code: int = hs.ErrorCode.UNIDENTIFIED) -> None:
    assert (message.type, message.control) == (T.Error, code), message


@MODES
async def test_rmt_delivered_without_a_delivered_response(strict: bool) -> None:
    async with raw_session(strict) as raw:
        with anyio.fail_after(10):
            reply = await raw.query(b"ECHO? 1\n", FIRST, rmt=True)  # nothing was delivered
            if strict:
                _refused(reply)
                assert b"RMT" in reply.payload
            else:
                _answer(reply, b"1\n", FIRST)
            # the session goes on: RMT once after the answer above (strict: after nothing)
            reply = await raw.query(b"ECHO? 2\n", FIRST + 2, rmt=not strict)
            _answer(reply, b"2\n", FIRST + 2)
            # twice for one answer: the second one is the violation
            await raw.sync.send([hs.encode(T.DataEnd, 1, FIRST + 4, b"*CLS\n")])  # right
            reply = await raw.query(b"ECHO? 4\n", FIRST + 6, rmt=True)
            if strict:
                _refused(reply)
            else:
                _answer(reply, b"4\n", FIRST + 6)
        counters = raw.server.counters
        assert counters["rmt_extra"] == 2
        assert counters["strict_refused"] == (2 if strict else 0)


@MODES
async def test_rmt_once_per_response_in_overlapped_mode(strict: bool) -> None:
    """Several answers in flight: each RMT-delivered reports one of them, no more."""
    async with raw_session(strict, overlapped=True) as raw:
        with anyio.fail_after(10):
            for n in range(2):  # two queries at once, both answered
                await raw.sync.send([hs.encode(T.DataEnd, 0, FIRST + 2 * n, b"ECHO? %d\n" % n)])
            for n in range(2):
                _answer(await raw.sync.receive(), b"%d\n" % n, FIRST + 2 * n)
            for n in range(2, 4):  # one RMT-delivered for each answer: right
                await raw.sync.send([hs.encode(T.DataEnd, 1, FIRST + 2 * n, b"*CLS\n")])
            reply = await raw.query(b"ECHO? 9\n", FIRST + 8, rmt=True)  # a third: for nothing
            if strict:
                _refused(reply)
            else:
                _answer(reply, b"9\n", FIRST + 8)
        assert raw.server.counters["strict_refused"] == (1 if strict else 0)


@MODES
async def test_message_ids_not_two_apart(strict: bool) -> None:
    async with raw_session(strict) as raw:
        with anyio.fail_after(10):
            _answer(await raw.query(b"ECHO? 1\n", FIRST), b"1\n", FIRST)
            reply = await raw.query(b"ECHO? 2\n", FIRST + 4, rmt=True)  # skips FIRST + 2
            if strict:
                _refused(reply)
                assert b"expected 0xffffff02" in reply.payload
            else:
                _answer(reply, b"2\n", FIRST + 4)
            # from there on, +2 again; a multi-part message with a gap is dropped whole
            await raw.sync.send([hs.encode(T.Data, int(not strict), FIRST + 8, b"ECHO? ")])
            reply = await raw.query(b"5\n", FIRST + 10)
            if strict:
                _refused(reply)  # the Data (FIRST + 8, not + 6); its DataEnd is dropped
                _answer(await raw.query(b"ECHO? 6\n", FIRST + 12), b"6\n", FIRST + 12)
            else:
                _answer(reply, b"5\n", FIRST + 10)
        assert raw.server.counters["id_gap"] == 2
        assert raw.server.counters["strict_refused"] == (2 if strict else 0)


@MODES
async def test_status_query_with_a_message_id_never_sent(strict: bool) -> None:
    async with raw_session(strict) as raw:
        with anyio.fail_after(10):
            assert (await raw.status(hs.NO_MESSAGE_ID)).type == T.AsyncStatusResponse
            _answer(await raw.query(b"ECHO? 1\n", FIRST), b"1\n", FIRST)
            reply = await raw.status(FIRST)  # the last one: right, and MAV (unread)
            assert (reply.type, reply.control & 0x10) == (T.AsyncStatusResponse, 0x10)
            reply = await raw.status(FIRST + 2)  # the next one, as pyvisa-py sends
            if strict:
                _refused(reply)
            else:
                assert reply.type == T.AsyncStatusResponse
            reply = await raw.status(FIRST, rmt=True)  # delivered: MAV goes
            assert (reply.type, reply.control & 0x10) == (T.AsyncStatusResponse, 0)
            reply = await raw.status(FIRST, rmt=True)  # delivered again? nothing was
            if strict:
                _refused(reply)
            else:
                assert reply.type == T.AsyncStatusResponse
        assert raw.server.counters["status_id_mismatch"] == 1
        assert raw.server.counters["strict_refused"] == (2 if strict else 0)


@MODES
async def test_message_above_the_servers_maximum_size(strict: bool) -> None:
    """The server said 256 bytes (header included): a 241-byte payload is one too many."""
    async with raw_session(strict) as raw:
        with anyio.fail_after(10):
            fits = b"ECHO? 1" + b" " * (SERVER_MAX - hs.HEADER_SIZE - 8) + b"\n"
            assert len(fits) == SERVER_MAX - hs.HEADER_SIZE
            _answer(await raw.query(fits, FIRST), b"1\n", FIRST)
            above = b"ECHO? 2" + b" " * (SERVER_MAX - hs.HEADER_SIZE - 7) + b"\n"
            reply = await raw.query(above, FIRST + 2, rmt=True)
            if strict:
                _refused(reply, hs.ErrorCode.MESSAGE_TOO_LARGE)
            else:
                _answer(reply, b"2\n", FIRST + 2)
            reply = await raw.query(b"ECHO? 3\n", FIRST + 4, rmt=not strict)
            _answer(reply, b"3\n", FIRST + 4)  # in step either way
        assert raw.server.counters["too_large"] == 1
        assert raw.server.counters["strict_refused"] == (1 if strict else 0)
