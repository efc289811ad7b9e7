"""Pipelined queries (the default): device_write and device_read sent together. What a
real server can do to the read queued behind the write, each a typed error with no
crossed answer: a failed write, a refused write (lock, WAITLOCK), a write the device
times out, and a server that drops calls queued behind another."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from anyio.abc import SocketStream

import aiotmc
from aiotmc.protocol.framing import NEED_DATA
from aiotmc.protocol.oncrpc import RecordReassembler, decode_call, encode_reply, record_mark
from aiotmc.protocol.vxi11 import (
    CreateLinkResp,
    DeviceReadResp,
    DeviceWriteParms,
    DeviceWriteResp,
    ErrorCode,
    Proc,
    Reason,
)
from aiotmc.sim import SimDevice, create_device
from aiotmc.sim.vxi11_server import Vxi11Server
from aiotmc.transports.vxi11 import Vxi11Transport

pytestmark = pytest.mark.timeout(30)


def echo_device() -> SimDevice:
    device = create_device("dmm")
    device.add_raw_query("ECHO", lambda args: args[0] + b"\n", args=1)
    return device


def transport_of(inst: aiotmc.Instrument) -> Vxi11Transport:
    transport = inst.transport
    assert isinstance(transport, Vxi11Transport)
    return transport


def owed(inst: aiotmc.Instrument) -> int:
    core = transport_of(inst)._core
    assert core is not None
    return core.abandoned


def fail_writes(server: Vxi11Server, error: int, *, before: Any = None) -> list[int]:
    """The next device_write answers ``error`` (after ``await before()``); returns a list
    counting the failures."""
    handler = server._write
    failed: list[int] = []

    async def failing(conn: Any, parms: Any) -> bytes:
        if failed:
            return await handler(conn, parms)
        failed.append(1)
        if before is not None:
            await before()
        return DeviceWriteResp(error, 0).encode()

    server._write = failing  # type: ignore[method-assign]
    return failed


async def test_failed_write_settles_the_queued_read_and_drops_what_it_took() -> None:
    device = echo_device()
    async with Vxi11Server(device) as server, aiotmc.open(server.resource(), timeout=5) as inst:
        assert await inst.query("ECHO first") == "first"  # pipelined from the first query
        device.write(b"ECHO stale\n")  # output the queued read will find
        fail_writes(server, ErrorCode.IO_ERROR)
        with pytest.raises(aiotmc.TransportError, match="error 17"):
            await inst.query("ECHO lost")
        assert owed(inst) == 0  # the queued read was answered and collected at once
        assert await inst.query("ECHO next") == "next"  # not "stale"
        assert server.calls.count(("core", Proc.DEVICE_CLEAR)) == 1


async def test_refused_write_waits_for_the_lock_once_and_takes_nothing() -> None:
    """WAITLOCK: the write waits lock_timeout and is refused; the read queued behind it
    does not wait again nor take the lock holder's answer; no device_clear follows."""
    device = echo_device()
    async with (
        Vxi11Server(device) as server,
        aiotmc.open(server.resource(), lock_timeout=0.3, timeout=5) as inst,
        aiotmc.open(server.resource(), timeout=5) as owner,
    ):
        assert await inst.query("ECHO a") == "a"
        await transport_of(owner).lock()
        await owner.write("ECHO mine")
        server.calls.clear()
        start = anyio.current_time()
        with pytest.raises(aiotmc.ResourceBusyError):
            await inst.query("ECHO refused")
        assert anyio.current_time() - start < 0.6  # one lock_timeout, not two
        assert owed(inst) == 0
        assert await owner.read() == "mine"
        await transport_of(owner).unlock()
        assert await inst.query("ECHO b") == "b"
        assert ("core", Proc.DEVICE_CLEAR) not in server.calls
        assert ("abort", Proc.DEVICE_ABORT) not in server.calls


async def test_write_the_device_times_out() -> None:
    async with (
        Vxi11Server(echo_device()) as server,
        aiotmc.open(server.resource(), timeout=5) as inst,
    ):
        assert await inst.query("ECHO a") == "a"
        fail_writes(server, ErrorCode.IO_TIMEOUT, before=lambda: anyio.sleep(0.1))
        with pytest.raises(aiotmc.WriteTimeout):
            await inst.query("ECHO late", timeout=0.1)
        assert await inst.query("ECHO b") == "b"
        assert await inst.query("ECHO c") == "c"


async def test_a_failed_write_in_a_gateway_without_control() -> None:
    """A real failure on a real socket: the gateway passed control away, every write
    answers error 17; the queued read is refused too and collected."""
    from aiotmc.transports.vxi11 import gateway

    async with (
        Vxi11Server({"gpib0,5": echo_device(), "gpib0,7": echo_device()}) as server,
        aiotmc.open(server.resource("gpib0,5"), timeout=5) as five,
        aiotmc.open(server.resource("gpib0"), srq=False, timeout=5) as bus,
    ):
        assert await five.query("ECHO a") == "a"
        await gateway.pass_control(transport_of(bus), 7)
        for _ in range(3):
            with pytest.raises(aiotmc.TransportError, match="error 17"):
                await five.query("ECHO x")
            assert owed(five) == 0
        assert server.buses["gpib0"].return_control()
        assert await five.query("ECHO b") == "b"


async def test_server_that_drops_queued_calls_falls_back_to_step_by_step() -> None:
    """A server that reads one call per receive and drops the rest: the first pipelined
    query times out (typed), the link goes step by step on a new connection, and every
    answer after that is right."""
    connections: list[int] = []
    dropped: list[int] = []

    async def handler(stream: SocketStream) -> None:
        connections.append(1)
        async with stream:
            while True:
                reassembler = RecordReassembler(max_size=1 << 20)  # one receive, one call
                try:
                    reassembler.receive_data(await stream.receive())
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return
                record = reassembler.next_record()
                if record is NEED_DATA:
                    continue
                assert isinstance(record, bytes)
                dropped.append(reassembler.next_record() is not NEED_DATA)
                call = decode_call(record)
                if call.proc == Proc.CREATE_LINK:
                    result = CreateLinkResp(0, 0, 0, 4096).encode()
                elif call.proc == Proc.DEVICE_WRITE:
                    data = bytes(DeviceWriteParms.decode(call.args).data)
                    result = DeviceWriteResp(0, len(data)).encode()
                elif call.proc == Proc.DEVICE_READ:
                    result = DeviceReadResp(0, Reason.END, data).encode()
                else:
                    result = b"\0\0\0\0"
                reply = encode_reply(call.xid, result)
                await stream.send(record_mark(len(reply)) + reply)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handler)
        resource = f"TCPIP0::127.0.0.1,{port}::inst0::INSTR"
        async with aiotmc.open(resource, srq=False) as inst:
            with pytest.raises(aiotmc.ReadTimeout):
                await inst.query("A?", timeout=0.2)
            assert any(dropped)
            for token in ("B?", "C?", "D?"):
                assert await inst.query(token, timeout=2) == token
            assert len(connections) == 2
        tg.cancel_scope.cancel()
