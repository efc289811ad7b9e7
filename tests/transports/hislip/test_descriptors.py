"""HiSLIP 2.0 GetDescriptors against the simulator (2.0 and 1.x) and a 2.0 server that
does not know the message."""

from __future__ import annotations

import socket

import anyio
import pytest

import aiotmc
from aiotmc._hislip_wire import Channel
from aiotmc.protocol import hislip as hs
from aiotmc.protocol.hislip import MessageType as T
from aiotmc.protocol.hislip_descriptors import Descriptor
from aiotmc.sim.hislip_server import HislipServer
from aiotmc.testing import conformance_device
from aiotmc.transports.hislip import HislipTransport

DESCRIPTORS = [Descriptor(1, b"AS,conformance,0,1.0"), Descriptor(0x81, bytes(range(40)))]


async def test_get_descriptors_from_a_2_0_server() -> None:
    device = conformance_device()
    async with (
        HislipServer(device, version=(2, 0), descriptors=DESCRIPTORS) as server,
        aiotmc.open(server.resource, timeout=5) as inst,
    ):
        link = inst.transport
        assert isinstance(link, HislipTransport)
        assert link.info.details["protocol_version"] == "2.0"
        with anyio.fail_after(10):
            assert await link.get_descriptors() == DESCRIPTORS
            assert await inst.query("ECHO? 1") == "1"  # the link stays in step
            assert await link.get_descriptors() == DESCRIPTORS
            assert await inst.query("ECHO? 2") == "2"
    assert server.counters["errors"] == server.counters["rmt_extra"] == 0


async def test_a_1_x_session_gives_unsupported_operation_without_asking() -> None:
    async with (
        HislipServer(conformance_device()) as server,
        aiotmc.open(server.resource, timeout=5) as inst,
    ):
        link = inst.transport
        assert isinstance(link, HislipTransport)
        assert link.info.details["protocol_version"] == "1.1"
        with anyio.fail_after(10), pytest.raises(aiotmc.UnsupportedOperation, match=r"HiSLIP 2\.0"):
            await link.get_descriptors()
        with anyio.fail_after(10):
            assert await inst.query("ECHO? 3") == "3"
    assert server.counters["errors"] == 0  # nothing was sent


async def _accept(listener: socket.socket) -> Channel:
    while True:
        try:
            sock, _ = listener.accept()
        except BlockingIOError:
            await anyio.wait_readable(listener)
            continue
        return Channel(sock, max_payload=1 << 20, name="scripted")


async def test_a_2_0_server_that_does_not_know_it_gives_unsupported_operation() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    channels: list[Channel] = []

    async def serve() -> None:
        sync = await _accept(listener)
        channels.append(sync)
        await sync.receive()
        await sync.send([hs.encode_initialize_response((2, 0), 9)])
        async_ = await _accept(listener)
        channels.append(async_)
        await async_.receive()
        await async_.send([hs.encode(T.AsyncInitializeResponse, 0, 0x5858)])
        await async_.receive()
        await async_.send([hs.encode_max_message_size(T.AsyncMaximumMessageSizeResponse, 4096)])
        request = await sync.receive()
        assert request.type == T.GetDescriptors
        await sync.send([hs.encode(T.Error, hs.ErrorCode.UNRECOGNIZED_MESSAGE_TYPE)])
        await anyio.sleep_forever()

    resource = f"TCPIP0::127.0.0.1::hislip0,{port}::INSTR"
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            async with aiotmc.open_transport(resource) as link:
                assert isinstance(link, HislipTransport)
                with anyio.fail_after(10), pytest.raises(aiotmc.UnsupportedOperation):
                    await link.get_descriptors()
            tg.cancel_scope.cancel()
    finally:
        for channel in channels:
            channel.close()
        listener.close()
