"""The VXI-11 simulator: judged by independent clients, and against hostile ones.

Independent clients (PyVISA + pyvisa-py, python-vxi11, lxi-tools) are blocking: they run
in a worker thread or a subprocess, bounded in time. The RPC-level tests speak raw
ONC-RPC over loopback.
"""

from __future__ import annotations

import logging
import shutil
import socket
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
import pytest
from anyio.abc import SocketStream

from aiotmc.protocol.framing import NEED_DATA
from aiotmc.protocol.oncrpc import (
    AcceptStat,
    RecordReassembler,
    decode_reply,
    encode_call,
    record_mark,
)
from aiotmc.protocol.vxi11 import (
    DEVICE_CORE,
    END,
    CreateLinkParms,
    CreateLinkResp,
    DeviceReadParms,
    DeviceReadResp,
    DeviceWriteParms,
    DeviceWriteResp,
    ErrorCode,
    Proc,
)
from aiotmc.sim import Block, SimDevice, create_device, test_pattern
from aiotmc.sim.vxi11_server import Vxi11Server

pytestmark = pytest.mark.timeout(60)

T = TypeVar("T")
IDN = "aiotmc,SIM-DMM,0001,0.1"


def dmm() -> SimDevice:
    device = create_device("dmm")
    payload = test_pattern(300_000)
    device.add_command("DATA?", lambda call: Block(payload))
    return device


async def in_thread(fn: Callable[[], T], *, limit: float = 30) -> T:
    """Run a blocking client in a worker thread, bounded in time."""
    with anyio.fail_after(limit):
        return await anyio.to_thread.run_sync(fn, abandon_on_cancel=True)


# -- independent clients ----------------------------------------------------------------------


async def test_pyvisa_py_explicit_port() -> None:
    pyvisa = pytest.importorskip("pyvisa")
    pytest.importorskip("pyvisa_py")
    async with Vxi11Server(dmm()) as server:

        def client() -> tuple[str, int, bytes, str]:
            rm = pyvisa.ResourceManager("@py")
            try:
                inst = rm.open_resource(server.resource(), timeout=5000)
                idn = inst.query("*IDN?").strip()
                stb = inst.read_stb()
                inst.clear()
                inst.write("DATA?")
                data = inst.read_raw()
                inst.assert_trigger()
                after = inst.query("*IDN?").strip()
                inst.close()
                return idn, stb, data, after
            finally:
                rm.close()

        idn, stb, data, after = await in_thread(client)
    assert idn == after == IDN
    assert stb == 0
    assert data.startswith(b"#6300000") and data[8:-1] == test_pattern(300_000)
    assert (("core", Proc.DEVICE_CLEAR)) in server.calls
    assert (("core", Proc.DEVICE_TRIGGER)) in server.calls


async def test_python_vxi11() -> None:
    vxi11 = pytest.importorskip("vxi11")
    async with Vxi11Server(dmm()) as server:

        def client() -> tuple[str, int, bytes]:
            inst = vxi11.Instrument("127.0.0.1", "inst0")
            inst.client = vxi11.vxi11.CoreClient("127.0.0.1", server.port)  # no portmapper
            inst.timeout = 5
            try:
                idn = inst.ask("*IDN?")
                stb = inst.read_stb()
                inst.write("DATA?")
                data = inst.read_raw()
                inst.clear()
                inst.local()
                return idn, stb, data
            finally:
                inst.close()

        idn, stb, data = await in_thread(client)
        assert server.remote == {"inst0": False}
    assert idn == IDN
    assert stb == 0
    assert data[8:-1] == test_pattern(300_000)


def _port_111_free() -> bool:
    probe = socket.socket()
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", 111))
    except OSError:
        return False
    finally:
        probe.close()
    return True


needs_port_111 = pytest.mark.skipif(
    not _port_111_free(), reason="needs to bind the portmapper port 111 (root, no rpcbind)"
)


@needs_port_111
async def test_pyvisa_py_through_the_portmapper_on_111() -> None:
    pyvisa = pytest.importorskip("pyvisa")
    async with Vxi11Server(dmm(), portmapper_port=111) as server:

        def client() -> str:
            rm = pyvisa.ResourceManager("@py")
            try:
                inst = rm.open_resource("TCPIP0::127.0.0.1::inst0::INSTR", timeout=5000)
                idn: str = inst.query("*IDN?").strip()
                inst.close()
                return idn
            finally:
                rm.close()

        assert await in_thread(client) == IDN
        assert ("portmapper", 3) in server.calls


