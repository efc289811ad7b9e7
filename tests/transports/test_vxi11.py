"""The VXI-11 client against the VXI-11 simulator and scripted RPC peers, on loopback."""

from __future__ import annotations

import math
import random
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from anyio.abc import SocketStream

import aiotmc
from aiotmc.protocol.framing import NEED_DATA
from aiotmc.protocol.ieee4882 import block_header
from aiotmc.protocol.oncrpc import (
    AcceptStat,
    Call,
    RecordReassembler,
    decode_call,
    encode_accepted_error,
    encode_reply,
    record_mark,
)
from aiotmc.protocol.portmap import encode_port
from aiotmc.protocol.vxi11 import (
    END,
    CreateLinkResp,
    DeviceReadResp,
    DeviceWriteParms,
    DeviceWriteResp,
    Proc,
    Reason,
)
from aiotmc.sim import Block, SimDevice, create_device, test_pattern
from aiotmc.sim.vxi11_server import Vxi11Server
from aiotmc.transports.vxi11 import REPLY_MARGIN, Vxi11Transport
from aiotmc.transports.vxi11.portmapper import forget_port

pytestmark = pytest.mark.timeout(60)


def echo_device() -> SimDevice:
    """A DMM that also answers ``ECHO <token>`` with the token (to tell answers apart)."""
    device = create_device("dmm")
    device.add_raw_query("ECHO", lambda args: args[0] + b"\n", args=1)
    return device


@asynccontextmanager
async def served(
    device: SimDevice | None = None, **options: Any
) -> AsyncIterator[tuple[Vxi11Server, SimDevice]]:
    device = device or echo_device()
    async with Vxi11Server(device, **options) as server:
        yield server, device


# -- the happy paths ---------------------------------------------------------------------


async def test_query_with_explicit_port_uses_link_id_0() -> None:
    async with served() as (server, _), aiotmc.open(server.resource()) as inst:
        assert await inst.query("*IDN?") == "aiotmc,SIM-DMM,0001,0.1"
        info = inst.transport.info
        assert info.kind == "vxi11"
        assert info.details["lid"] == "0"
        assert info.capabilities.read_stb and info.capabilities.device_clear
    assert server.links == 0  # destroy_link on close


async def test_query_through_the_portmapper() -> None:
    async with served(portmapper_port=0) as (server, _):
        assert server.portmapper_port
        resource = server.resource(explicit_port=False)
        async with aiotmc.open(resource, portmapper_port=server.portmapper_port) as inst:
            assert await inst.query("ECHO 1") == "1"
        async with aiotmc.open(resource, portmapper_port=server.portmapper_port) as inst:
            assert await inst.query("ECHO 2") == "2"  # second lookup from the cache
        calls = [proc for channel, proc in server.calls if channel == "portmapper"]
        assert calls == [3]  # one GETPORT for both opens
        forget_port("127.0.0.1", 0x0607AF, 1, pmap_port=server.portmapper_port)


async def test_unknown_device_name_is_resource_not_found() -> None:
    async with served() as (server, _):
        with pytest.raises(aiotmc.ResourceNotFoundError, match="create_link"):
            async with aiotmc.open(server.resource("inst7")):
                pass  # pragma: no cover


async def test_gateway_device_names() -> None:
    five, seven = echo_device(), create_device("psu")
    async with (
        Vxi11Server({"gpib0,5": five, "gpib0,7": seven}) as server,
        aiotmc.open(server.resource("gpib0,5")) as a,
        aiotmc.open(server.resource("gpib0,7")) as b,
    ):
        assert await a.query("ECHO x") == "x"
        assert "PSU" in await b.query("*IDN?")


async def test_stb_trigger_clear_remote_local() -> None:
    async with served() as (server, device), aiotmc.open(server.resource()) as inst:
        await inst.write("*SRE 32;*ESE 1;*OPC")
        assert await inst.read_stb() & 0x40
        await inst.transport.trigger()
        await inst.write("ECHO pending")
        await inst.clear()
        assert await inst.query("ECHO after") == "after"
        await inst.control_ren(aiotmc.RenMode.ASSERT_ADDRESS)
        assert server.remote == {"inst0": True}
        await inst.control_ren(aiotmc.RenMode.DEASSERT_GTL)
        assert server.remote == {"inst0": False}
        assert device.event_status & 1


