"""Vendor-specific messages and class/vendor control transfers on UsbtmcTransport.

Against the emulated instrument behind FakeUsbPort: its vendor-specific messages are a
loopback (``UsbtmcFunction.vendor_data``) and vendor request ``VENDOR_REGISTER`` a
register (``vendor_registers``). Cancellation points are reached with ``FakeUsbPort.hold``.
"""

from __future__ import annotations

import anyio
import pytest

from aiotmc import (
    LocalProtocolError,
    ReadTimeout,
    RemoteProtocolError,
    UsbStallError,
)
from aiotmc.protocol.usbtmc import MsgID, UsbtmcState, pack_header
from aiotmc.sim.usbtmc_device import VENDOR_REGISTER as REG
from aiotmc.transports.usbtmc import MAX_CONTROL_LENGTH

from ..protocol.test_usbtmc import IDN
from .test_usbtmc_fake import R, query, rig


def next_tag(tag: int, steps: int) -> int:
    """The bTag ``steps`` transfers after ``tag`` (1..255, wrapping)."""
    return (tag - 1 + steps) % 255 + 1


def payload(size: int) -> bytes:
    return bytes((i * 7 + 3) & 0xFF for i in range(size))


@pytest.mark.parametrize("mps", [64, 512])
@pytest.mark.parametrize("size", [1, 3, 52, 64, 500, 512, 4096, 200_000])
async def test_vendor_loopback(size: int, mps: int) -> None:
    async with rig(function_options={"max_packet_size": mps}) as r:
        t = r.transport
        assert await query(t, b"*IDN?\n") == IDN  # the connection expects no stale ZLP now
        data = payload(size)
        await t.vendor_write(data)
        assert r.function.vendor_data == data
        assert await t.vendor_read(size) == data
        # A transfer that ended on a full packet may be followed by a ZLP: still in step.
        assert await query(t, b"*IDN?\n") == IDN
        assert await t.vendor_read(16) == b""  # nothing left: an empty transfer
        assert await query(t, b"*IDN?\n") == IDN


async def test_vendor_read_takes_at_most_max_size() -> None:
    async with rig() as r:
        t = r.transport
        await t.vendor_write(payload(1000))
        parts = [await t.vendor_read(300) for _ in range(4)]
        assert [len(p) for p in parts] == [300, 300, 300, 100]
        assert b"".join(parts) == payload(1000)


async def test_vendor_transfers_share_the_btag_sequence() -> None:
    async with rig() as r:
        t = r.transport
        for _ in range(200):  # wraps around 255
            assert await query(t, b"*IDN?\n") == IDN
            before = t.connection.last_btag
            await t.vendor_write(b"x")
            assert t.connection.last_btag == next_tag(before, 1)
            assert await t.vendor_read(1) == b"x"
            assert t.connection.last_btag == next_tag(before, 2)


async def test_vendor_sizes_are_bounded_before_anything_is_sent() -> None:
    async with rig(max_transfer_size=1024) as r:
        t = r.transport
        sent = r.port.calls["bulk_out"]
        for call in (
            t.vendor_write(b""),
            t.vendor_write(bytes(1025)),
            t.vendor_read(0),
            t.vendor_read(1025),
        ):
            with pytest.raises(LocalProtocolError):
                await call
        assert r.port.calls["bulk_out"] == sent
        await t.vendor_write(bytes(1024))
        assert len(await t.vendor_read(1024)) == 1024


async def test_cancelled_vendor_read_is_aborted_then_next_query_is_correct() -> None:
    async with rig() as r:
        t = r.transport
        await t.vendor_write(payload(100))
        start = len(r.port.requests)
        with anyio.CancelScope() as scope:
            hold = r.port.hold("bulk_in")
            async with anyio.create_task_group() as tg:
                tg.start_soon(t.vendor_read, 100)
                await hold.reached.wait()
                tag = t.connection.last_btag
                scope.cancel()
        assert hold.cancelled
        assert r.requests(start) == [
            (R.INITIATE_ABORT_BULK_IN, tag),
            (R.CHECK_ABORT_BULK_IN_STATUS, 0),
        ]
        assert await query(t, b"*IDN?\n") == IDN
        assert t.recoveries == 1 and not t.broken