@needs_port_111
@pytest.mark.skipif(shutil.which("lxi") is None, reason="lxi-tools is not installed")
async def test_lxi_tools_scpi() -> None:
    async with Vxi11Server(dmm(), portmapper_port=111):
        with anyio.fail_after(30):
            done = await anyio.run_process(
                ["lxi", "scpi", "--address", "127.0.0.1", "--timeout", "5", "*IDN?"],
                check=False,
            )
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().strip() == IDN


# -- RPC-level behaviour ------------------------------------------------------------------------


class RawClient:
    """Speaks raw ONC-RPC to the simulator."""

    def __init__(self, stream: SocketStream) -> None:
        self.stream = stream
        self.reassembler = RecordReassembler(max_size=16 << 20)
        self.xid = 100

    async def send(self, data: bytes) -> None:
        await self.stream.send(data)

    async def call(self, proc: int, args: bytes, *, prog: int = DEVICE_CORE, vers: int = 1) -> Any:
        self.xid += 1
        message = encode_call(self.xid, prog, vers, proc, args)
        await self.send(record_mark(len(message)) + message)
        return await self.reply()

    async def reply(self) -> Any:
        while (record := self.reassembler.next_record()) is NEED_DATA:
            self.reassembler.receive_data(await self.stream.receive())
        assert isinstance(record, bytes)
        return decode_reply(record)

    async def write(self, lid: int, data: bytes, flags: int = END) -> int:
        """device_write; the error code."""
        parms = DeviceWriteParms(lid, 1000, 0, flags, data).encode()
        return DeviceWriteResp.decode((await self.call(Proc.DEVICE_WRITE, parms)).check()).error

    async def read(self, lid: int, size: int = 1000, timeout: int = 1000) -> DeviceReadResp:
        """device_read."""
        parms = DeviceReadParms(lid, size, timeout, 0, 0, 0).encode()
        return DeviceReadResp.decode((await self.call(Proc.DEVICE_READ, parms)).check())

    async def closed(self) -> bool:
        """True once the server closed the connection (EOF)."""
        try:
            while True:
                await self.stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return True


@asynccontextmanager
async def raw_client(port: int) -> AsyncIterator[RawClient]:
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        yield RawClient(stream)


async def link(client: RawClient, name: str = "inst0") -> int:
    reply = await client.call(Proc.CREATE_LINK, CreateLinkParms(1, False, 0, name).encode())
    resp = CreateLinkResp.decode(reply.check())
    assert resp.error == 0
    return resp.lid


async def test_rpc_errors_are_answered() -> None:
    async with Vxi11Server(dmm()) as server, raw_client(server.port) as client:
        assert (await client.call(10, b"", prog=0x123456)).stat == AcceptStat.PROG_UNAVAIL
        mismatch = await client.call(10, b"", vers=7)
        assert (mismatch.stat, mismatch.mismatch) == (AcceptStat.PROG_MISMATCH, (1, 1))
        assert (await client.call(99, b"")).stat == AcceptStat.PROC_UNAVAIL
        assert (await client.call(Proc.CREATE_LINK, b"\0\0")).stat == AcceptStat.GARBAGE_ARGS
        lid = await link(client)
        assert lid == 0  # link id 0 is valid and the first one handed out
        bogus = DeviceReadParms(lid + 5, 100, 100, 0, 0, 0).encode()
        resp = DeviceReadResp.decode((await client.call(Proc.DEVICE_READ, bogus)).check())
        assert resp.error == ErrorCode.INVALID_LINK_IDENTIFIER
        srq = await client.call(Proc.DEVICE_ENABLE_SRQ, struct.pack(">iII", lid, 1, 0))
        assert struct.unpack(">i", srq.check())[0] == ErrorCode.PARAMETER_ERROR  # empty handle
        docmd_args = struct.pack(">iiIIiIiI", lid, 0, 0, 0, 0, 0, 0, 0)
        docmd = await client.call(Proc.DEVICE_DOCMD, docmd_args)
        assert struct.unpack(">i", docmd.check()[:4])[0] == ErrorCode.OPERATION_NOT_SUPPORTED