async def test_term_char_ends_reads_at_the_character() -> None:
    device = echo_device()
    device.add_raw_query("TWO", lambda args: b"a;b\n")
    async with served(device) as (server, _), aiotmc.open(server.resource(), term_char=";") as inst:
        assert await inst.query("TWO") == "a;"
        assert await inst.read() == "b"


# -- large messages ------------------------------------------------------------------------


def block_device(size: int) -> SimDevice:
    device = echo_device()
    payload = test_pattern(size)
    device.add_command("DATA?", lambda call: Block(payload))
    return device


async def test_one_megabyte_block() -> None:
    size = 1 << 20
    async with (
        served(block_device(size)) as (server, _),
        aiotmc.open(server.resource(), request_size=256 * 1024) as inst,
    ):
        data = await inst.query_block("DATA?")
        assert data == test_pattern(size)
        reads = [p for c, p in server.calls if p == Proc.DEVICE_READ]
        assert len(reads) == 5  # 4 full requests and the rest


@pytest.mark.parametrize(
    ("size", "request_size", "split"),
    [
        (3 << 20, 4 << 20, False),  # one placed reply
        (3 << 20, 1 << 20, False),  # several, header in the first, "\n" in the last
        (2 << 20, 1 << 20, True),  # an extra empty read brings END
        ((1 << 20) - 100, 1 << 20, False),  # header and payload in one, then "\n"
        (3 << 20, 100_000, False),  # small replies: none placed, each copied
    ],
)
async def test_block_read_straight_into_the_buffer(
    size: int, request_size: int, split: bool
) -> None:
    async with (
        served(block_device(size)) as (server, _),
        aiotmc.open(server.resource(), request_size=request_size) as inst,
    ):
        server.split_exact_multiple = split
        buffer = bytearray(size + 10)
        for _ in range(2):
            payload = await inst.query_block("DATA?", into=buffer)
            assert len(payload) == size and payload == test_pattern(size)
            buffer[:] = bytes(len(buffer))
        assert await inst.query("ECHO after") == "after"
        small = bytearray(size - 1)  # does not fit: typed, and the link is in step after
        with pytest.raises(aiotmc.LocalProtocolError, match="does not fit"):
            await inst.query_block("DATA?", into=small)
        assert await inst.query("ECHO after") == "after"


async def test_indefinite_block_into_a_buffer_is_read_the_usual_way() -> None:
    device = echo_device()
    payload = bytes(test_pattern(1 << 20)).replace(b"\n", b"x")
    device.add_command("DATA?", lambda call: b"#0" + payload)
    async with served(device) as (server, _), aiotmc.open(server.resource()) as inst:
        buffer = bytearray(2 << 20)
        assert await inst.query_block("DATA?", into=buffer) == payload


async def test_block_into_a_buffer_cancelled_midway_never_writes_it_later() -> None:
    size = 4 << 20
    async with (
        served(block_device(size)) as (server, _),
        aiotmc.open(server.resource(), request_size=size + 64) as inst,
    ):
        buffer = bytearray(size)
        handler = server._read

        async def cancelling(conn: Any, parms: Any) -> Any:
            scope.cancel()  # the client gives up while the 4 MiB reply is on its way
            return await handler(conn, parms)

        server._read = cancelling  # type: ignore[method-assign]
        with anyio.CancelScope() as scope:
            await inst.query_block("DATA?", into=buffer)
        assert scope.cancelled_caught
        server._read = handler  # type: ignore[method-assign]
        snapshot = bytes(buffer)
        assert await inst.query("ECHO after") == "after"  # the late reply is skipped
        assert bytes(buffer) == snapshot
        assert await inst.query_block("DATA?", into=buffer) == test_pattern(size)


@pytest.mark.parametrize("split", [False, True])
async def test_response_an_exact_multiple_of_the_request_size(split: bool) -> None:
    # '#' '5' '12280' payload '\n' = 3 * 4096 bytes: the last read is full and ends the
    # message; with ``split`` the server answers REQCNT and sends END in an empty read.
    size = 3 * 4096 - 3 - 5
    assert len(block_header(size)) + size + 1 == 3 * 4096
    async with served(block_device(size)) as (server, _):
        server.split_exact_multiple = split
        async with aiotmc.open(server.resource(), request_size=4096) as inst:
            for _ in range(2):
                server.calls.clear()
                assert await inst.query_block("DATA?") == test_pattern(size)
                reads = [p for c, p in server.calls if p == Proc.DEVICE_READ]
                assert len(reads) == (4 if split else 3)
            assert await inst.query("*IDN?") == "aiotmc,SIM-DMM,0001,0.1"


