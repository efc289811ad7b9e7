"""The Prologix transport and the adapter simulator: shared bus, bus operations, bad
input, and independent clients (pyvisa-py, prologix-gpib-async) judging the simulator."""

from __future__ import annotations

import sys
import zlib

import anyio
import pytest

import aiotmc
from aiotmc import RenMode
from aiotmc.sim.devices import create_device
from aiotmc.sim.prologix_server import VERSION, PrologixServer
from aiotmc.testing import conformance_device
from aiotmc.transports.prologix import PrologixTransport, escape


def test_escape() -> None:
    assert escape(b"a\r\n\x1b+b") == b"a\x1b\r\x1b\n\x1b\x1b\x1b+b"
    assert escape(b"plain") == b"plain"


async def test_two_instruments_share_one_adapter() -> None:
    devices = {5: conformance_device(), 12: conformance_device()}
    async with (
        PrologixServer(devices) as server,
        aiotmc.open(server.resource(5)) as first,
        aiotmc.open(server.resource(12)) as second,
    ):
        assert isinstance(first.transport, PrologixTransport)
        assert first.transport.adapter is second.transport.adapter

        async def talk(inst: aiotmc.Instrument, name: str) -> None:
            for i in range(30):
                assert await inst.query(f"ECHO? {name}{i}") == f"{name}{i}"

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(talk, first, "a")
                tg.start_soon(talk, second, "b")
        assert server.connections == 1
        assert devices[5].busy is False and devices[12].busy is False
        addr = [c for c in server.commands if c.startswith("addr")]
        assert len(addr) <= 61  # ++addr only when the other instrument was addressed


async def test_bus_operations() -> None:
    device = conformance_device()
    async with PrologixServer({12: device}) as server, aiotmc.open(server.resource(12)) as inst:
        await inst.write("ECHO? waiting")
        assert await inst.read_stb() & 0x10  # MAV through ++spoll
        await inst.clear()  # ++clr drops it
        assert not await inst.read_stb() & 0x10
        await inst.trigger()
        await inst.control_ren(RenMode.ASSERT_LLO)
        await inst.read_stb()  # a round trip: the adapter has handled what came before
        assert server.remote[12] == "lockout"
        await inst.control_ren(RenMode.DEASSERT_GTL)
        await inst.read_stb()
        assert server.remote[12] == "local"
        assert isinstance(inst.transport, PrologixTransport)
        await inst.transport.interface_clear()
        await inst.read_stb()
        assert {"spoll", "clr", "trg", "llo", "loc", "ifc"} <= {
            c.split()[0] for c in server.commands
        }
        assert await inst.query("ECHO? after") == "after"
        assert server.remote[12] == "remote"  # addressed to listen again


async def test_binary_upload_is_escaped() -> None:
    device = conformance_device()
    payload = bytes(range(256)) * 40 + b"++addr 3\r\n\x1b"
    async with (
        PrologixServer({12: device}) as server,
        aiotmc.open_transport(server.resource(12)) as link,
    ):
        header = b"#5%05d" % len(payload)
        await link.send_message([b"UPLoad ", header, payload, b"\n"])
        answer = await link.exchange(b"UPLoad?\n", max_size=100)
        assert answer.strip() == b"%d,%d" % (len(payload), zlib.crc32(payload))
        assert not any(c.startswith("addr 3") for c in server.commands)


async def test_never_answers_then_next_query_is_its_own() -> None:
    async with (
        PrologixServer({12: conformance_device()}) as server,
        aiotmc.open_transport(server.resource(12)) as link,
    ):
        with pytest.raises(aiotmc.ReadTimeout):
            await link.exchange(
                b"SLOW? 1e6,late\n", max_size=100, deadline=anyio.current_time() + 0.3
            )
        assert await link.exchange(b"ECHO? mine\n", max_size=100) == b"mine\n"
        assert link.adapter.reconnects == 2  # the interrupted read's connection was replaced


async def test_empty_address_times_out_typed() -> None:
    async with (
        PrologixServer({12: conformance_device()}) as server,
        aiotmc.open_transport(server.resource(7)) as link,
    ):
        with pytest.raises(aiotmc.ReadTimeout):
            await link.exchange(b"*IDN?\n", max_size=100, deadline=anyio.current_time() + 0.3)


async def test_adapter_unreachable() -> None:
    async with PrologixServer({}) as server:
        port = server.port
    with pytest.raises(aiotmc.ConnectError):
        async with aiotmc.open(f"PRLGX-TCPIP::127.0.0.1::{port}::12::INSTR") as inst:
            await inst.query("*IDN?")


async def test_server_drops_an_endless_line_and_keeps_serving() -> None:
    async with PrologixServer({12: conformance_device()}, max_line=10_000) as server:
        stream = await anyio.connect_tcp("127.0.0.1", server.port)
        async with stream:
            await stream.send(b"x" * 50_000)  # no end
            await stream.send(b"\n++addr 12\nECHO? fine\n++read eoi\n")
            with anyio.fail_after(5):
                answer = b""
                while not answer.endswith(b"\n"):
                    answer += await stream.receive()
        assert answer == b"fine\n"
        async with (
            await anyio.connect_tcp("127.0.0.1", server.port) as one,
            await anyio.connect_tcp("127.0.0.1", server.port) as two,
        ):
            await one.send(b"++ver\n")
            await two.send(b"++ver\n")
            with anyio.fail_after(5):
                assert (await one.receive()).startswith(VERSION.encode())
                assert (await two.receive()).startswith(VERSION.encode())


