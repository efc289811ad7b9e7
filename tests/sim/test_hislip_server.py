"""The HiSLIP simulator judged by an independent client (pyvisa-py) and by hostile input."""

from __future__ import annotations

import socket
from typing import Any

import anyio
import pytest

import aiotmc
from aiotmc.protocol import hislip as hs
from aiotmc.protocol.hislip import MessageType as T
from aiotmc.sim.hislip_server import HislipServer
from aiotmc.testing import conformance_device


def _pyvisa_session(resource: str) -> dict[str, Any]:
    pyvisa = pytest.importorskip("pyvisa")
    pytest.importorskip("pyvisa_py")
    rm = pyvisa.ResourceManager("@py")
    try:
        inst = rm.open_resource(resource, open_timeout=5000)
        inst.timeout = 5000
        try:
            first = inst.query("ECHO? 17")
            inst.write("ECHO? 18")
            waiting = inst.read_stb()
            second = inst.read()
            inst.write("SLOW? 1,19")  # cleared before it is answered (pyvisa-py does not
            # drain the synchronous channel before DeviceClearAcknowledge, as §6.12 asks)
            inst.clear()
            third = inst.query("ECHO? 20")
            block = inst.query_binary_values("BLK? 4096,12345678", datatype="B")
            return {
                "first": first,
                "waiting": waiting,
                "second": second,
                "third": third,
                "block": bytes(block),
            }
        finally:
            inst.close()
    finally:
        rm.close()


@pytest.mark.parametrize("overlapped", [False, True], ids=["synchronized", "overlapped"])
async def test_pyvisa_py_accepts_the_simulator(overlapped: bool) -> None:
    async with HislipServer(conformance_device(), overlapped=overlapped) as server:
        resource = f"TCPIP0::127.0.0.1::hislip0,{server.port}::INSTR"
        with anyio.fail_after(60):
            result = await anyio.to_thread.run_sync(_pyvisa_session, resource)
    assert result["first"].strip() == "17"
    assert result["waiting"] & 0x10  # MAV while the answer waits
    assert result["second"].strip() == "18"
    assert result["third"].strip() == "20"  # the cleared answer never shows up
    assert result["block"] == b"12345678" * 512
    assert server.counters["status_id_mismatch"] > 0  # pyvisa-py asks with the next MessageID


def _read_message(sock: socket.socket) -> hs.Message:
    reader = hs.Reassembler(max_payload=4096)
    while (message := reader.next_message()) is None:
        data = sock.recv(4096)
        if not data:
            raise ConnectionError("closed")
        reader.feed(data)
    return message


@pytest.mark.parametrize(
    "first",
    [
        b"XX" + bytes(14),  # no "HS" prologue
        hs.encode_header(T.Initialize, 0, 0, 1 << 63),  # absurd length
        hs.encode(T.DataEnd, 0, 0xFFFFFF00, b"*IDN?\n"),  # no Initialize first
        hs.encode_initialize((1, 0), b"xx", "hislip9"),  # wrong sub-address
    ],
)
async def test_hostile_first_message_gets_fatal_error_and_close(first: bytes) -> None:
    async with HislipServer(conformance_device()) as server:

        def probe() -> hs.Message:
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
                sock.sendall(first)
                message = _read_message(sock)
                assert sock.recv(16) == b""  # and the server closed it
                return message

        with anyio.fail_after(20):
            message = await anyio.to_thread.run_sync(probe)
        assert message.type == T.FatalError
        assert server.sessions == 0
        # the server still serves well-behaved clients
        async with aiotmc.open(server.resource) as inst:
            assert await inst.query("ECHO? 5", timeout=5) == "5"


async def test_idle_handshake_and_connection_cap() -> None:
    async with HislipServer(conformance_device(), init_timeout=0.2, max_connections=1) as server:

        def outcome(sock: socket.socket) -> str:
            try:
                message = _read_message(sock)
            except ConnectionError:
                return "closed"  # dropped after init_timeout
            assert message.type == T.FatalError, message
            return hs.FatalCode(message.control).name

        def probe() -> list[str]:
            with (
                socket.create_connection(("127.0.0.1", server.port), timeout=5) as first,
                socket.create_connection(("127.0.0.1", server.port), timeout=5) as second,
            ):
                first.sendall(b"HS")  # half a header, then nothing
                second.sendall(b"HS")
                return sorted([outcome(first), outcome(second)])

        with anyio.fail_after(20):
            outcomes = await anyio.to_thread.run_sync(probe)
    # whichever was accepted second is refused; the other is dropped when idle
    assert outcomes == ["MAXIMUM_CLIENTS_EXCEEDED", "closed"]


async def test_oversized_program_message_is_refused_without_touching_the_device() -> None:
    device = conformance_device()
    async with HislipServer(device, max_input=1000) as server:
        async with aiotmc.open_transport(server.resource) as link:
            with anyio.fail_after(20):
                with pytest.raises(hs.HislipError, match="MESSAGE_TOO_LARGE"):
                    await link.exchange(b"ECHO? " + b"x" * 2000 + b"\n", max_size=10_000)
                answer = await link.exchange(b"ECHO? 7\n", max_size=100)
        assert answer.strip() == b"7"
    assert device.errors == []


async def test_a_client_that_never_reads_is_dropped_and_others_are_served() -> None:
    async with HislipServer(conformance_device(), send_timeout=0.3) as server:
        port = server.port

        def stalled_client() -> None:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=5) as sync,
                socket.create_connection(("127.0.0.1", port), timeout=5) as async_,
            ):
                sync.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sync.sendall(hs.encode_initialize((1, 0), b"xx", "hislip0"))
                answer = _read_message(sync)
                async_.sendall(hs.encode(T.AsyncInitialize, 0, answer.param & 0xFFFF))
                _read_message(async_)
                sync.sendall(hs.encode(T.DataEnd, 0, hs.FIRST_MESSAGE_ID, b"BLK? 50000000,1\n"))
                # never read the answer: the server gives up after send_timeout
                with pytest.raises(ConnectionError):  # a 5 s socket timeout would not do
                    while True:  # bounded by the server closing it (and the 5 s timeout)
                        async_.sendall(hs.encode(T.AsyncLockInfo))
                        _read_message(async_)

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(anyio.to_thread.run_sync, stalled_client)
                await server.wait_sessions(1)
                async with aiotmc.open(server.resource, timeout=5) as inst:
                    assert await inst.query("ECHO? 11") == "11"  # not held up
            await server.wait_sessions(0)