async def test_write_is_chunked_to_max_recv_size_with_end_only_on_the_last() -> None:
    device = echo_device()
    seen: list[bytes] = []
    write = device.write
    device.write = lambda message: (seen.append(bytes(message)), write(message))[1]  # type: ignore[method-assign]
    flags: list[int] = []
    async with served(device, max_recv_size=4096) as (server, _):
        handler = server._write

        async def spy(conn: Any, parms: DeviceWriteParms) -> bytes:
            flags.append(parms.flags & END)
            return await handler(conn, parms)

        server._write = spy  # type: ignore[method-assign]
        async with aiotmc.open(server.resource()) as inst:
            payload = bytes(test_pattern(10_000))
            await inst.write_raw(b"ECHO " + block_header(len(payload)) + payload + b"\n")
            assert seen == [b"ECHO " + block_header(len(payload)) + payload + b"\n"]
            assert flags == [0, 0, END]
            assert inst.transport.max_recv_size == 4096


async def test_short_writes_send_the_rest() -> None:
    device = echo_device()
    async with served(device) as (server, _), aiotmc.open(server.resource()) as inst:
        server.short_writes = 3  # the device takes 3 bytes per device_write
        assert await inst.query("ECHO abcdef") == "abcdef"


async def test_max_recv_size_all_ones_is_clamped() -> None:
    async with (
        served(max_recv_size=0xFFFFFFFF) as (server, _),
        aiotmc.open(server.resource()) as inst,
    ):
        assert inst.transport.max_recv_size == 1 << 30
        assert await inst.query("ECHO ok") == "ok"


async def test_response_over_max_size_is_consumed_and_typed() -> None:
    async with (
        served(block_device(10_000)) as (server, _),
        aiotmc.open(server.resource(), request_size=1000) as inst,
    ):
        await inst.write("DATA?")
        with pytest.raises(aiotmc.RemoteProtocolError, match="exceeds max_size"):
            await inst.read_raw(max_size=5000)
        assert await inst.query("ECHO next") == "next"
        assert inst.transport.clears == 0  # read to its end: no resync needed


# -- timeouts and cancellation ---------------------------------------------------------------


async def test_device_timeout_is_read_timeout_and_the_late_answer_is_dropped() -> None:
    device = echo_device()
    async with served(device) as (server, _), aiotmc.open(server.resource()) as inst:
        device.delay_next_responses(0.3)
        start = anyio.current_time()
        with pytest.raises(aiotmc.ReadTimeout, match="error 15"):
            await inst.query("ECHO late", timeout=0.1)
        assert anyio.current_time() - start < 0.1 + REPLY_MARGIN
        assert await inst.query("ECHO fresh") == "fresh"
        assert inst.transport.clears == 1
        with anyio.fail_after(2):  # the late answer never surfaces
            assert await inst.query("ECHO again") == "again"


async def test_response_that_never_comes_times_out_in_time() -> None:
    device = echo_device()
    async with served(device) as (server, _), aiotmc.open(server.resource()) as inst:
        device.delay_next_responses(math.inf)
        with pytest.raises(aiotmc.ReadTimeout):
            await inst.query("ECHO never", timeout=0.2)
        assert await inst.query("ECHO then") == "then"


async def test_cancelled_read_sends_abort_then_the_link_is_in_step() -> None:
    device = echo_device()
    async with served(device) as (server, _), aiotmc.open(server.resource()) as inst:
        device.delay_next_responses(math.inf)
        with anyio.move_on_after(0.1):
            await inst.query("ECHO lost", timeout=30)  # device_read blocks for 30 s
        with anyio.fail_after(5):
            assert await inst.query("ECHO found") == "found"
        transport = inst.transport
        assert isinstance(transport, Vxi11Transport)
        assert transport.aborts == 1
        assert transport.reconnects == 0
        assert ("abort", Proc.DEVICE_ABORT) in server.calls