_PYVISA = """
import sys, pyvisa
rm = pyvisa.ResourceManager("@py")
intfc = rm.open_resource(sys.argv[1])
dmm = rm.open_resource("GPIB0::5::INSTR")
kit = rm.open_resource("GPIB0::12::INSTR")
print(dmm.query("*IDN?").strip())
print(kit.query("ECHO? pyvisa").strip())
kit.write("ECHO? pending")
print(kit.read_stb())
print(kit.read().strip())
rm.close()
"""

_PGA = """
import asyncio, sys
from prologix_gpib_async import AsyncPrologixGpibEthernetController

async def main():
    port = int(sys.argv[1])
    async with AsyncPrologixGpibEthernetController("127.0.0.1", pad=12, port=port) as dev:
        await dev.write(b"ECHO? pga\\n")
        print((await dev.read()).decode().strip())
        await dev.write(b"ECHO? pending\\n")
        print(await dev.serial_poll())
        print((await dev.read()).decode().strip())
        print(await dev.version())

asyncio.run(asyncio.wait_for(main(), 20))
"""


async def _run(code: str, *args: str) -> list[str]:
    with anyio.fail_after(40):
        done = await anyio.run_process([sys.executable, "-c", code, *args], check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return done.stdout.decode().splitlines()


@pytest.mark.parametrize("pty", [False, True], ids=["tcp", "serial"])
async def test_pyvisa_py_accepts_the_prologix_simulator(pty: bool) -> None:
    """PRLGX-TCPIP0::host::port::INTFC, or PRLGX-ASRL0::/dev/pts/N::INTFC (pyserial)."""
    pytest.importorskip("pyvisa_py")
    if pty:
        pytest.importorskip("serial")
    devices = {5: create_device("dmm"), 12: conformance_device()}
    async with PrologixServer(devices, pty=pty) as server:
        lines = await _run(_PYVISA, server.interface)
    assert lines[0] == devices[5].identity
    assert lines[1] == "pyvisa"
    assert int(lines[2]) & 0x10
    assert lines[3] == "pending"


async def test_prologix_gpib_async_accepts_the_simulator() -> None:
    pytest.importorskip("prologix_gpib_async")
    async with PrologixServer({12: conformance_device()}) as server:
        lines = await _run(_PGA, str(server.port))
    assert lines[0] == "pga"
    assert int(lines[1]) & 0x10
    assert lines[2] == "pending"
    assert lines[3] == VERSION


@pytest.mark.parametrize("pty", [False, True], ids=["tcp", "serial"])
async def test_adapter_left_in_the_wrong_mode_is_set_up_again(pty: bool) -> None:
    """An adapter remembering DEVICE mode and read-after-write (another program saved
    them): the set-up puts it in controller mode with ++auto 0, the answers are ours."""
    async with (
        PrologixServer({12: conformance_device()}, mode=0, auto=True, pty=pty) as server,
        aiotmc.open(server.resource(12)) as inst,
    ):
        assert await inst.query("ECHO? controller") == "controller"
        await inst.write("ECHO? unread")  # ++auto 1 would read this and send it unasked
        assert await inst.query("ECHO? next") == "next"  # no crossed answer
        assert server.commands[:2] == ["mode 1", "auto 0"]


async def test_adapter_stuck_in_device_mode_is_a_typed_error() -> None:
    async with (
        PrologixServer({12: conformance_device()}, mode=0, fixed_mode=True) as server,
        aiotmc.open(server.resource(12), timeout=5) as inst,
    ):
        for _ in range(2):  # and again on the next operation, promptly
            with anyio.fail_after(4), pytest.raises(aiotmc.ConnectError, match="DEVICE mode"):
                await inst.query("*IDN?")


async def test_hostile_adapter_endless_line_and_garbage() -> None:
    """An adapter that floods an endless line after ++read and answers ++spoll with
    garbage: a typed timeout with memory bounded by max_size, a typed protocol error,
    and the next exchange in step (on a new connection after the flood)."""
    from anyio.abc import SocketStream

    connections = 0

    async def adapter(stream: SocketStream) -> None:
        nonlocal connections
        connections += 1
        pending = b""
        buffer = b""
        async with stream:
            try:
                while True:
                    buffer += await stream.receive()
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        if not line:
                            continue  # the second half of an escaped LF
                        if line == b"++mode":
                            await stream.send(b"1\r\n")
                        elif line == b"++spoll":
                            await stream.send(b"garbage\r\n")
                        elif line == b"++read eoi":
                            if pending == b"FLOOD":
                                for _ in range(50_000):  # 50 MB at most, no end of line
                                    await stream.send(b"x" * 1024)
                            await stream.send(pending + b"\n")
                        elif not line.startswith(b"++"):
                            pending = line.replace(b"\x1b", b"").removeprefix(b"ECHO? ")
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass

    async with (
        await anyio.create_tcp_listener(local_host="127.0.0.1") as listener,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(listener.serve, adapter)
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with aiotmc.open_transport(f"PRLGX-TCPIP0::127.0.0.1::{port}::12::INSTR") as link:
            assert isinstance(link, PrologixTransport)
            assert await link.exchange(b"ECHO? one\n", max_size=100) == b"one\n"
            with pytest.raises(aiotmc.ReadTimeout):
                await link.exchange(b"FLOOD\n", max_size=1000, deadline=anyio.current_time() + 0.5)
            assert link.adapter.stream.decoder.pending <= 1000 + 64 * 1024  # bounded
            with pytest.raises(aiotmc.RemoteProtocolError, match="not a status byte"):
                await link.read_stb(deadline=anyio.current_time() + 5)
            assert await link.exchange(b"ECHO? two\n", max_size=100) == b"two\n"
            assert connections == 2  # the flooded connection was replaced
        tg.cancel_scope.cancel()