async def test_read_waits_io_timeout_then_answers_error_15() -> None:
    async with Vxi11Server(dmm()) as server, raw_client(server.port) as client:
        lid = await link(client)
        start = anyio.current_time()
        parms = DeviceReadParms(lid, 100, 200, 0, 0, 0).encode()
        resp = DeviceReadResp.decode((await client.call(Proc.DEVICE_READ, parms)).check())
        assert resp.error == ErrorCode.IO_TIMEOUT
        assert 0.15 < anyio.current_time() - start < 5


async def test_hostile_inputs_close_only_that_connection_and_are_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    device = dmm()
    caplog.set_level(logging.WARNING, logger="aiotmc.sim.vxi11")
    async with Vxi11Server(device, max_recv_size=4096) as server:
        hostile = [
            b"\xff\xff\xff\xff",  # a 2 GB fragment
            record_mark(8192) + b"x" * 100,  # over max_record
            record_mark(8) + b"garbage!",  # not an RPC call
        ]
        for data in hostile:
            async with raw_client(server.port) as client:
                await client.send(data)
                with anyio.fail_after(5):
                    assert await client.closed()
        async with raw_client(server.port) as good:  # the server still serves
            assert await good.write(await link(good), b"*IDN?\n") == 0
    warnings = [r for r in caplog.records if r.name == "aiotmc.sim.vxi11"]
    assert len(warnings) == len(hostile)  # one line per hostile connection
    assert {r.levelno for r in warnings} == {logging.WARNING}  # no traceback
    assert device.errors == []  # nothing reached the device's error queue


async def test_program_message_over_the_input_limit_is_refused() -> None:
    device = dmm()
    async with (
        Vxi11Server(device, max_message_size=10_000, max_recv_size=4096) as server,
        raw_client(server.port) as client,
    ):
        lid = await link(client)
        errors = [await client.write(lid, b"x" * 4000, END if last else 0) for last in (0, 0, 0, 1)]
        assert errors == [0, 0, ErrorCode.IO_ERROR, ErrorCode.IO_ERROR]
        assert await client.write(lid, b"*IDN?\n") == 0
        assert bytes((await client.read(lid)).data).strip() == IDN.encode()
    assert device.errors == []


async def test_connection_cap_and_idle_timeout() -> None:
    async with Vxi11Server(dmm(), max_connections=2, idle_timeout=0.3) as server:
        async with raw_client(server.port) as first, raw_client(server.port) as second:
            async with raw_client(server.port) as third:
                with anyio.fail_after(5):
                    assert await third.closed()  # over the cap
            with anyio.fail_after(5):  # idle: closed by the server
                assert await first.closed()
                assert await second.closed()
        async with raw_client(server.port) as fourth:
            assert await link(fourth) >= 0


async def test_client_that_never_reads_is_dropped_without_blocking_others() -> None:
    device = create_device("dmm")
    big = test_pattern(8 << 20)
    device.add_command("BIG?", lambda call: Block(big))
    async with (
        Vxi11Server(device, send_timeout=0.3, max_recv_size=1 << 20) as server,
        raw_client(server.port) as greedy,
    ):
        lid = await link(greedy)
        await greedy.write(lid, b"BIG?\n")
        read = DeviceReadParms(lid, 16 << 20, 1000, 0, 0, 0).encode()
        message = encode_call(7, DEVICE_CORE, 1, Proc.DEVICE_READ, read)
        await greedy.send(record_mark(len(message)) + message)  # and never read
        async with raw_client(server.port) as good:
            glid = await link(good)
            for _ in range(3):
                await good.write(glid, b"*IDN?\n")
                with anyio.fail_after(2):
                    assert bytes((await good.read(glid)).data).strip() == IDN.encode()
        with anyio.fail_after(5):
            await server.wait_connections(1)  # the greedy one, dropped next
            await server.wait_connections(0)
            assert await greedy.closed()