async def test_replaced_link_does_not_inherit_a_stale_answer() -> None:
    async with served() as (server, _), aiotmc.open(server.resource()) as inst:
        transport = inst.transport
        assert isinstance(transport, Vxi11Transport)
        await inst.write("ECHO stale")  # its answer waits in the device's output queue
        assert transport._core is not None
        transport._core.broken = True  # as after a call cancelled while partly sent
        assert await inst.query("ECHO fresh") == "fresh"
        assert transport.reconnects == 1


@pytest.mark.parametrize("seed", [1, 2])
async def test_random_cancellations_never_cross_answers(seed: int) -> None:
    rng = random.Random(seed)
    device = echo_device()
    device.latency = 0.001
    async with served(device) as (server, _), aiotmc.open(server.resource()) as inst:
        transport = inst.transport
        assert isinstance(transport, Vxi11Transport)
        cancelled = 0
        for i in range(150):
            with anyio.CancelScope() as scope:
                scope.deadline = anyio.current_time() + rng.uniform(0, 0.003)
                assert await inst.query(f"ECHO a{i}") == f"a{i}"
            cancelled += scope.cancelled_caught
            with anyio.fail_after(5):
                assert await inst.query(f"ECHO b{i}") == f"b{i}"
        assert cancelled > 10
        assert transport.clears > 0


# -- faults from scripted peers -------------------------------------------------------------

Answer = Callable[[SocketStream, Call], Awaitable[bool | None]]


async def send_record(stream: SocketStream, message: bytes) -> None:
    await stream.send(record_mark(len(message)) + message)


async def linked(stream: SocketStream, call: Call) -> bool:
    """Answer create_link (lid 0); True if ``call`` was one."""
    if call.proc == Proc.CREATE_LINK:
        await send_record(stream, encode_reply(call.xid, CreateLinkResp(0, 0, 0, 4096).encode()))
        return True
    return False


@asynccontextmanager
async def rpc_peer(answer: Answer) -> AsyncIterator[tuple[int, list[int]]]:
    """A scripted RPC server: ``answer(stream, call)`` per call; False hangs up.

    Yields the port and a list counting connections."""
    connections: list[int] = []

    async def handler(stream: SocketStream) -> None:
        connections.append(1)
        reassembler = RecordReassembler(max_size=1 << 20)
        async with stream:
            while True:
                record = reassembler.next_record()
                if record is NEED_DATA:
                    try:
                        reassembler.receive_data(await stream.receive())
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        return
                    continue
                assert isinstance(record, bytes)
                if await answer(stream, decode_call(record)) is False:
                    return

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handler)
        try:
            yield port, connections
        finally:
            tg.cancel_scope.cancel()


def resource(port: int) -> str:
    return f"TCPIP0::127.0.0.1,{port}::inst0::INSTR"


def open_peer(port: int, **options: Any) -> Any:
    """Open a scripted peer (they do not serve the interrupt channel)."""
    return aiotmc.open(resource(port), srq=False, **options)


async def answer_reads(stream: SocketStream, call: Call, data: bytes = b"ok\n") -> None:
    if call.proc == Proc.DEVICE_WRITE:
        size = len(DeviceWriteParms.decode(call.args).data)
        await send_record(stream, encode_reply(call.xid, DeviceWriteResp(0, size).encode()))
    elif call.proc == Proc.DEVICE_READ:
        reply = DeviceReadResp(0, Reason.END, data).encode()
        await send_record(stream, encode_reply(call.xid, reply))
    else:
        await send_record(stream, encode_reply(call.xid, b"\0\0\0\0"))


async def test_stale_and_foreign_xids_are_skipped() -> None:
    async def answer(stream: SocketStream, call: Call) -> None:
        if not await linked(stream, call):
            stale = DeviceReadResp(0, Reason.END, b"stale\n").encode()
            await send_record(stream, encode_reply(call.xid ^ 0x5A5A, stale))
            await answer_reads(stream, call)

    async with rpc_peer(answer) as (port, _), open_peer(port) as inst:
        assert await inst.query("X?") == "ok"
        assert await inst.query("X?") == "ok"


async def test_garbled_reply_is_typed_and_the_link_recovers() -> None:
    garble = [True]

    async def answer(stream: SocketStream, call: Call) -> None:
        if await linked(stream, call):
            return
        if call.proc == Proc.DEVICE_READ and garble[0]:
            garble[0] = False
            await send_record(stream, struct.pack(">II", call.xid, 1) + b"\xff" * 7)
            return
        await answer_reads(stream, call)

    async with rpc_peer(answer) as (port, _), open_peer(port) as inst:
        with pytest.raises(aiotmc.RemoteProtocolError, match="garbled"):
            await inst.query("X?")
        assert await inst.query("X?") == "ok"


