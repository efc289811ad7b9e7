"""UsbtmcTransport over FakeUsbPort and the emulated USBTMC/USB488 instrument.

Every test runs on asyncio and trio. Cancellation points are reached with
``FakeUsbPort.hold`` (a parked call), never with sleeps; every test is bounded by
``anyio.fail_after``. Recovery is asserted on the control requests the device saw.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from anyio.lowlevel import checkpoint

from aiotmc import (
    ConnectionLostError,
    LocalProtocolError,
    ReadTimeout,
    RemoteProtocolError,
    SessionBrokenError,
    UnsupportedOperation,
    UsbStallError,
    WriteTimeout,
)
from aiotmc.protocol.events import ControlRequest
from aiotmc.protocol.ieee4882 import block_header
from aiotmc.protocol.quirks import KNOWN_QUIRKS, NO_QUIRKS, Quirks
from aiotmc.protocol.usb488 import Usb488Request
from aiotmc.protocol.usbtmc import UsbtmcConnection, UsbtmcRequest, UsbtmcState
from aiotmc.sim.device import SimDevice, test_pattern
from aiotmc.sim.fake_port import FakeUsbPort
from aiotmc.sim.usb_function import STALL
from aiotmc.sim.usbtmc_device import UsbtmcFunction
from aiotmc.transports.base import MessageTransport
from aiotmc.transports.usbtmc import UsbtmcTransport, open_usbtmc_transport

from ..protocol.test_usbtmc import IDN, TmcTestDevice

RESOURCE = "USB0::0x0957::0x1796::MY123::INSTR"
R = UsbtmcRequest


@dataclass
class Rig:
    device: SimDevice
    function: UsbtmcFunction
    port: FakeUsbPort
    transport: UsbtmcTransport

    def requests(self, start: int = 0) -> list[tuple[int, int]]:
        """(bRequest, wValue) of the control requests since ``start``, GET_CAPABILITIES
        and READ_STATUS_BYTE left out."""
        skip = {R.GET_CAPABILITIES, Usb488Request.READ_STATUS_BYTE}
        return [(r.request, r.value) for r in self.port.requests[start:] if r.request not in skip]


@asynccontextmanager
async def rig(
    *,
    quirks: Quirks = NO_QUIRKS,
    device_quirks: Quirks | None = None,
    function_options: dict[str, Any] | None = None,
    resource: str = RESOURCE,
    timeout: float = 10,
    **options: Any,
) -> AsyncIterator[Rig]:
    device = TmcTestDevice()
    function = UsbtmcFunction(
        device,
        quirks=quirks if device_quirks is None else device_quirks,
        **(function_options or {}),
    )
    port = FakeUsbPort(function)
    options = {"poll_interval": 0.001, "drain_timeout": 0.05, **options}
    with anyio.fail_after(timeout):
        async with open_usbtmc_transport(port, resource=resource, quirks=quirks, **options) as t:
            yield Rig(device, function, port, t)


async def query(t: UsbtmcTransport, command: bytes, max_size: int = 1 << 20) -> bytes:
    await t.send_message([command])
    return await t.receive_message(max_size=max_size)


def pattern_block(size: int) -> bytes:
    return block_header(size) + bytes(test_pattern(size)) + b"\n"


async def until(predicate: Callable[[], bool]) -> None:
    """Yield to other tasks until ``predicate()`` holds (no clock involved)."""
    while not predicate():
        await checkpoint()


# -- the basics ------------------------------------------------------------------------------


async def test_query_info_and_capabilities() -> None:
    async with rig() as r:
        t = r.transport
        assert isinstance(t, MessageTransport)
        assert await query(t, b"*IDN?\n") == IDN
        caps = t.info.capabilities
        assert caps.srq and caps.read_stb and caps.trigger and caps.remote_local and caps.eom
        assert t.info.kind == "usbtmc" and t.info.details["vid"] == "0x0957"
        assert t.capabilities.usb488 and t.srq is not None
        assert t.connection.state is UsbtmcState.IDLE


async def test_multi_megabyte_block_into_caller_buffer() -> None:
    size = 5 * 1024 * 1024 + 3
    async with rig() as r:
        buffer = memoryview(bytearray(size + 100))
        buffer[size:] = b"\xee" * 100
        await r.transport.send_message([b"DATA? %d\n" % size])
        payload = await r.transport.receive_block(buffer, max_size=size)
        assert payload.obj is buffer.obj and len(payload) == size
        assert payload == test_pattern(size)  # 0x0A appears every 256 bytes
        assert buffer[size:] == b"\xee" * 100
        assert await query(r.transport, b"*IDN?\n") == IDN


async def test_block_into_a_new_buffer_and_as_a_message() -> None:
    async with rig() as r:
        t = r.transport
        await t.send_message([b"DATA? 300000\n"])
        payload = await t.receive_block(max_size=1 << 20)
        assert payload == test_pattern(300000)
        message = await query(t, b"DATA? 70000\n")
        assert message == pattern_block(70000)
        await t.send_message([b"DATA? 0\n"])
        assert len(await t.receive_block(max_size=10)) == 0


async def test_indefinite_block() -> None:
    async with rig() as r:
        r.device.add_raw_query("RAW?", lambda args: b"#0ab\ncd\n")
        await r.transport.send_message([b"RAW?\n"])
        assert await r.transport.receive_block(max_size=100) == b"ab\ncd"
        buffer = memoryview(bytearray(10))
        await r.transport.send_message([b"RAW?\n"])
        assert await r.transport.receive_block(buffer, max_size=100) == b"ab\ncd"
        await r.transport.send_message([b"RAW?\n"])
        with pytest.raises(LocalProtocolError, match="does not fit"):
            await r.transport.receive_block(buffer[:4], max_size=100)
        await r.transport.send_message([b"RAW?\n"])
        with pytest.raises(RemoteProtocolError, match="max_size"):
            await r.transport.receive_block(max_size=3)
        assert await query(r.transport, b"*IDN?\n") == IDN


async def test_upload_in_several_transfers() -> None:
    size = 3 * 1024 * 1024 + 1
    payload = bytes(test_pattern(size))
    async with rig(max_transfer_size=256 * 1024) as r:
        await r.transport.send_message([b"UPL ", block_header(size), payload, b"\n"])
        assert len(r.function.seen.out_transfers) == 13
        assert [eom for _, _, eom in r.function.seen.out_transfers] == [False] * 12 + [True]
        answer = await query(r.transport, b"UPL?\n")
        assert answer == b"%d,%d\n" % (size, zlib.crc32(payload))


async def test_message_larger_than_max_size_is_discarded() -> None:
    async with rig(max_transfer_size=4096) as r:
        await r.transport.send_message([b"DATA? 20000\n"])
        with pytest.raises(RemoteProtocolError, match="max_size"):
            await r.transport.receive_message(max_size=1000)
        assert await query(r.transport, b"*IDN?\n") == IDN
        assert r.requests() == []  # consumed in step: no abort needed


async def test_block_errors_leave_the_link_in_step() -> None:
    async with rig() as r:
        t = r.transport
        await t.send_message([b"DATA? 5000\n"])
        with pytest.raises(LocalProtocolError, match="does not fit"):
            await t.receive_block(memoryview(bytearray(100)), max_size=1 << 20)
        await t.send_message([b"DATA? 5000\n"])
        with pytest.raises(RemoteProtocolError, match="max_size"):
            await t.receive_block(max_size=100)
        await t.send_message([b"*IDN?\n"])
        with pytest.raises(RemoteProtocolError, match=r"expected an IEEE 488\.2 block"):
            await t.receive_block(max_size=100)
        assert await query(t, b"*IDN?\n") == IDN
        assert r.requests() == []


# -- status byte and service requests ---------------------------------------------------------


async def test_read_stb() -> None:
    async with rig() as r:
        assert await r.transport.read_stb() == 0
        r.device.push_error(-100, "Command error")
        assert await r.transport.read_stb() == 0x04


async def test_read_stb_during_an_srq_storm_never_races() -> None:
    async with rig() as r:
        t = r.transport
        assert t.srq is not None
        r.device.push_error(-100, "Command error")  # status byte 0x04
        async with t.srq.subscribe(buffer=10_000) as events:
            sent = []
            for i in range(200):
                for j in range(3):
                    value = 0x40 | ((i * 3 + j) & 0x3F)
                    r.function.inject_srq(value)
                    sent.append(value)
                assert await t.read_stb() == 0x04
            await until(lambda: t.srq is not None and t.srq.published == len(sent))
            got = [int(events.receive_nowait().status) for _ in range(len(sent))]
        assert got == sent


async def test_srq_fan_out_with_a_slow_subscriber() -> None:
    async with rig() as r:
        srq = r.transport.srq
        assert srq is not None
        async with (
            srq.subscribe(buffer=100) as fast1,
            srq.subscribe(buffer=100) as fast2,
            srq.subscribe(buffer=1) as slow,
        ):
            for i in range(50):
                r.function.inject_srq(0x40 | i)
            await until(lambda: srq.published == 50)
            assert await r.transport.read_stb() == 0  # the reader is not blocked
            assert [int(fast1.receive_nowait().status) for _ in range(50)] == [
                0x40 | i for i in range(50)
            ]
            assert [int(fast2.receive_nowait().status) for _ in range(50)] == [
                0x40 | i for i in range(50)
            ]
            assert int(slow.receive_nowait().status) == 0x40
            assert srq.dropped == 49


async def test_service_request_from_the_model() -> None:
    async with rig() as r:
        assert r.transport.srq is not None
        async with r.transport.srq.subscribe() as events:
            await r.transport.send_message([b"*ESE 1;*SRE 32;*OPC\n"])
            event = await events.receive()
        assert int(event.status) & 0x60 == 0x60  # RQS | ESB
        assert event.source == RESOURCE


async def test_service_request_from_an_operation_started_by_trigger() -> None:
    """A bus trigger arms a device timer; its SRQ must arrive without any other traffic."""
    async with rig() as r:
        assert r.transport.srq is not None
        async with r.transport.srq.subscribe() as events:
            await r.transport.send_message([b"*ESE 1;*SRE 32;ARM 5;*OPC\n"])
            await r.transport.trigger()
            event = await events.receive()
        assert int(event.status) & 0x60 == 0x60
        assert await r.transport.read_stb() & 0x20


# -- cancellation and timeouts: abort with the right bTag, next answer correct ---------------


def _abort_in(tag: int) -> list[tuple[int, int]]:
    return [(R.INITIATE_ABORT_BULK_IN, tag), (R.CHECK_ABORT_BULK_IN_STATUS, 0)]


async def test_cancel_while_waiting_for_the_response() -> None:
    async with rig() as r:
        t = r.transport
        r.device.latency = float("inf")
        start = len(r.port.requests)
        with anyio.CancelScope() as scope:
            hold = r.port.hold("bulk_in")
            async with anyio.create_task_group() as tg:
                tg.start_soon(query, t, b"*IDN?\n")
                await hold.reached.wait()
                tag = t.connection.in_tag
                scope.cancel()
        assert hold.cancelled
        assert r.requests(start) == _abort_in(tag)
        r.device.latency = 0.0
        assert await query(t, b"*IDN?\n") == IDN
        assert t.connection.state is UsbtmcState.IDLE and t.recoveries == 1


async def test_fail_after_times_out_then_next_query_is_correct() -> None:
    async with rig() as r:
        r.device.latency = float("inf")
        with pytest.raises(TimeoutError):
            with anyio.fail_after(0.05):
                await query(r.transport, b"*IDN?\n")
        assert (R.INITIATE_ABORT_BULK_IN, r.transport.connection.in_tag) in r.requests()
        r.device.latency = 0.0
        assert await query(r.transport, b"*IDN?\n") == IDN


@pytest.mark.parametrize("rigol", [False, True], ids=["standard", "rigol-one-transfer"])
async def test_cancel_in_the_middle_of_a_response(rigol: bool) -> None:
    quirks = KNOWN_QUIRKS[(0x1AB1, None)] if rigol else NO_QUIRKS
    size = 5 * 1024 * 1024
    async with rig(quirks=quirks) as r:
        t = r.transport
        start = len(r.port.requests)
        with anyio.CancelScope() as scope:
            hold = r.port.hold("bulk_in", after=2)
            async with anyio.create_task_group() as tg:
                tg.start_soon(query, t, b"DATA? %d\n" % size, 10 * size)
                await hold.reached.wait()
                tag = t.connection.in_tag
                scope.cancel()
        assert r.requests(start) == _abort_in(tag)
        assert await query(t, b"*IDN?\n") == IDN
        await t.send_message([b"DATA? %d\n" % size])
        assert await t.receive_block(max_size=size) == test_pattern(size)


# -- several transfers in flight -----------------------------------------------------------


async def test_large_block_read_with_several_transfers_in_flight() -> None:
    size = 3 * 1024 * 1024 + 5
    async with rig(pipeline=True) as r:
        buffer = memoryview(bytearray(size))
        await r.transport.send_message([b"DATA? %d\n" % size])
        payload = await r.transport.receive_block(buffer, max_size=size)
        assert payload.obj is buffer.obj and payload == test_pattern(size)  # 0x0A inside
        assert r.port.peak_in_flight["bulk_in"] >= 2
        assert r.port.in_flight["bulk_in"] == 0
        assert await query(r.transport, b"*IDN?\n") == IDN
        assert await query(r.transport, b"DATA? 300000\n") == pattern_block(300000)


async def test_upload_with_several_transfers_in_flight() -> None:
    size = 2 * 1024 * 1024 + 7
    payload = bytes(test_pattern(size))
    async with rig(pipeline=True, max_transfer_size=256 * 1024) as r:
        await r.transport.send_message([b"UPL ", block_header(size), payload, b"\n"])
        assert r.port.peak_in_flight["bulk_out"] >= 2
        assert [eom for _, _, eom in r.function.seen.out_transfers][-1] is True
        answer = await query(r.transport, b"UPL?\n")
        assert answer == b"%d,%d\n" % (size, zlib.crc32(payload))


@pytest.mark.parametrize("options", [{}, {"pipeline": False}], ids=["default", "off"])
async def test_pipeline_off_is_one_transfer_at_a_time(options: dict[str, Any]) -> None:
    size = 2 * 1024 * 1024 + 3
    payload = bytes(test_pattern(size))
    async with rig(max_transfer_size=256 * 1024, **options) as r:
        await r.transport.send_message([b"DATA? %d\n" % size])
        assert await r.transport.receive_block(max_size=size) == test_pattern(size)
        await r.transport.send_message([b"UPL ", block_header(size), payload, b"\n"])
        assert await query(r.transport, b"UPL?\n") == b"%d,%d\n" % (size, zlib.crc32(payload))
        assert r.port.peak_in_flight == {"bulk_in": 1, "bulk_out": 1}


@pytest.mark.parametrize(
    "quirks",
    [
        Quirks(one_request_per_response=True),
        Quirks(transfer_size_wrong_for_blocks=True),
        Quirks(no_short_packet_on_exact_multiple=True),
        Quirks(transfer_size_includes_padding=True),
        Quirks(max_transfer_size=100_000),
    ],
    ids=["one-request", "ts-wrong", "no-short", "ts-padding", "max-transfer"],
)
async def test_untrusted_transfer_size_reads_one_transfer_at_a_time(quirks: Quirks) -> None:
    size = 2 * 1024 * 1024 + 1
    async with rig(pipeline=True, quirks=quirks) as r:
        await r.transport.send_message([b"DATA? %d\n" % size])
        assert await r.transport.receive_block(max_size=size) == test_pattern(size)
        assert r.port.peak_in_flight["bulk_in"] <= 1
        assert await query(r.transport, b"*IDN?\n") == IDN


@pytest.mark.parametrize("after", [1, 2, 3, 6])
async def test_cancel_in_the_middle_of_a_pipelined_read(after: int) -> None:
    size = 5 * 1024 * 1024
    async with rig(pipeline=True) as r:
        t = r.transport
        start = len(r.port.requests)
        with anyio.CancelScope() as scope:
            hold = r.port.hold("bulk_in", after=after)
            async with anyio.create_task_group() as tg:
                tg.start_soon(query, t, b"DATA? %d\n" % size, 10 * size)
                await hold.reached.wait()
                tag = t.connection.in_tag
                scope.cancel()
        assert r.port.in_flight["bulk_in"] == 0
        assert r.requests(start) == _abort_in(tag)
        assert await query(t, b"*IDN?\n") == IDN
        await t.send_message([b"DATA? %d\n" % size])
        assert await t.receive_block(max_size=size) == test_pattern(size)


async def test_cancel_in_the_middle_of_a_pipelined_upload() -> None:
    payload = bytes(test_pattern(2_000_000))
    async with rig(pipeline=True, max_transfer_size=256 * 1024) as r:
        t = r.transport
        with anyio.CancelScope() as scope:
            hold = r.port.hold("bulk_out", after=3)
            async with anyio.create_task_group() as tg:
                tg.start_soon(t.send_message, [b"UPL ", block_header(2_000_000), payload, b"\n"])
                await hold.reached.wait()
                scope.cancel()
        assert r.port.in_flight["bulk_out"] == 0
        assert await query(t, b"*IDN?\n") == IDN
        assert await query(t, b"UPL?\n") == b"0,0\n"  # the half upload was dropped
        assert r.device.errors == []


async def test_cancel_while_sending_the_request() -> None:
    async with rig() as r:
        t = r.transport
        start = len(r.port.requests)
        with anyio.CancelScope() as scope:
            hold = r.port.hold("bulk_out", after=1)  # 0: the command, 1: the request
            async with anyio.create_task_group() as tg:
                tg.start_soon(query, t, b"*IDN?\n")
                await hold.reached.wait()
                tag = t.connection.in_tag
                scope.cancel()
        # The request never reached the device: nothing to abort (FAILED), no drain.
        assert r.requests(start) == [(R.INITIATE_ABORT_BULK_IN, tag)]
        assert await query(t, b"*IDN?\n") == IDN


async def test_cancel_while_sending_a_command() -> None:
    async with rig() as r:
        t = r.transport
        start = len(r.port.requests)
        with anyio.CancelScope() as scope:
            hold = r.port.hold("bulk_out")
            async with anyio.create_task_group() as tg:
                tg.start_soon(t.send_message, [b"*RST\n"])
                await hold.reached.wait()
                tag = t.connection.out_tag
                scope.cancel()
        assert r.requests(start) == [(R.INITIATE_ABORT_BULK_OUT, tag), (1, 0)]  # + CLEAR_FEATURE
        assert r.port.requests[-1].index == r.port.bulk_out_endpoint
        assert await query(t, b"*IDN?\n") == IDN


async def test_cancel_after_part_of_a_transfer_went_out() -> None:
    payload = bytes(test_pattern(5000))
    async with rig() as r:
        t = r.transport
        start = len(r.port.requests)
        with anyio.CancelScope() as scope:
            hold = r.port.hold("bulk_out", deliver_on_cancel=1024)
            async with anyio.create_task_group() as tg:
                tg.start_soon(t.send_message, [b"UPL ", block_header(5000), payload, b"\n"])
                await hold.reached.wait()
                tag = t.connection.out_tag
                scope.cancel()
        assert r.requests(start) == [
            (R.INITIATE_ABORT_BULK_OUT, tag),
            (R.CHECK_ABORT_BULK_OUT_STATUS, 0),
            (1, 0),
        ]
        assert await query(t, b"*IDN?\n") == IDN
        assert await query(t, b"UPL?\n") == b"0,0\n"  # the half upload was dropped
        assert r.device.errors == []


async def test_cancel_between_transfers_of_a_message_clears_the_device() -> None:
    payload = bytes(test_pattern(5000))
    async with rig(max_transfer_size=1000) as r:
        t = r.transport
        start = len(r.port.requests)
        with anyio.CancelScope() as scope:
            hold = r.port.hold("bulk_out", after=2)
            async with anyio.create_task_group() as tg:
                tg.start_soon(t.send_message, [b"UPL ", block_header(5000), payload, b"\n"])
                await hold.reached.wait()
                tag = t.connection.out_tag - 3  # the fourth transfer's, held
                scope.cancel()
        assert r.requests(start) == [
            (R.INITIATE_ABORT_BULK_OUT, tag),
            (1, 0),
            (R.INITIATE_CLEAR, 0),
            (R.CHECK_CLEAR_STATUS, 0),
            (1, 0),
        ]
        assert await query(t, b"*IDN?\n") == IDN
        assert await query(t, b"UPL?\n") == b"0,0\n"


async def test_cancelled_read_stb_ignores_the_late_reply() -> None:
    async with rig() as r:
        t = r.transport
        assert t.srq is not None
        hold = r.port.hold("interrupt_in")  # the reader's next call
        async with t.srq.subscribe() as events:
            r.function.inject_srq(0x41)
            await hold.reached.wait()  # the SRQ went through; the reader is parked now
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(t.read_stb)
                    await until(
                        lambda: r.port.requests[-1].request == Usb488Request.READ_STATUS_BYTE
                    )
                    scope.cancel()
            hold.release()
            r.device.push_error(-100, "Command error")
            assert await t.read_stb() == 0x04  # its own reply, not the late one
            assert int(events.receive_nowait().status) == 0x41


# -- escalation and broken sessions -------------------------------------------------------------


async def _cancel_response_wait(r: Rig) -> int:
    r.device.latency = float("inf")
    with anyio.CancelScope() as scope:
        hold = r.port.hold("bulk_in")
        async with anyio.create_task_group() as tg:
            tg.start_soon(query, r.transport, b"*IDN?\n")
            await hold.reached.wait()
            tag = r.transport.connection.in_tag
            scope.cancel()
    r.device.latency = 0.0
    return tag


async def test_abort_failure_escalates_to_device_clear() -> None:
    async with rig() as r:
        r.function.fail_abort = True
        start = len(r.port.requests)
        tag = await _cancel_response_wait(r)
        assert r.requests(start) == [
            (R.INITIATE_ABORT_BULK_IN, tag),
            (R.INITIATE_CLEAR, 0),
            (R.CHECK_CLEAR_STATUS, 0),
            (1, 0),
        ]
        assert not r.transport.broken
        assert await query(r.transport, b"*IDN?\n") == IDN


async def test_session_broken_when_recovery_fails() -> None:
    async with rig() as r:
        r.function.fail_abort = True
        r.function.fail_clear = True
        await _cancel_response_wait(r)
        assert r.transport.broken
        with pytest.raises(SessionBrokenError, match="reopen"):
            await query(r.transport, b"*IDN?\n")
        with pytest.raises(SessionBrokenError):
            await r.transport.read_stb()


async def test_failed_clear_breaks_the_session() -> None:
    async with rig() as r:
        r.function.fail_clear = True
        with pytest.raises(SessionBrokenError):
            await r.transport.clear()
        with pytest.raises(SessionBrokenError):
            await r.transport.send_message([b"*IDN?\n"])


async def test_pending_forever_is_bounded() -> None:
    async with rig(max_polls=5) as r:
        r.function.abort_pending_polls = 10**6
        start = len(r.port.requests)
        await _cancel_response_wait(r)
        sent = r.requests(start)
        assert sent.count((R.CHECK_ABORT_BULK_IN_STATUS, 0)) == 5
        assert sent.count((R.CHECK_CLEAR_STATUS, 0)) == 5
        assert r.transport.broken


async def test_pending_polls_then_success() -> None:
    async with rig() as r:
        r.function.abort_pending_polls = 3
        start = len(r.port.requests)
        tag = await _cancel_response_wait(r)
        assert r.requests(start) == [
            (R.INITIATE_ABORT_BULK_IN, tag),
            *[(R.CHECK_ABORT_BULK_IN_STATUS, 0)] * 4,
        ]
        assert await query(r.transport, b"*IDN?\n") == IDN


async def test_abort_retries_with_the_tag_the_device_names() -> None:
    async with rig() as r:
        r.function.wrong_abort_tag_once = True
        start = len(r.port.requests)
        tag = await _cancel_response_wait(r)
        assert r.requests(start) == [
            (R.INITIATE_ABORT_BULK_IN, tag),
            (R.INITIATE_ABORT_BULK_IN, tag % 255 + 1),
            (R.CHECK_ABORT_BULK_IN_STATUS, 0),
        ]
        assert await query(r.transport, b"*IDN?\n") == IDN


async def test_explicit_clear() -> None:
    async with rig() as r:
        await r.transport.send_message([b"*IDN?\n"])
        start = len(r.port.requests)
        await r.transport.clear()
        assert r.requests(start) == [(R.INITIATE_CLEAR, 0), (R.CHECK_CLEAR_STATUS, 0), (1, 0)]
        assert await query(r.transport, b"DATA? 10\n") == pattern_block(10)


async def test_cancelled_clear_is_finished() -> None:
    async with rig() as r:
        start = len(r.port.requests)
        with anyio.CancelScope() as scope:
            hold = r.port.hold("control", after=1)  # CHECK_CLEAR_STATUS
            async with anyio.create_task_group() as tg:
                tg.start_soon(r.transport.clear)
                await hold.reached.wait()
                scope.cancel()
        assert r.requests(start)[-3:] == [(R.INITIATE_CLEAR, 0), (R.CHECK_CLEAR_STATUS, 0), (1, 0)]
        assert not r.transport.broken
        assert await query(r.transport, b"*IDN?\n") == IDN


# -- stalls, disconnects, misuse ----------------------------------------------------------------


async def test_bulk_in_stall() -> None:
    """A halt that comes back after the retry (one halt is retried:
    test_usbtmc_stall.py has every halt point)."""
    async with rig() as r:
        await r.transport.send_message([b"*IDN?\n"])
        r.function.stall_bulk_in(times=2)
        with pytest.raises(UsbStallError):
            await r.transport.receive_message(max_size=100)
        halts = [q.index for q in r.port.requests if q.request_type == 0x02]
        assert r.port.bulk_in_endpoint in halts
        assert await query(r.transport, b"*IDN?\n") == IDN


async def test_bulk_out_stall() -> None:
    async with rig() as r:
        r.function.stall_bulk_out(times=2)
        with pytest.raises(UsbStallError):
            await r.transport.send_message([b"*IDN?\n"])
        assert r.port.requests[-1].request_type == 0x02
        assert await query(r.transport, b"*IDN?\n") == IDN


async def test_disconnect_while_waiting() -> None:
    async with rig() as r:
        r.device.latency = float("inf")
        await r.transport.send_message([b"*IDN?\n"])
        failures: list[BaseException] = []

        async def receive() -> None:
            try:
                await r.transport.receive_message(max_size=100)
            except ConnectionLostError as exc:
                failures.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(receive)
            await until(lambda: r.port.calls["bulk_in"] > 0)
            r.function.disconnect()
        assert len(failures) == 1
        with pytest.raises(ConnectionLostError):
            await r.transport.send_message([b"*IDN?\n"])
        with pytest.raises(ConnectionLostError):
            await r.transport.read_stb()


async def test_concurrent_use_is_refused() -> None:
    async with rig() as r:
        r.device.latency = float("inf")
        await r.transport.send_message([b"*IDN?\n"])
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(r.transport.receive_message, max_size=100))
            await until(lambda: r.port.calls["bulk_in"] > 0)
            with pytest.raises(anyio.BusyResourceError):
                await r.transport.send_message([b"*IDN?\n"])
            with pytest.raises(anyio.BusyResourceError):
                await r.transport.read_stb()
            tg.cancel_scope.cancel()


async def test_aclose_is_idempotent_and_shielded() -> None:
    async with rig() as r:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await r.transport.aclose()
        await r.transport.aclose()
        with pytest.raises(anyio.ClosedResourceError):
            await r.transport.send_message([b"*IDN?\n"])
        with pytest.raises(anyio.ClosedResourceError):
            await r.port.bulk_in(512)


# -- USB488 extras ------------------------------------------------------------------------------


async def test_trigger_remote_local_indicator() -> None:
    async with rig() as r:
        t = r.transport
        await t.trigger()
        assert r.function.seen.triggers == 1
        await t.set_remote(True, lockout=True)
        assert r.function.remote_enabled and r.function.local_lockout
        await t.set_remote(False)
        assert not r.function.remote_enabled and not r.function.local_lockout
        await t.indicator_pulse()
        assert r.function.seen.indicator_pulses == 1
        assert await query(t, b"*IDN?\n") == IDN


async def test_plain_usbtmc_interface() -> None:
    options = {"usb488": False, "interrupt_endpoint": False}
    async with rig(function_options=options) as r:
        t = r.transport
        assert t.srq is None and not t.info.capabilities.read_stb
        for call in (t.read_stb, t.trigger, lambda: t.set_remote(True)):
            with pytest.raises(UnsupportedOperation):
                await call()
        assert await query(t, b"*IDN?\n") == IDN


async def test_read_stb_without_an_interrupt_endpoint() -> None:
    async with rig(function_options={"interrupt_endpoint": False}) as r:
        r.device.push_error(-100, "Command error")
        assert await r.transport.read_stb() == 0x04
        assert r.transport.srq is None


async def test_capabilities_request_refused() -> None:
    device = TmcTestDevice()
    function = UsbtmcFunction(device)
    original = function.control

    def control(request: ControlRequest) -> Any:
        return STALL if request.request == R.GET_CAPABILITIES else original(request)

    function.control = control  # type: ignore[method-assign]
    port = FakeUsbPort(function)
    with anyio.fail_after(10):
        async with open_usbtmc_transport(port, resource=RESOURCE) as t:
            assert t.capabilities.usb488  # from the interface protocol
            assert not t.capabilities.trigger
            assert await query(t, b"*IDN?\n") == IDN


# -- quirks through the transport ---------------------------------------------------------------


async def test_quirks_looked_up_from_the_resource() -> None:
    rigol = KNOWN_QUIRKS[(0x1AB1, None)]
    device = TmcTestDevice()
    port = FakeUsbPort(UsbtmcFunction(device, quirks=rigol, vid=0x1AB1, pid=0x04B0))
    with anyio.fail_after(10):
        async with open_usbtmc_transport(port, resource="USB0::0x1AB1::0x04B0::DS2A::INSTR") as t:
            assert t.quirks is rigol
            assert not t.info.capabilities.remote_local
            assert await query(t, b"DATA? 1005\n") == pattern_block(1005)


QUIRK_CASES = {
    "one_request_per_response": Quirks(one_request_per_response=True),
    "eom_unreliable": Quirks(eom_unreliable=True, max_transfer_size=63),
    "transfer_size_wrong_for_blocks": Quirks(transfer_size_wrong_for_blocks=True),
    "no_short_packet_on_exact_multiple": Quirks(no_short_packet_on_exact_multiple=True),
    "transfer_size_includes_padding": Quirks(transfer_size_includes_padding=True),
    "empty_first_bulk_in_retry": Quirks(empty_first_bulk_in_retry=True),
    "msgid_unreliable": Quirks(msgid_unreliable=True),
    "max_transfer_size": Quirks(max_transfer_size=63),
    "max_out_transfer_size": Quirks(max_out_transfer_size=48),
    "reset_on_open": Quirks(reset_on_open=True),
    "remote_local_broken": Quirks(remote_local_broken=True),
    "clear_hangs": Quirks(clear_hangs=True),
    "write_read_delay": Quirks(write_read_delay=0.02),
}


@pytest.mark.parametrize("name", sorted(QUIRK_CASES))
async def test_every_quirk_through_the_transport(name: str) -> None:
    quirks = QUIRK_CASES[name]
    async with rig(quirks=quirks) as r:
        t = r.transport
        for size in (0, 1005, 493, 20_000):
            await t.send_message([b"DATA? %d\n" % size])
            assert await t.receive_block(max_size=1 << 20) == test_pattern(size)
        payload = bytes(test_pattern(300))
        await t.send_message([b"UPL ", block_header(300), payload, b"\n"])
        assert await query(t, b"UPL?\n") == b"300,%d\n" % zlib.crc32(payload)
        start = len(r.port.requests)
        await t.clear()
        if quirks.clear_hangs:
            assert (R.INITIATE_CLEAR, 0) not in r.requests(start)
        if quirks.remote_local_broken:
            assert not t.info.capabilities.remote_local
            with pytest.raises(UnsupportedOperation):
                await t.set_remote(True)
        assert await query(t, b"*IDN?\n") == IDN
        assert r.port.resets == int(quirks.reset_on_open)


async def test_one_request_per_response_asks_for_everything_at_once() -> None:
    size = 3 * 1024 * 1024
    async with rig(quirks=Quirks(one_request_per_response=True)) as r:
        await r.transport.send_message([b"DATA? %d\n" % size])
        assert await r.transport.receive_block(max_size=size) == test_pattern(size)
        assert len(r.function.seen.requests) == 1
        assert r.function.seen.requests[0][1] >= size


async def test_write_read_delay_is_waited() -> None:
    async with rig(quirks=Quirks(write_read_delay=0.03)) as r:
        before = anyio.current_time()
        assert await query(r.transport, b"*IDN?\n") == IDN
        assert anyio.current_time() - before >= 0.03
        assert r.function.seen.dropped_requests == 0


async def test_write_read_delay_device_drops_an_early_request() -> None:
    async with rig(device_quirks=Quirks(write_read_delay=0.5)) as r:
        with pytest.raises(TimeoutError):
            with anyio.fail_after(0.05):
                await query(r.transport, b"*IDN?\n")
        assert r.function.seen.dropped_requests == 1


# -- deadlines (the Instrument's timeouts) ------------------------------------------------------


async def test_receive_deadline_raises_read_timeout_after_recovering() -> None:
    async with rig() as r:
        t = r.transport
        r.device.latency = float("inf")
        await t.send_message([b"*IDN?\n"], deadline=anyio.current_time() + 5)
        start = len(r.port.requests)
        with pytest.raises(ReadTimeout):
            await t.receive_message(max_size=100, deadline=anyio.current_time() + 0.02)
        assert r.requests(start) == _abort_in(t.connection.in_tag)
        r.device.latency = 0.0
        assert await query(t, b"*IDN?\n") == IDN
        await t.send_message([b"*IDN?\n"])
        with pytest.raises(ReadTimeout):
            await t.receive_block(max_size=100, deadline=anyio.current_time() - 1)
        assert await query(t, b"*IDN?\n") == IDN


async def test_send_deadline_raises_write_timeout() -> None:
    async with rig() as r:
        t = r.transport
        hold = r.port.hold("bulk_out")
        start = len(r.port.requests)
        with pytest.raises(WriteTimeout):
            await t.send_message([b"*RST\n"], deadline=anyio.current_time() + 0.02)
        assert hold.cancelled
        assert r.requests(start) == [(R.INITIATE_ABORT_BULK_OUT, t.connection.out_tag), (1, 0)]
        assert await query(t, b"*IDN?\n") == IDN


async def test_read_stb_and_clear_deadlines() -> None:
    async with rig() as r:
        t = r.transport
        hold = r.port.hold("control")
        with pytest.raises(ReadTimeout):
            await t.read_stb(deadline=anyio.current_time() + 0.02)
        hold.release()
        assert await t.read_stb(deadline=anyio.current_time() + 5) == 0
        hold = r.port.hold("control", after=1)  # CHECK_CLEAR_STATUS
        with pytest.raises(WriteTimeout):
            await t.clear(deadline=anyio.current_time() + 0.02)
        assert not t.broken  # the clear was finished, shielded
        await t.trigger(deadline=anyio.current_time() + 5)
        assert await query(t, b"*IDN?\n") == IDN


# -- FakeUsbPort itself -------------------------------------------------------------------------


async def test_fake_port_endpoints_and_cancelled_read() -> None:
    function = UsbtmcFunction(TmcTestDevice())
    port = FakeUsbPort(function)
    assert (port.interface_number, port.bulk_out_endpoint, port.bulk_in_endpoint) == (0, 1, 0x82)
    assert (port.interrupt_in_endpoint, port.max_packet_size, port.usb488) == (0x83, 512, True)
    conn = UsbtmcConnection()
    with anyio.fail_after(10):
        (command,) = conn.send_message(b"*IDN?\n")
        await port.bulk_out(command)
        request = conn.request_response(1000)
        with anyio.CancelScope() as scope:  # a read waiting on NAKs is cancelled
            async with anyio.create_task_group() as tg:
                tg.start_soon(port.bulk_in, 1024)
                await until(lambda: port.calls["bulk_in"] == 1)
                with pytest.raises(anyio.BusyResourceError):
                    await port.bulk_in(1024)
                scope.cancel()
        await port.bulk_out(request)
        data = await port.bulk_in(1024)  # nothing was consumed by the cancelled read
        assert data[12 : 12 + len(IDN)] == IDN and len(data) == 40


async def test_fake_port_stall_disconnect_close() -> None:
    function = UsbtmcFunction(TmcTestDevice(), interrupt_endpoint=False)
    port = FakeUsbPort(function)
    with anyio.fail_after(10):
        with pytest.raises(UsbStallError):
            await port.interrupt_in(8)
        function.stall_bulk_in()
        with pytest.raises(UsbStallError) as info:
            await port.bulk_in(512)
        assert info.value.endpoint == 0x82
        await port.clear_halt(0x82)
        assert (port.requests[-1].request_type, port.requests[-1].index) == (0x02, 0x82)
        with pytest.raises(UsbStallError):
            await port.control(ControlRequest(request_type=0xA1, request=99, value=0, index=0))
        async with anyio.create_task_group() as tg:

            async def waiting_read() -> None:
                with pytest.raises(ConnectionLostError):
                    await port.bulk_in(512)

            tg.start_soon(waiting_read)
            await until(lambda: port.calls["bulk_in"] == 2)
            function.disconnect()
        with pytest.raises(ConnectionLostError):
            await port.control(ControlRequest(request_type=0xA1, request=7, value=0, index=0))
        await port.aclose()
        await port.aclose()
        with pytest.raises(anyio.ClosedResourceError):
            await port.bulk_out(b"x")


async def test_fake_port_reset() -> None:
    function = UsbtmcFunction(TmcTestDevice(), quirks=Quirks(reset_on_open=True))
    port = FakeUsbPort(function)
    conn = UsbtmcConnection()
    with anyio.fail_after(10):
        await port.reset()
        assert port.resets == 1
        (command,) = conn.send_message(b"*IDN?\n")
        await port.bulk_out(command)
        await port.bulk_out(conn.request_response(1000))
        assert (await port.bulk_in(1024))[12 : 12 + len(IDN)] == IDN
