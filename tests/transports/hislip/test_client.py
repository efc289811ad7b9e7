"""The HiSLIP client against scripted servers: handshake faults, bad headers, stale IDs."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import pytest

import aiotmc
from aiotmc._hislip_wire import Channel
from aiotmc.protocol import hislip as hs
from aiotmc.protocol.hislip import MessageType as T
from aiotmc.sim.hislip_server import HislipServer
from aiotmc.testing import conformance_device
from aiotmc.transports.hislip import HislipTransport

Script = Callable[[Channel, Channel], Awaitable[None]]


async def _accept(listener: socket.socket) -> Channel:
    while True:
        try:
            sock, _ = listener.accept()
        except BlockingIOError:
            await anyio.wait_readable(listener)
            continue
        return Channel(sock, max_payload=1 << 20, name="scripted")


@asynccontextmanager
async def scripted(script: Script) -> AsyncIterator[str]:
    """A server on plain sockets (it reads only when the script asks) that does the
    handshake, then runs ``script(sync, async)``."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    channels: list[Channel] = []

    async def run() -> None:
        sync = await _accept(listener)
        channels.append(sync)
        await sync.receive()
        await sync.send([hs.encode_initialize_response((1, 1), 7)])
        async_ = await _accept(listener)
        channels.append(async_)
        await async_.receive()
        await async_.send([hs.encode(T.AsyncInitializeResponse, 0, 0x5858)])
        await async_.receive()
        await async_.send([hs.encode_max_message_size(T.AsyncMaximumMessageSizeResponse, 4096)])
        await script(sync, async_)
        await anyio.sleep_forever()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            yield f"TCPIP0::127.0.0.1::hislip0,{port}::INSTR"
            tg.cancel_scope.cancel()
    finally:
        for channel in channels:
            channel.close()
        listener.close()


async def test_wrong_sub_address_is_a_typed_error_not_a_hang() -> None:
    async with HislipServer(conformance_device()) as server:
        resource = f"TCPIP0::127.0.0.1::hislip5,{server.port}::INSTR"
        with anyio.fail_after(10), pytest.raises(aiotmc.ConnectError, match="sub-address"):
            async with aiotmc.open_transport(resource, connect_timeout=5):
                pass  # pragma: no cover


async def test_server_that_never_answers_initialize_times_out() -> None:
    async with HislipServer(conformance_device()) as server:
        server.silent = True
        with anyio.fail_after(10), pytest.raises(aiotmc.ConnectTimeout):
            await HislipTransport.connect(
                "127.0.0.1", server.port, "hislip0", resource="x", connect_timeout=0.3
            )


async def test_stale_and_foreign_message_ids_are_discarded() -> None:
    async def script(sync: Channel, async_: Channel) -> None:
        request = await sync.receive()
        assert request.type == T.DataEnd and request.param == hs.FIRST_MESSAGE_ID
        await sync.send([hs.encode(T.DataEnd, 0, 0x1234, b"foreign\n")])
        await sync.send([hs.encode(T.Data, 0, request.param - 2, b"stale")])
        await sync.send([hs.encode(T.Data, 0, request.param, b"mi")])
        await sync.send([hs.encode(T.DataEnd, 0, request.param, b"ne\n")])
        second = await sync.receive()
        assert second.control == 1  # RMT-delivered after the delivered answer
        third = await sync.receive()
        assert third.control == 0  # and only once
        await sync.send([hs.encode(T.DataEnd, 0, third.param, b"ok\n")])

    async with scripted(script) as resource, aiotmc.open_transport(resource) as link:
        with anyio.fail_after(10):
            assert await link.exchange(b"Q?\n", max_size=100) == b"mine\n"
            await link.send_message([b"CMD\n"])
            assert await link.exchange(b"Q?\n", max_size=100) == b"ok\n"


async def test_absurd_payload_length_breaks_the_session_with_a_typed_error() -> None:
    async def script(sync: Channel, async_: Channel) -> None:
        await sync.receive()
        await sync.send([hs.encode_header(T.DataEnd, 0, hs.FIRST_MESSAGE_ID, 1 << 63)])

    async with scripted(script) as resource, aiotmc.open_transport(resource) as link:
        with anyio.fail_after(10), pytest.raises(hs.MessageTooLarge):
            await link.exchange(b"Q?\n", max_size=100)


async def test_garbage_header_is_a_remote_protocol_error() -> None:
    async def script(sync: Channel, async_: Channel) -> None:
        await sync.receive()
        await sync.send([b"GARBAGE-GARBAGE!"])

    async with scripted(script) as resource, aiotmc.open_transport(resource) as link:
        with anyio.fail_after(10), pytest.raises(aiotmc.RemoteProtocolError, match="HiSLIP"):
            await link.exchange(b"Q?\n", max_size=100)


async def test_fatal_error_breaks_the_session() -> None:
    async def script(sync: Channel, async_: Channel) -> None:
        await sync.receive()
        await sync.send([hs.encode(T.FatalError, hs.FatalCode.UNIDENTIFIED, 0, b"bye")])

    async with scripted(script) as resource, aiotmc.open_transport(resource) as link:
        with anyio.fail_after(10):
            with pytest.raises(aiotmc.SessionBrokenError, match="bye"):
                await link.exchange(b"Q?\n", max_size=100)
            with pytest.raises(aiotmc.SessionBrokenError):
                await link.exchange(b"Q?\n", max_size=100)


