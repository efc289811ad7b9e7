"""SocketTransport against real loopback sockets: framing, faults, reconnects."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import pytest
from anyio.abc import SocketStream

import aiotmc
from aiotmc.protocol.ieee4882 import block_header, encode_block
from aiotmc.sim.devices import create_device
from aiotmc.sim.server import SimServer
from aiotmc.transports.tcp import SocketTransport

Handler = Callable[[SocketStream], Awaitable[None]]


@asynccontextmanager
async def raw_peer(handler: Handler, host: str = "127.0.0.1") -> AsyncIterator[int]:
    """A scripted instrument on loopback: ``handler`` runs once per connection."""
    listener = await anyio.create_tcp_listener(local_host=host, local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handler)
        try:
            yield port
        finally:
            tg.cancel_scope.cancel()


async def read_line(stream: SocketStream) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        data += await stream.receive(1)
    return data


async def test_slow_drip_response_is_framed() -> None:
    payload = bytes(range(256)) * 3

    async def handler(stream: SocketStream) -> None:
        async with stream:
            while True:
                try:
                    command = await read_line(stream)
                except anyio.EndOfStream:
                    return
                answer = encode_block(payload) + b"\n" if command == b"BLK?\n" else b'"a;b\nc",1\n'
                for i in range(len(answer)):
                    await stream.send(answer[i : i + 1])

    async with raw_peer(handler) as port, aiotmc.open(f"TCPIP::127.0.0.1::{port}::SOCKET") as inst:
        with anyio.fail_after(10):
            assert await inst.query("TXT?") == '"a;b\nc",1'
            assert await inst.query_block("BLK?") == payload
            assert await inst.query("TXT?") == '"a;b\nc",1'


async def test_peer_closes_mid_response_then_reconnects() -> None:
    device = create_device("dmm")
    device.add_raw_query("BLOCk?", lambda args: encode_block(bytes(100_000)) + b"\n")
    async with SimServer(device) as server, aiotmc.open(server.resource, timeout=5) as inst:
        server.close_after_bytes = 5000
        with pytest.raises(aiotmc.ConnectionLostError):
            await inst.query_block("BLOCk?")
        transport = inst.transport
        assert isinstance(transport, SocketTransport)
        assert transport.stale
        assert "," in await inst.query("*IDN?")
        assert transport.reconnects == 1


async def test_peer_closes_mid_text_message() -> None:
    async def handler(stream: SocketStream) -> None:
        async with stream:
            await read_line(stream)
            await stream.send(b"1.234")  # no terminator, then close

    async with raw_peer(handler) as port, aiotmc.open(f"TCPIP::127.0.0.1::{port}::SOCKET") as inst:
        with anyio.fail_after(5), pytest.raises(aiotmc.ConnectionLostError, match="5 bytes"):
            await inst.query("MEAS?")


async def test_server_disconnect_between_queries() -> None:
    async with SimServer(create_device("dmm")) as server, aiotmc.open(server.resource) as inst:
        assert "," in await inst.query("*IDN?")
        server.disconnect_all()
        with anyio.fail_after(5), pytest.raises(aiotmc.ConnectionLostError):
            for _ in range(3):  # the reset may surface on the write or on the read
                await inst.query("*IDN?")
        assert "," in await inst.query("*IDN?")


async def test_connection_refused() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(aiotmc.ConnectError) as info:
        async with aiotmc.open(f"TCPIP::127.0.0.1::{port}::SOCKET"):
            pass  # pragma: no cover
    assert str(port) in str(info.value)


async def test_connect_timeout_is_typed() -> None:
    with pytest.raises(aiotmc.ConnectTimeout) as info:
        async with aiotmc.open("TCPIP::127.0.0.1::5025::SOCKET", connect_timeout=0):
            pass  # pragma: no cover
    assert isinstance(info.value, TimeoutError)


async def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this Python")
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no ::1 on this machine")
    server = SimServer(create_device("dmm"), host="::1")
    async with server, aiotmc.open(f"TCPIP::[::1]::{server.port}::SOCKET") as inst:
        assert "," in await inst.query("*IDN?")


async def test_concurrent_use_of_a_transport_is_loud() -> None:
    device = create_device("dmm")
    device.latency = 0.05
    answers: list[bytes] = []

    async def receive(transport: SocketTransport) -> None:
        answers.append(await transport.receive_message(max_size=1000))

    async with SimServer(device) as server:
        transport = await SocketTransport.connect("127.0.0.1", server.port)
        try:
            await transport.send_message([b"*IDN?\n"])
            with anyio.fail_after(5):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(receive, transport)
                    await anyio.wait_all_tasks_blocked()
                    with pytest.raises(anyio.BusyResourceError):
                        await transport.receive_message(max_size=1000)
            assert answers and answers[0].count(b",") == 3
        finally:
            await transport.aclose()
            await transport.aclose()


async def test_upload_is_sent_from_separate_buffers() -> None:
    async with SimServer(create_device("wavegen")) as server, aiotmc.open(server.resource) as inst:
        data = memoryview(bytearray(range(256)) * 4096)
        await inst.write_raw(b"DATA:ARB big,", end=False)
        transport = inst.transport
        await transport.send_message([block_header(len(data)), data, b"\n"])
        assert await inst.errors() == []
        back = await inst.query_block("DATA:ARB? big")
        assert back == data


async def test_read_termination_change_reframes_responses() -> None:
    async def handler(stream: SocketStream) -> None:
        async with stream:
            while True:
                try:
                    command = await read_line(stream)
                except anyio.EndOfStream:
                    return
                await stream.send(b"a\nb\r" if command == b"CR?\n" else b"plain\n")

    async with raw_peer(handler) as port, aiotmc.open(f"TCPIP::127.0.0.1::{port}::SOCKET") as inst:
        with anyio.fail_after(5):
            assert await inst.query("X?") == "plain"
            inst.read_termination = "\r"
            assert await inst.query("CR?") == "a\nb"
            inst.read_termination = "\n"
            assert await inst.query("X?") == "plain"
