"""Endpoint halts at every point of a transfer, over FakeUsbPort and the emulator.

The rules (docs/reliability.md, "USB endpoint halts"): a bulk-IN halt before any byte of
the response arrived is cleared and the same response requested again, so the query gets
its answer; a bulk-OUT halt on a one-packet transfer that starts a message is cleared and
the transfer sent again. Any other halt, or a second one in the same operation, raises
UsbStallError after INITIATE_CLEAR. Either way the device is left clean: ``*ESR?`` reads
0, the error queue is empty, and the next query gets its own answer. Every test runs on
asyncio and trio.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from aiotmc import ReadTimeout, UsbStallError
from aiotmc.protocol.ieee4882 import block_header
from aiotmc.transports.usbtmc import UsbtmcTransport

from ..protocol.test_usbtmc import IDN
from .test_usbtmc_fake import R, Rig, pattern_block, query, rig

BULK_IN, BULK_OUT = 0x82, 0x01
CLEAR_FEATURE = 1
QYE = 4  # ESR bit: query error (-410 Query INTERRUPTED)


async def clean_baseline(r: Rig, **knobs: Any) -> int:
    """Read (and so reset) the event status register, then set the emulator's ``knobs``;
    return where the control requests of the test start."""
    await query(r.transport, b"*ESR?\n")
    for name, value in knobs.items():
        setattr(r.function, name, value)
    return len(r.port.requests)


async def assert_clean(t: UsbtmcTransport, r: Rig | None = None) -> None:
    """The device holds no spurious error and answers the next query with its own answer."""
    if r is not None:
        r.function.max_in_transfer = None
        r.function.response_delay = 0
    assert await query(t, b"*ESR?\n") == b"0\n"
    assert await query(t, b"SYST:ERR?\n") == b'+0,"No error"\n'
    assert await query(t, b"*IDN?\n") == IDN
    assert not t.broken


def halts_cleared(r: Rig, start: int) -> list[int]:
    return [q.index for q in r.port.requests[start:] if (q.request_type, q.request) == (2, 1)]


def cleared(r: Rig, start: int) -> bool:
    return (R.INITIATE_CLEAR, 0) in r.requests(start)


# -- the emulator keeps its output queue: an unread answer is a -410 ---------------------------


async def test_an_interrupted_query_sets_qye() -> None:
    """What the rules prevent: a response left unread makes the next message log -410."""
    async with rig() as r:
        await clean_baseline(r)
        await r.transport.send_message([b"*IDN?\n"])
        await r.transport.send_message([b"*OPC\n"])
        assert int(await query(r.transport, b"*ESR?\n")) & QYE
        assert (await query(r.transport, b"SYST:ERR?\n")).startswith(b"-410,")


# -- bulk-IN ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "options"),
    [
        ("before the request", {}),
        ("at the first byte", {}),
        ("at the first byte", {"max_in_transfer": 4}),  # a response of several transfers
        ("at the first byte", {"response_delay": 0.02}),  # the read was waiting
    ],
)
async def test_in_halt_before_the_response_retries_the_read(
    when: str, options: dict[str, Any]
) -> None:
    async with rig() as r:
        start = await clean_baseline(r, **options)
        t = r.transport
        await t.send_message([b"*IDN?\n"])
        messages = r.function.seen.messages
        request_tag = t.connection.last_btag % 255 + 1
        r.function.stall_bulk_in(None if when == "before the request" else 0)
        assert await t.receive_message(max_size=1000) == IDN
        assert r.function.seen.messages == messages  # a read retry, not a replay
        assert t.stall_retries == 1
        assert halts_cleared(r, start) == [BULK_IN]
        # the device confirmed it had not started: FAILED, nothing in progress
        assert (R.INITIATE_ABORT_BULK_IN, request_tag) in r.requests(start)
        assert not cleared(r, start)
        await assert_clean(t, r)


async def test_in_halt_before_a_block_retries_into_the_buffer() -> None:
    async with rig() as r:
        await clean_baseline(r)
        t = r.transport
        await t.send_message([b"DATA? 100000\n"])
        r.function.stall_bulk_in(0)
        buffer = memoryview(bytearray(100000))
        payload = await t.receive_block(buffer, max_size=1 << 20)
        assert payload.tobytes() == pattern_block(100000)[len(block_header(100000)) : -1]
        assert t.stall_retries == 1
        await assert_clean(t)


@pytest.mark.parametrize(
    ("after", "options", "command"),
    [
        (16, {"max_in_transfer": 4}, b"*IDN?\n"),  # between two transfers of the response
        (16384, {}, b"DATA? 50000\n"),  # inside a transfer, after a whole URB
        (512, {}, b"DATA? 50000\n"),  # inside the first URB: the host saw nothing
    ],
)
async def test_in_halt_mid_response_raises_and_clears(
    after: int, options: dict[str, Any], command: bytes
) -> None:
    async with rig() as r:
        start = await clean_baseline(r, **options)
        t = r.transport
        await t.send_message([command])
        r.function.stall_bulk_in(after)
        with pytest.raises(UsbStallError) as info:
            await t.receive_message(max_size=1 << 20)
        assert info.value.endpoint == BULK_IN
        assert t.stall_retries == 0
        assert cleared(r, start)
        await assert_clean(t, r)


async def test_the_retry_keeps_the_deadline() -> None:
    async with rig() as r:
        start = await clean_baseline(r, response_delay=30)
        t = r.transport
        await t.send_message([b"*IDN?\n"])
        r.function.stall_bulk_in(0)
        with pytest.raises(ReadTimeout):
            await t.receive_message(max_size=1000, deadline=anyio.current_time() + 0.2)
        assert t.stall_retries == 1
        assert (R.INITIATE_ABORT_BULK_IN, t.connection.in_tag) in r.requests(start)
        r.function.response_delay = 0
        # A query abandoned at its deadline is interrupted by the next message (-410):
        # that is the timeout's outcome, not the halt's.
        assert int(await query(t, b"*ESR?\n")) & QYE
        assert (await query(t, b"SYST:ERR?\n")).startswith(b"-410,")
        await assert_clean(t)


async def test_in_halt_with_a_refused_abort_raises_and_clears() -> None:
    """The device cannot confirm it had not started sending: no retry."""
    async with rig() as r:
        start = await clean_baseline(r)
        t = r.transport
        await t.send_message([b"*IDN?\n"])
        r.function.stall_bulk_in(0)
        r.function.fail_abort = True  # INITIATE_ABORT_BULK_IN stalls
        with pytest.raises(UsbStallError) as info:
            await t.receive_message(max_size=1000)
        assert info.value.endpoint == BULK_IN  # the halt, not the refused request
        assert t.stall_retries == 0
        assert cleared(r, start)
        r.function.fail_abort = False
        await assert_clean(t)


@pytest.mark.parametrize("after", [None, 0])
async def test_second_in_halt_raises_and_clears(after: int | None) -> None:
    async with rig() as r:
        start = await clean_baseline(r)
        t = r.transport
        await t.send_message([b"*IDN?\n"])
        r.function.stall_bulk_in(after, times=2)
        with pytest.raises(UsbStallError):
            await t.receive_message(max_size=1000)
        assert halts_cleared(r, start).count(BULK_IN) == 2
        assert cleared(r, start)
        await assert_clean(t)


# -- bulk-OUT --------------------------------------------------------------------------------


@pytest.mark.parametrize("after", [None, 0])
async def test_out_halt_on_a_one_packet_command_resends_it(after: int | None) -> None:
    async with rig() as r:
        start = await clean_baseline(r)
        t = r.transport
        messages = r.function.seen.messages
        r.function.stall_bulk_out(after)
        assert await query(t, b"*IDN?\n") == IDN
        assert r.function.seen.messages == messages + 1  # executed once
        assert t.stall_retries == 1
        assert halts_cleared(r, start) == [BULK_OUT]
        assert not cleared(r, start)
        await assert_clean(t)


async def test_out_halt_on_the_request_resends_it() -> None:
    async with rig() as r:
        start = await clean_baseline(r)
        t = r.transport
        await t.send_message([b"*IDN?\n"])
        r.function.stall_bulk_out()
        assert await t.receive_message(max_size=1000) == IDN
        assert t.stall_retries == 1
        assert not cleared(r, start)
        await assert_clean(t)


@pytest.mark.parametrize("after", [0, 512, 1024])
async def test_out_halt_in_a_long_command_raises_and_clears(after: int) -> None:
    """A transfer of several packets: the device may hold part of it (0: it holds none,
    but the host cannot know which packet the halt refused)."""
    upload = b"UPL " + block_header(2000) + bytes(2000) + b"\n"
    async with rig() as r:
        start = await clean_baseline(r)
        t = r.transport
        r.function.stall_bulk_out(after)
        with pytest.raises(UsbStallError) as info:
            await t.send_message([upload])
        assert info.value.endpoint == BULK_OUT
        assert cleared(r, start)
        assert await query(t, b"UPL?\n") == b"0,0\n"  # nothing of it was executed
        await assert_clean(t)


async def test_out_halt_in_the_rest_of_a_message_raises_and_clears() -> None:
    """The device holds the first part: re-sending the second could not be told apart."""
    async with rig() as r:
        start = await clean_baseline(r)
        t = r.transport
        await t.send_message([b"*IDN"], end=False)
        r.function.stall_bulk_out()
        with pytest.raises(UsbStallError):
            await t.send_message([b"?\n"])
        assert cleared(r, start)
        await assert_clean(t)


async def test_second_out_halt_raises_and_clears() -> None:
    async with rig() as r:
        start = await clean_baseline(r)
        t = r.transport
        r.function.stall_bulk_out(0, times=2)
        with pytest.raises(UsbStallError):
            await t.send_message([b"*IDN?\n"])
        assert halts_cleared(r, start).count(BULK_OUT) >= 2
        assert cleared(r, start)
        await assert_clean(t)


async def test_one_retry_per_operation() -> None:
    """A query whose command and answer each halt once: two operations, two retries."""
    async with rig() as r:
        await clean_baseline(r)
        t = r.transport
        r.function.stall_bulk_out()
        await t.send_message([b"*IDN?\n"])
        r.function.stall_bulk_in(0)
        assert await t.receive_message(max_size=1000) == IDN
        assert t.stall_retries == 2
        await assert_clean(t)