SERVER = """
import anyio
from aiotmc.sim import create_device
from aiotmc.sim.vxi11_server import Vxi11Server

async def main():
    async with Vxi11Server(create_device("dmm"), max_connections=600) as server:
        print(server.port, flush=True)
        await anyio.sleep(600)  # the test kills it

anyio.run(main)
"""


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")  # pragma: no cover


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.timeout(90)
async def test_memory_of_500_linked_clients_and_oversized_headers_stays_bounded() -> None:
    command = [sys.executable, "-c", SERVER]
    async with await anyio.open_process(command, stderr=subprocess.DEVNULL) as server:
        try:
            assert server.stdout is not None
            with anyio.fail_after(30):
                port = int((await server.stdout.receive()).decode())
            before = rss_kib(server.pid)
            clients: list[SocketStream] = []
            try:
                with anyio.fail_after(60):
                    for _ in range(500):
                        stream = await anyio.connect_tcp("127.0.0.1", port)
                        clients.append(stream)
                        await link(RawClient(stream))  # accepted, with a link
                    for stream in clients[:100]:  # records announced as 1 MiB, 1 KiB sent
                        await stream.send(record_mark(1 << 20) + b"x" * 1024)
                    for stream in clients[100:200]:  # 2 GB fragments: refused at once
                        await stream.send(b"\\xff\\xff\\xff\\xff")
                    for stream in clients[100:200]:
                        assert await RawClient(stream).closed()
                    async with raw_client(port) as probe:  # everything above was handled
                        await link(probe)
                grown = rss_kib(server.pid) - before
            finally:
                for stream in clients:
                    await stream.aclose()
        finally:
            server.kill()
    assert grown < 64 * 1024, f"server RSS grew by {grown} KiB"


async def test_pyvisa_py_lock_timeout_and_abort_against_aiotmc() -> None:
    """pyvisa-py's exclusive lock shuts aiotmc's link out; pyvisa-py's timeouts recover."""
    pyvisa = pytest.importorskip("pyvisa")
    import aiotmc

    device = dmm()
    async with Vxi11Server(device) as server, aiotmc.open(server.resource()) as ours:
        rm = pyvisa.ResourceManager("@py")
        try:
            theirs = await in_thread(lambda: rm.open_resource(server.resource(), timeout=2000))
            await in_thread(theirs.lock_excl)
            with pytest.raises(aiotmc.ResourceBusyError):
                await ours.query("*IDN?")
            await in_thread(theirs.unlock)
            assert await ours.query("*IDN?") == IDN
            device.delay_next_responses(float("inf"))
            theirs.timeout = 300
            with pytest.raises(pyvisa.errors.VisaIOError, match="TMO"):
                await in_thread(lambda: theirs.query("*IDN?"))
            theirs.timeout = 2000
            await in_thread(theirs.clear)
            assert (await in_thread(lambda: theirs.query("*IDN?"))).strip() == IDN
            await in_thread(theirs.close)
        finally:
            await in_thread(rm.close)


async def test_cli_query_over_vxi11() -> None:
    async with Vxi11Server(dmm()) as server:
        with anyio.fail_after(60):
            done = await anyio.run_process(
                [sys.executable, "-m", "aiotmc", "query", server.resource(), "*IDN?"],
                check=False,
            )
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().strip() == IDN


async def test_interrupt_channel_procedures() -> None:
    from aiotmc.protocol.vxi11 import DEVICE_INTR, DeviceEnableSrqParms, DeviceRemoteFunc

    async with Vxi11Server(dmm()) as server, raw_client(server.port) as client:
        lid = await link(client)

        async def error_of(proc: int, args: bytes) -> int:
            value: int = struct.unpack(">i", (await client.call(proc, args)).check()[:4])[0]
            return value

        chan = DeviceRemoteFunc(0x7F000001, 9, DEVICE_INTR, 1, 0).encode()
        assert await error_of(Proc.DESTROY_INTR_CHAN, b"") == ErrorCode.CHANNEL_NOT_ESTABLISHED
        udp = DeviceRemoteFunc(0x7F000001, 9, DEVICE_INTR, 1, 1).encode()
        assert await error_of(Proc.CREATE_INTR_CHAN, udp) == ErrorCode.OPERATION_NOT_SUPPORTED
        assert await error_of(Proc.CREATE_INTR_CHAN, chan) == 0
        assert await error_of(Proc.CREATE_INTR_CHAN, chan) == ErrorCode.CHANNEL_ALREADY_ESTABLISHED
        empty = DeviceEnableSrqParms(lid, True, b"").encode()
        assert await error_of(Proc.DEVICE_ENABLE_SRQ, empty) == ErrorCode.PARAMETER_ERROR
        handle = DeviceEnableSrqParms(lid, True, b"h").encode()
        assert await error_of(Proc.DEVICE_ENABLE_SRQ, handle) == 0
        assert await error_of(Proc.DESTROY_INTR_CHAN, b"") == 0