async def test_two_gigabyte_fragment_header_is_typed_then_reconnects() -> None:
    evil = [True]

    async def answer(stream: SocketStream, call: Call) -> None:
        if await linked(stream, call):
            return
        if call.proc == Proc.DEVICE_READ and evil[0]:
            evil[0] = False
            await stream.send(b"\xff\xff\xff\xf0" + b"x" * 64)
            return
        await answer_reads(stream, call)

    async with rpc_peer(answer) as (port, connections), open_peer(port) as inst:
        with pytest.raises(aiotmc.RemoteProtocolError, match="exceeds max_size"):
            await inst.query("X?", timeout=2)
        assert await inst.query("X?") == "ok"
        assert len(connections) == 2
        assert inst.transport.reconnects == 1


async def test_large_records_received_in_place_keep_the_rules() -> None:
    """Records of 2 MiB take the in-place path: a foreign XID is skipped, a record cut
    short by a lost connection is ConnectionLostError, and the link reconnects."""
    big = bytes(range(256)) * (8 << 10)  # 2 MiB
    plan = ["foreign", "cut", "ok"]

    async def answer(stream: SocketStream, call: Call) -> bool | None:
        if await linked(stream, call):
            return None
        if call.proc != Proc.DEVICE_READ:
            await answer_reads(stream, call)
            return None
        step = plan.pop(0) if plan else "ok"
        reply = encode_reply(call.xid, DeviceReadResp(0, Reason.END, big).encode())
        if step == "foreign":
            foreign = encode_reply(call.xid ^ 0x5A5A, DeviceReadResp(0, Reason.END, big).encode())
            await send_record(stream, foreign)
        elif step == "cut":
            await stream.send(record_mark(len(reply)) + reply[: len(reply) // 2])
            return False  # hang up mid-record
        await send_record(stream, reply)
        return None

    async def query(inst: aiotmc.Instrument) -> bytes:
        await inst.write("X?")
        return await inst.read_raw(max_size=4 << 20)

    async with (
        rpc_peer(answer) as (port, connections),
        open_peer(port, request_size=4 << 20) as inst,
    ):
        assert await query(inst) == big  # the foreign one was skipped
        with pytest.raises(aiotmc.ConnectionLostError):
            await query(inst)
        assert await query(inst) == big
        assert len(connections) == 2


async def test_server_that_never_answers() -> None:
    async def answer(stream: SocketStream, call: Call) -> None:
        await linked(stream, call)

    async with rpc_peer(answer) as (port, _), open_peer(port) as inst:
        start = anyio.current_time()
        with pytest.raises(aiotmc.WriteTimeout):
            await inst.write("X", timeout=0.2)
        with pytest.raises(aiotmc.AiotmcTimeout):
            await inst.query("X?", timeout=0.2)
        assert anyio.current_time() - start < 2 * (0.2 + REPLY_MARGIN) + 1


async def test_server_that_never_answers_create_link() -> None:
    async def answer(stream: SocketStream, call: Call) -> None:
        pass

    async with rpc_peer(answer) as (port, _):
        with pytest.raises(aiotmc.AiotmcTimeout):
            async with open_peer(port, connect_timeout=0.3):
                pass  # pragma: no cover


async def test_prog_mismatch_is_typed() -> None:
    async def answer(stream: SocketStream, call: Call) -> None:
        reply = encode_accepted_error(call.xid, AcceptStat.PROG_MISMATCH, mismatch=(3, 4))
        await send_record(stream, reply)

    async with rpc_peer(answer) as (port, _):
        with pytest.raises(aiotmc.RemoteProtocolError, match="PROG_MISMATCH"):
            async with open_peer(port):
                pass  # pragma: no cover


async def test_portmapper_without_the_program_names_the_host() -> None:
    async def answer(stream: SocketStream, call: Call) -> None:
        await send_record(stream, encode_reply(call.xid, encode_port(0)))

    async with rpc_peer(answer) as (port, _):
        with pytest.raises(aiotmc.ResourceNotFoundError, match=r"127\.0\.0\.1"):
            async with aiotmc.open("TCPIP0::127.0.0.1::INSTR", portmapper_port=port):
                pass  # pragma: no cover


async def test_link_lost_mid_read_then_reconnects() -> None:
    device = echo_device()
    async with served(device) as (server, _), aiotmc.open(server.resource()) as inst:
        device.delay_next_responses(math.inf)
        reading = anyio.Event()
        wait_output = server._wait_output

        async def spy(conn: Any, link: Any, deadline: float) -> int:
            reading.set()
            return await wait_output(conn, link, deadline)

        server._wait_output = spy  # type: ignore[method-assign]
        async with anyio.create_task_group() as tg:

            async def cut() -> None:
                await reading.wait()
                server.disconnect_all()

            tg.start_soon(cut)
            with pytest.raises(aiotmc.ConnectionLostError):
                await inst.query("ECHO lost", timeout=10)
        assert await inst.query("ECHO back") == "back"
        assert inst.transport.reconnects == 1


async def test_device_locked_by_another_link() -> None:
    async with served() as (server, _):
        async with aiotmc.open(server.resource()) as owner, aiotmc.open(server.resource()) as other:
            mine, theirs = owner.transport, other.transport
            assert isinstance(mine, Vxi11Transport) and isinstance(theirs, Vxi11Transport)
            await mine.lock()
            with pytest.raises(aiotmc.ResourceBusyError, match="locked by another link"):
                await other.query("*IDN?")
            start = anyio.current_time()
            with pytest.raises(aiotmc.ResourceBusyError):
                await theirs.lock(timeout=0.2)  # the device waits 0.2 s, then refuses
            assert anyio.current_time() - start >= 0.15
            assert await owner.query("ECHO mine") == "mine"
            async with anyio.create_task_group() as tg:
                tg.start_soon(mine.unlock)
                await theirs.lock(timeout=5)  # granted when the owner unlocks
            assert await other.query("ECHO theirs") == "theirs"
            with pytest.raises(aiotmc.LocalProtocolError, match="no lock held"):
                await mine.unlock()
        async with aiotmc.open(server.resource()) as later:  # the lock went with its link
            assert await later.query("ECHO free") == "free"


async def test_lock_at_open() -> None:
    async with served() as (server, _), aiotmc.open(server.resource(), lock=True) as owner:
        with pytest.raises(aiotmc.ResourceBusyError, match="create_link"):
            async with aiotmc.open(server.resource(), lock=True):
                pass  # pragma: no cover
        transport = owner.transport
        assert isinstance(transport, Vxi11Transport)
        async with anyio.create_task_group() as tg:
            tg.start_soon(transport.unlock)
            async with aiotmc.open(server.resource(), lock=True, lock_timeout=5) as second:
                assert await second.query("ECHO second") == "second"
        assert await owner.query("ECHO ok") == "ok"  # released with the second link


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_cancellation_storm() -> None:
    """5,000 cancellations per backend at random points; every answer is its own."""
    rng = random.Random(15)
    device = echo_device()
    async with served(device) as (server, _), aiotmc.open(server.resource()) as inst:
        cancelled = completed = 0
        for i in range(50_000):
            device.latency = rng.choice((0.0, 0.0005, 0.002))
            with anyio.CancelScope() as scope:
                scope.deadline = anyio.current_time() + rng.uniform(0, 0.004)
                assert await inst.query(f"ECHO {i}") == str(i)
                completed += 1
            cancelled += scope.cancelled_caught
            if cancelled >= 5_000 and completed >= 500:
                break
        assert cancelled >= 5_000
        transport = inst.transport
        assert isinstance(transport, Vxi11Transport)
        assert transport.aborts and transport.clears
        device.latency = 0.0
        assert await inst.query("ECHO last") == "last"


async def test_reconnect_policy_survives_a_server_restart() -> None:
    device = echo_device()
    policy = aiotmc.Reconnect(attempts=3, backoff=0.05)
    async with served(device) as (server, _):
        port, abort_port = server.port, server.abort_port
        async with aiotmc.open(server.resource(), reconnect=policy) as inst:
            assert await inst.query("ECHO 1") == "1"
            await server.__aexit__(None, None, None)  # the instrument reboots...
            with pytest.raises(aiotmc.ConnectionLostError):
                await inst.query("ECHO 2")  # the query on the wire is not replayed
            async with Vxi11Server(device, port=port, abort_port=abort_port):  # ...and is back
                assert await inst.query("ECHO 3") == "3"
            assert inst.transport.reconnects == 1


async def test_device_answering_empty_reads_forever_is_typed() -> None:
    async def answer(stream: SocketStream, call: Call) -> None:
        if not await linked(stream, call):
            if call.proc == Proc.DEVICE_READ:
                reply = DeviceReadResp(0, Reason.NONE, b"").encode()
                await send_record(stream, encode_reply(call.xid, reply))
            else:
                await answer_reads(stream, call)

    async with rpc_peer(answer) as (port, _), open_peer(port) as inst:
        with pytest.raises(aiotmc.RemoteProtocolError, match="empty answers"):
            await inst.query("X?")


async def test_close_from_another_task_while_a_read_waits() -> None:
    device = echo_device()
    async with served(device) as (server, _):
        async with aiotmc.open(server.resource()) as inst:
            device.delay_next_responses(math.inf)
            failures: list[BaseException] = []

            async def reader() -> None:
                try:
                    await inst.query("ECHO never", timeout=30)
                except Exception as exc:
                    failures.append(exc)

            async with anyio.create_task_group() as tg:
                tg.start_soon(reader)
                await anyio.wait_all_tasks_blocked()
                with anyio.CancelScope() as scope:
                    scope.cancel()
                    await inst.transport.aclose()  # inside an already-cancelled scope
            assert len(failures) == 1
            assert isinstance(failures[0], (anyio.ClosedResourceError, aiotmc.AiotmcError))
        with anyio.fail_after(5):
            await server.wait_connections(0)


# -- pipelined queries (device_write and device_read in one round trip) ---------------------


async def test_pipelined_query() -> None:
    async with (
        served(block_device(10_000)) as (server, _),
        aiotmc.open(server.resource(), pipeline=True, request_size=4096) as inst,
    ):
        assert await inst.query("ECHO one") == "one"
        server.calls.clear()
        assert await inst.query("ECHO two") == "two"
        assert server.calls == [("core", Proc.DEVICE_WRITE), ("core", Proc.DEVICE_READ)]
        block = await inst.query_block("DATA?")
        assert block == test_pattern(10_000)
        await inst.write("ECHO three")
        assert await inst.read() == "three"


async def test_pipelined_short_write_is_finished_step_by_step() -> None:
    async with served() as (server, _), aiotmc.open(server.resource(), pipeline=True) as inst:
        server.short_writes = 4
        assert await inst.query("ECHO abcdef") == "abcdef"
        assert ("abort", Proc.DEVICE_ABORT) in server.calls


async def test_pipelined_timeout_and_refusal_resynchronise() -> None:
    device = echo_device()
    async with (
        served(device) as (server, _),
        aiotmc.open(server.resource(), pipeline=True) as inst,
        aiotmc.open(server.resource()) as owner,
    ):
        device.delay_next_responses(0.3)
        with pytest.raises(aiotmc.ReadTimeout):
            await inst.query("ECHO late", timeout=0.1)
        assert await inst.query("ECHO fresh") == "fresh"
        transport = owner.transport
        assert isinstance(transport, Vxi11Transport)
        await transport.lock()
        with pytest.raises(aiotmc.ResourceBusyError):
            await inst.query("ECHO locked")
        await transport.unlock()
        assert await inst.query("ECHO unlocked") == "unlocked"


@pytest.mark.parametrize("seed", [3, 4])
async def test_pipelined_random_cancellations_never_cross_answers(seed: int) -> None:
    rng = random.Random(seed)
    device = echo_device()
    async with served(device) as (server, _), aiotmc.open(server.resource(), pipeline=True) as inst:
        cancelled = 0
        for i in range(150):
            device.latency = rng.choice((0.0, 0.001))
            with anyio.CancelScope() as scope:
                scope.deadline = anyio.current_time() + rng.uniform(0, 0.003)
                assert await inst.query(f"ECHO a{i}") == f"a{i}"
            cancelled += scope.cancelled_caught
        device.latency = 0.0
        with anyio.fail_after(5):
            assert await inst.query("ECHO end") == "end"
        assert cancelled > 10


async def test_block_read_cancelled_midway_then_in_step() -> None:
    size = 1 << 20
    async with (
        served(block_device(size)) as (server, _),
        aiotmc.open(server.resource(), request_size=16 * 1024) as inst,
    ):
        reads = 0
        handler = server._read

        async def counting(conn: Any, parms: Any) -> bytes:
            nonlocal reads
            reads += 1
            if reads == 5:
                scope.cancel()  # the client gives up in the middle of the block
            return await handler(conn, parms)

        server._read = counting  # type: ignore[method-assign]
        with anyio.CancelScope() as scope:
            await inst.query_block("DATA?")
        assert scope.cancelled_caught
        assert await inst.query("ECHO after") == "after"
        assert await inst.query_block("DATA?") == test_pattern(size)


# -- service requests over the interrupt channel -----------------------------------------------


async def test_service_requests_over_the_interrupt_channel() -> None:
    from aiotmc._background import running

    before = running()
    async with served() as (server, _), aiotmc.open(server.resource()) as inst:
        transport = inst.transport
        assert isinstance(transport, Vxi11Transport)
        assert transport.srq is not None and transport.info.capabilities.srq
        await inst.write("*SRE 32;*ESE 1")
        for _ in range(2):  # the interrupt connection stays up between requests
            assert await inst.query("*ESR?") in ("0", "1")  # reading clears it: a new edge
            async with inst.service_requests() as events:
                await inst.write("*OPC")
                with anyio.fail_after(5):
                    event = await events.receive()
            # the status byte, polled on a second link: RQS and the event summary bit
            assert event.status == aiotmc.StatusByte.RQS | aiotmc.StatusByte.ESB
        assert server.srqs_sent == 2
        assert running() == before + 1  # the interrupt listener
    assert ("core", Proc.DESTROY_INTR_CHAN) in server.calls
    assert running() == before


async def test_interrupt_channel_survives_junk() -> None:
    async with served() as (server, _), aiotmc.open(server.resource()) as inst:
        transport = inst.transport
        assert isinstance(transport, Vxi11Transport) and transport._interrupts is not None
        interrupts = transport._interrupts
        async with await anyio.connect_tcp("127.0.0.1", interrupts.port) as junk:
            await junk.send(record_mark(8) + b"garbage!")
            with anyio.fail_after(5):
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                    await junk.receive()
        assert interrupts.rejected == 1
        await inst.write("*SRE 32;*ESE 1")
        with anyio.fail_after(5):
            async with inst.service_requests() as events:
                await inst.write("*OPC")
                await events.receive()


async def test_srq_after_reconnect_and_srq_off() -> None:
    async with served() as (server, _), aiotmc.open(server.resource()) as inst:
        transport = inst.transport
        assert isinstance(transport, Vxi11Transport)
        await transport.reconnect()  # a new link asks for the interrupt channel again
        await inst.write("*SRE 32;*ESE 1")
        with anyio.fail_after(5):
            async with inst.service_requests() as events:
                await inst.write("*OPC")
                await events.receive()
    async with served() as (server, _), aiotmc.open(server.resource(), srq=False) as inst:
        assert inst.transport.srq is None
        assert not inst.transport.info.capabilities.srq
        assert ("core", Proc.CREATE_INTR_CHAN) not in server.calls


async def test_srq_when_an_operation_completes_later() -> None:
    device = echo_device()
    async with served(device) as (server, _), aiotmc.open(server.resource()) as inst:
        await inst.write("*SRE 32;*ESE 1")
        device.start_operation(0.1)  # *OPC completes with it, with no client call running
        async with inst.service_requests() as events:
            await inst.write("*OPC")
            with anyio.fail_after(5):
                event = await events.receive()
        assert event.status & aiotmc.StatusByte.ESB


async def test_device_that_never_answers_create_intr_chan_opens_without_srq() -> None:
    async def answer(stream: SocketStream, call: Call) -> None:
        if call.proc == Proc.CREATE_INTR_CHAN:
            return  # as a device whose connection back to us hangs behind a firewall
        if not await linked(stream, call):
            await answer_reads(stream, call)

    async with rpc_peer(answer) as (port, _):
        start = anyio.current_time()
        async with aiotmc.open(resource(port)) as inst:
            assert inst.transport.srq is None
            assert anyio.current_time() - start < 10
            assert await inst.query("X?") == "ok"  # the late reply is skipped by XID