async def test_vendor_read_past_its_deadline_raises_read_timeout() -> None:
    async with rig() as r:
        t = r.transport
        hold = r.port.hold("bulk_in")
        with pytest.raises(ReadTimeout):
            await t.vendor_read(10, deadline=anyio.current_time() + 0.02)
        assert hold.cancelled
        assert await query(t, b"*IDN?\n") == IDN


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda tag: pack_header(MsgID.VENDOR_SPECIFIC_IN, tag, 50) + bytes(52),  # > asked
        lambda tag: pack_header(MsgID.VENDOR_SPECIFIC_IN, tag % 255 + 1, 4) + bytes(4),
        lambda tag: pack_header(MsgID.DEV_DEP_MSG_IN, tag, 4, 1) + bytes(4),
    ],
    ids=["oversized", "wrong_tag", "wrong_msgid"],
)
async def test_broken_vendor_answer_is_typed_and_the_link_recovers(corrupt) -> None:  # type: ignore[no-untyped-def]
    async with rig() as r:
        t = r.transport
        hold = r.port.hold("bulk_in")
        async with anyio.create_task_group() as tg:

            async def read() -> None:
                with pytest.raises(RemoteProtocolError):
                    await t.vendor_read(10)

            tg.start_soon(read)
            await hold.reached.wait()
            r.function._transfer = corrupt(t.connection.last_btag)
            hold.release()
        assert (R.INITIATE_ABORT_BULK_IN, t.connection.last_btag) in r.requests()
        assert await query(t, b"*IDN?\n") == IDN
        assert t.connection.state is UsbtmcState.IDLE


async def test_vendor_control_register_roundtrip() -> None:
    async with rig() as r:
        t = r.transport
        assert await t.control_transfer(0x41, REG, 7, 0, b"hello") == b""
        assert r.function.vendor_registers == {7: b"hello"}
        assert await t.control_transfer(0xC1, REG, 7, 0, 64) == b"hello"
        assert await t.control_transfer(0xC1, REG, 7, 0, 2) == b"he"  # wLength bounds it
        big = payload(MAX_CONTROL_LENGTH)
        await t.control_transfer(0x40, REG, 8, 0, big)
        assert await t.control_transfer(0xC0, REG, 8, 0, MAX_CONTROL_LENGTH) == big


async def test_class_control_transfer() -> None:
    async with rig() as r:
        reply = await r.transport.control_transfer(0xA1, R.GET_CAPABILITIES, 0, 0, 0x18)
        assert reply == r.function.capabilities.to_bytes()


async def test_refused_control_request_stalls_and_the_link_stays_usable() -> None:
    async with rig() as r:
        t = r.transport
        with pytest.raises(UsbStallError):
            await t.control_transfer(0xC1, 99, 0, 0, 8)
        assert await query(t, b"*IDN?\n") == IDN


@pytest.mark.parametrize(
    "args",
    [
        (0x80, 6, 0x0100, 0, 18),  # standard GET_DESCRIPTOR: not ours
        (0x00, 9, 1, 0, 0),  # standard SET_CONFIGURATION
        (0xC1, 1, 0, 0, b"data"),  # IN with data
        (0x41, 1, 0, 0, 5),  # OUT with a length
        (0xC1, 1, 0, 0, MAX_CONTROL_LENGTH + 1),
        (0x41, 1, 0, 0, bytes(MAX_CONTROL_LENGTH + 1)),
        (0xC1, 256, 0, 0, 1),
        (0xC1, 1, 0x10000, 0, 1),
        (0xC1, 1, 0, -1, 1),
        (0x1C1, 1, 0, 0, 1),
    ],
)
async def test_control_transfer_fields_are_checked_before_sending(args: tuple) -> None:  # type: ignore[type-arg]
    async with rig() as r:
        sent = len(r.port.requests)
        with pytest.raises(LocalProtocolError):
            await r.transport.control_transfer(*args)
        assert len(r.port.requests) == sent
        assert await query(r.transport, b"*IDN?\n") == IDN


async def test_closed_transport_refuses_vendor_operations() -> None:
    async with rig() as r:
        t = r.transport
    for call in (t.vendor_write(b"x"), t.vendor_read(1), t.control_transfer(0xC1, 1, 0, 0, 1)):
        with pytest.raises(anyio.ClosedResourceError):
            await call