@needs_port_111
async def test_python_vxi11_through_the_portmapper_and_its_udp_discovery() -> None:
    vxi11 = pytest.importorskip("vxi11")
    async with Vxi11Server(dmm(), portmapper_port=111) as server:

        def client() -> str:
            inst = vxi11.Instrument("127.0.0.1")  # asks the portmapper on 111 (TCP)
            try:
                idn: str = inst.ask("*IDN?")
            finally:
                inst.close()
            return idn

        assert await in_thread(client) == IDN
        # its discovery (GETPORT over UDP) leaks a socket: run it in a process of its own
        script = "import vxi11; print(vxi11.list_devices('127.0.0.1', timeout=1))"
        with anyio.fail_after(30):
            done = await anyio.run_process([sys.executable, "-c", script], check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().strip() == "['127.0.0.1']"
    assert ("portmapper", 3) in server.calls and ("portmapper-udp", 3) in server.calls


@needs_port_111
@pytest.mark.skipif(shutil.which("rpcbind") is None, reason="rpcbind is not installed")
async def test_registers_with_rpcbind_for_lxi_and_aiotmc() -> None:
    import aiotmc

    async with await anyio.open_process(
        ["rpcbind", "-f", "-i"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    ) as rpcbind:
        try:
            with anyio.fail_after(10):  # an external daemon: wait until it accepts
                while True:
                    try:
                        probe = await anyio.connect_tcp("127.0.0.1", 111)
                    except OSError:
                        await anyio.sleep(0.05)
                        continue
                    await probe.aclose()
                    break
            async with Vxi11Server(dmm(), register=True) as server:
                assert server.registered
                listed = await anyio.run_process(["rpcinfo", "-p", "127.0.0.1"])
                assert f"395183    1   tcp  {server.port}" in listed.stdout.decode()
                async with aiotmc.open("TCPIP0::127.0.0.1::INSTR") as inst:
                    assert await inst.query("*IDN?") == IDN
                if shutil.which("lxi"):
                    with anyio.fail_after(30):
                        done = await anyio.run_process(
                            ["lxi", "scpi", "-a", "127.0.0.1", "-t", "5", "*IDN?"], check=False
                        )
                    assert done.stdout.decode().strip() == IDN, done.stderr
            listed = await anyio.run_process(["rpcinfo", "-p", "127.0.0.1"])
            assert "395183" not in listed.stdout.decode()  # unregistered on close
        finally:
            rpcbind.terminate()
            with anyio.move_on_after(5):
                await rpcbind.wait()


# -- serving several devices (what ``aiotmc sim`` calls) -------------------------------------


async def test_serve_vxi11_names_devices_and_gateways() -> None:
    import aiotmc
    from aiotmc.sim.vxi11_server import device_names, serve_vxi11

    assert device_names(2) == ["inst0", "inst1"]
    assert device_names(2, gateway=True, first_address=5) == ["gpib0,5", "gpib0,6"]
    with pytest.raises(ValueError, match="do not fit"):
        device_names(3, gateway=True, first_address=29)
    devices = [create_device("dmm"), create_device("psu")]
    async with serve_vxi11(devices) as (server, resources):
        assert resources == [server.resource("inst0"), server.resource("inst1")]
        async with aiotmc.open(resources[1], srq=False) as inst:
            assert "PSU" in await inst.query("*IDN?")
    async with serve_vxi11(devices, gateway=True, portmapper_port=0) as (server, resources):
        assert resources == [server.resource(f"gpib0,{n}", explicit_port=False) for n in (1, 2)]
        assert set(server.buses) == {"gpib0"}
        async with aiotmc.open(
            resources[0], srq=False, portmapper_port=server.portmapper_port
        ) as inst:
            assert "DMM" in await inst.query("*IDN?")


def test_the_call_log_is_bounded() -> None:
    from aiotmc.sim.rpc_server import MAX_CALLS_KEPT

    server = Vxi11Server(dmm())
    for i in range(3 * MAX_CALLS_KEPT):
        server.record_call("core", i)
    assert len(server.calls) <= MAX_CALLS_KEPT
    assert server.calls[-1] == ("core", 3 * MAX_CALLS_KEPT - 1)