async def test_silent_server_gives_read_timeout_and_status_query_timeout() -> None:
    async def script(sync: Channel, async_: Channel) -> None:
        pass

    async with scripted(script) as resource, aiotmc.open_transport(resource) as link:
        with anyio.fail_after(10):
            with pytest.raises(aiotmc.ReadTimeout):
                await link.exchange(b"Q?\n", max_size=100, deadline=anyio.current_time() + 0.2)
            with pytest.raises(aiotmc.ReadTimeout):
                await link.read_stb(deadline=anyio.current_time() + 0.2)


async def test_status_query_carries_the_last_message_id_and_remote_local_codes() -> None:
    device = conformance_device()
    async with HislipServer(device) as server, aiotmc.open(server.resource) as inst:
        with anyio.fail_after(10):
            await inst.write("*CLS")
            await inst.read_stb()
            for mode in aiotmc.RenMode:
                await inst.control_ren(mode)
        session = next(iter(server._sessions.values()))
        assert session.remote_local == [int(m) for m in aiotmc.RenMode]
    assert server.counters["status_id_mismatch"] == 0


async def test_server_that_never_reads_gives_write_timeout() -> None:
    async def script(sync: Channel, async_: Channel) -> None:
        pass  # never reads the synchronous channel again

    async with scripted(script) as resource, aiotmc.open_transport(resource) as link:
        with anyio.fail_after(10):
            with pytest.raises(aiotmc.WriteTimeout):
                await link.send_message([bytes(64 << 20)], deadline=anyio.current_time() + 0.3)
            # the server holds part of a message: the next operation device-clears first,
            # and this server answers nothing, so that times out too (typed, on time)
            with pytest.raises(aiotmc.AiotmcTimeout):
                await link.send_message([b"*CLS\n"], deadline=anyio.current_time() + 0.2)


async def test_server_closing_only_the_async_channel_breaks_the_session() -> None:
    async def script(sync: Channel, async_: Channel) -> None:
        async_.close()

    async with scripted(script) as resource, aiotmc.open_transport(resource) as link:
        with anyio.fail_after(10):
            with pytest.raises((aiotmc.SessionBrokenError, aiotmc.ConnectionLostError)):
                await link.read_stb()
            with pytest.raises(aiotmc.SessionBrokenError):
                await link.exchange(b"Q?\n", max_size=100)


async def test_service_request_storm_is_bounded_and_the_link_stays_usable() -> None:
    async def script(sync: Channel, async_: Channel) -> None:
        await async_.send([hs.encode(T.AsyncServiceRequest, 0x40 | i) for i in range(200)])
        for _ in range(200):  # each one is re-armed with a status query: answer them
            query = await async_.receive()
            assert query.type == T.AsyncStatusQuery
            await async_.send([hs.encode(T.AsyncStatusResponse, 0)])
        request = await sync.receive()
        await sync.send([hs.encode(T.DataEnd, 0, request.param, b"alive\n")])

    async with scripted(script) as resource, aiotmc.open_transport(resource) as link:
        assert link.srq is not None
        async with link.srq.subscribe(buffer=8) as events:
            with anyio.fail_after(10):
                assert await link.exchange(b"Q?\n", max_size=100) == b"alive\n"
                first = await events.receive()
        assert int(first.status) == 0x40  # a full subscriber buffer drops, never blocks


async def test_reconnect_replaces_a_lost_session() -> None:
    device = conformance_device()
    async with HislipServer(device) as server, aiotmc.open(server.resource, timeout=5) as inst:
        with anyio.fail_after(20):
            assert await inst.query("ECHO? 1") == "1"
            async with inst.service_requests() as events:
                server.disconnect_all()
                await server.wait_sessions(0)
                with pytest.raises(aiotmc.TransportError):
                    await inst.query("ECHO? 2")
                await inst.reconnect()
                assert await inst.query("ECHO? 3") == "3"
                assert inst.transport.info.details["session_id"] == "2"
                await inst.write("*CLS;*ESE 1;*SRE 32;*OPC")  # SRQ on the new session
                event = await events.receive()
            assert int(event.status) & 0x60 == 0x60


async def test_message_size_limits_are_independent_per_direction() -> None:
    """We split what we send at the server's limit (4096 here); the server splits what it
    sends at ours."""
    seen: list[hs.Message] = []

    async def script(sync: Channel, async_: Channel) -> None:
        while True:
            message = await sync.receive()
            seen.append(message)
            if message.type == T.DataEnd:
                break
        payload = b"".join(m.payload for m in seen)
        await sync.send([hs.encode(T.DataEnd, 0, message.param, b"%d\n" % len(payload))])

    async with scripted(script) as resource, aiotmc.open_transport(resource) as link:
        with anyio.fail_after(10):
            answer = await link.exchange(b"X" * 10_000 + b"\n", max_size=100)
    assert answer == b"10001\n"
    assert [m.type for m in seen] == [T.Data, T.Data, T.DataEnd]
    assert all(len(m.payload) <= 4096 - hs.HEADER_SIZE for m in seen)
    assert [m.param for m in seen] == [0xFFFFFF00, 0xFFFFFF02, 0xFFFFFF04]

    device = conformance_device()
    async with HislipServer(device) as server:
        resource = server.resource
        async with aiotmc.open_transport(resource, max_hislip_message_size=1000) as small:
            with anyio.fail_after(10):
                answer = await small.exchange(b"TEXT? 5000,12345678\n", max_size=10_000)
            (session,) = server._sessions.values()
            assert session.client_max == 1000  # the server sent at most 1000-byte messages
        assert answer.rstrip(b"\n") == b"12345678" * 625
