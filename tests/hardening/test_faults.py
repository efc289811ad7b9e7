"""Fault injection: every device fault gives its typed error in time, in bounded memory,
and the instrument (or a reopened one) works afterwards.

Each fault of the tables below is listed in docs/reliability.md with the error it gives.
A fault runs under ``tracemalloc``; the assertions are: the exception type, the elapsed
time (the timeout plus ``MARGIN`` for timeouts, ``MARGIN`` alone for protocol errors), the
peak of traced memory, and then a fresh ``ECHO?`` on the same instrument (or, where the
link is gone for good, on a reopened one) that must get its own answer.
"""

from __future__ import annotations

import math
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from anyio.lowlevel import checkpoint

import aiotmc
from aiotmc import (
    ConnectError,
    ConnectionLostError,
    ReadTimeout,
    RemoteProtocolError,
    SessionBrokenError,
    UsbStallError,
)
from aiotmc.sim.device import SimDevice
from aiotmc.sim.fake_port import FakeUsbPort
from aiotmc.sim.server import SimServer
from aiotmc.sim.usbtmc_device import CORRUPTIONS, UsbtmcFunction
from aiotmc.transports.usbtmc import UsbtmcTransport, open_usbtmc_transport

from .conftest import echo_usb_device, run_hardening_client
from .support import RESOURCE, echo_device

MARGIN = 0.5  # seconds allowed beyond the timeout (CI machines are slow and shared)
TIMEOUT = 0.3  # the instrument timeout the timing faults run against
MAX_MESSAGE = 1 << 20
MB = 1 << 20

# Hostile answers, built once (outside tracemalloc): the simulator sends views of them.
GARBAGE = b"x" * (30 * MB) + b"\n"
ENDLESS = b"y" * (30 * MB)  # no terminator at all
TRAILER = b"#15abcde" + b"z" * (30 * MB) + b"\n"
BIG_TEXT = b"1," * (3 * MB) + b"\n"
RAW_ANSWERS: dict[str, bytes] = {
    "GARBage?": GARBAGE,
    "ENDLess?": ENDLESS,
    "TRAILer?": TRAILER,
    "BIGText?": BIG_TEXT,
    "HUGEheader?": b"#9999999999\n",
    "BADHeader?": b"#2x1abc\n",
    "MIDHeader?": b"hello #9999999999 world\n",
    "SHORtblock?": b"#15ab\n",
}


def hostile_device() -> SimDevice:
    device = echo_device()
    for header, answer in RAW_ANSWERS.items():
        device.add_raw_query(header, _constant(answer))
    return device


def _constant(answer: bytes) -> Callable[[tuple[bytes, ...]], bytes]:
    return lambda args: answer


@dataclass
class Outcome:
    error: BaseException | None
    elapsed: float
    peak: int


async def measure(action: Callable[[], Awaitable[object]]) -> Outcome:
    """Run ``action`` under tracemalloc (bounded by a generous fail_after)."""
    tracemalloc.start()
    started = time.monotonic()
    error: BaseException | None = None
    try:
        with anyio.fail_after(20):
            await action()
    except Exception as exc:
        error = exc
    finally:
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return Outcome(error, elapsed, peak)


def check(
    outcome: Outcome, error: type[BaseException], *, timeout: float | None, peak: int = 4 * MB
) -> None:
    assert isinstance(outcome.error, error), f"expected {error.__name__}, got {outcome.error!r}"
    if timeout is None:
        assert outcome.elapsed < MARGIN, f"took {outcome.elapsed:.3f} s"
    else:
        assert timeout - 0.01 <= outcome.elapsed < timeout + MARGIN, (
            f"took {outcome.elapsed:.3f} s for a {timeout} s timeout"
        )
    assert outcome.peak < peak, f"peak traced memory {outcome.peak / MB:.1f} MB"


async def echo(inst: aiotmc.Instrument, tag: int = 42) -> None:
    with anyio.fail_after(10):
        assert await inst.query(f"ECHO? {tag}", timeout=5) == str(tag)


# -- raw socket ------------------------------------------------------------------------------


@dataclass
class TcpRig:
    device: SimDevice
    server: SimServer
    inst: aiotmc.Instrument


@asynccontextmanager
async def tcp_rig() -> AsyncIterator[TcpRig]:
    device = hostile_device()
    async with (
        SimServer(device) as server,
        aiotmc.open(
            server.resource, timeout=TIMEOUT, max_message_size=MAX_MESSAGE, connect_timeout=2
        ) as inst,
    ):
        await echo(inst, 1)
        yield TcpRig(device, server, inst)


async def _tcp_late(rig: TcpRig) -> Outcome:
    rig.device.delay_next_responses(30)
    return await measure(lambda: rig.inst.query("ECHO? 1"))


async def _tcp_never(rig: TcpRig) -> Outcome:
    rig.device.delay_next_responses(math.inf)
    return await measure(lambda: rig.inst.query("ECHO? 1"))


async def _tcp_drip(rig: TcpRig) -> Outcome:
    rig.server.drip = (4, 0.05)  # 25 bytes: 7 pieces, 0.3 s in all
    try:
        return await measure(lambda: rig.inst.query("ECHO? 12345678901234567890", timeout=0.15))
    finally:
        rig.server.drip = None


async def _tcp_endless(rig: TcpRig) -> Outcome:
    return await measure(lambda: rig.inst.query("ENDLess?"))


async def _tcp_reset_while_waiting(rig: TcpRig) -> Outcome:
    rig.device.delay_next_responses(30)

    async def action() -> None:
        async with anyio.create_task_group() as tg:

            async def reset() -> None:
                await anyio.wait_all_tasks_blocked()  # the query waits, the server sits on it
                rig.server.disconnect_all()

            tg.start_soon(reset)
            await rig.inst.query("ECHO? 1", timeout=10)

    outcome = await measure(action)
    if isinstance(outcome.error, BaseExceptionGroup):
        outcome.error = outcome.error.exceptions[0]
    return outcome


async def _tcp_cut_block(rig: TcpRig) -> Outcome:
    rig.server.close_after_bytes = 5000
    return await measure(lambda: rig.inst.query_block("BLK? 100000,7"))


def _raw(command: str, *, block: bool = False) -> Callable[[TcpRig], Awaitable[Outcome]]:
    async def fault(rig: TcpRig) -> Outcome:
        if block:
            return await measure(lambda: rig.inst.query_block(command))
        return await measure(lambda: rig.inst.query(command))

    return fault


# name -> (fault, typed error, timeout it runs against or None for "at once")
TcpFault = tuple[Callable[[TcpRig], Awaitable[Outcome]], type[Exception], float | None]
TCP_FAULTS: dict[str, TcpFault] = {
    "answer later than the timeout": (_tcp_late, ReadTimeout, TIMEOUT),
    "no answer at all": (_tcp_never, ReadTimeout, TIMEOUT),
    "slow-drip answer": (_tcp_drip, ReadTimeout, 0.15),
    "endless answer (no terminator)": (_tcp_endless, ReadTimeout, TIMEOUT),
    "TCP reset while waiting": (_tcp_reset_while_waiting, ConnectionLostError, None),
    "connection closed mid-block": (_tcp_cut_block, ConnectionLostError, None),
    "garbage where a block is due": (_raw("GARBage?", block=True), RemoteProtocolError, None),
    "garbage after a block": (_raw("TRAILer?", block=True), RemoteProtocolError, None),
    "oversized block header": (_raw("HUGEheader?", block=True), RemoteProtocolError, None),
    "malformed block header": (_raw("BADHeader?", block=True), RemoteProtocolError, None),
    "block header inside garbage": (_raw("MIDHeader?", block=True), RemoteProtocolError, None),
    # A byte stream cannot tell a short block from a slow one: the rest is awaited.
    "block shorter than announced": (_raw("SHORtblock?", block=True), ReadTimeout, TIMEOUT),
    "oversized text answer": (_raw("BIGText?"), RemoteProtocolError, None),
}


@pytest.mark.parametrize("name", list(TCP_FAULTS))
async def test_tcp_fault(name: str, anyio_backend: str) -> None:
    fault, error, timeout = TCP_FAULTS[name]
    async with tcp_rig() as rig:
        outcome = await fault(rig)
        check(outcome, error, timeout=timeout)
        await echo(rig.inst)  # the same instrument is usable (a new connection if needed)
        await echo(rig.inst, 43)


async def test_tcp_slow_drip_within_the_timeout_is_fine(anyio_backend: str) -> None:
    async with tcp_rig() as rig:
        rig.server.drip = (3, 0.01)
        with anyio.fail_after(5):
            assert await rig.inst.query("ECHO? 123456789", timeout=3) == "123456789"


async def test_tcp_server_gone_then_back(anyio_backend: str) -> None:
    """The instrument vanishes (listener closed): a typed error at once, no hang; when it
    is back on the same port the same Instrument works again."""
    device = hostile_device()
    server = SimServer(device)
    await server.__aenter__()
    port = server.port
    try:
        async with aiotmc.open(server.resource, timeout=1, connect_timeout=1) as inst:
            await echo(inst, 1)
            await server.__aexit__(None, None, None)
            outcome = await measure(lambda: inst.query("ECHO? 2"))
            assert isinstance(outcome.error, (ConnectionLostError, ConnectError)), outcome
            outcome = await measure(lambda: inst.query("ECHO? 2"))
            check(outcome, ConnectError, timeout=None)
            async with SimServer(device, port=port):
                await echo(inst, 3)
    finally:
        await server.__aexit__(None, None, None)


# -- USBTMC through the in-process port -------------------------------------------------------

USB_OPTIONS: dict[str, Any] = {
    "recovery_timeout": 1.0,
    "poll_interval": 0.005,
    "clear_on_open": True,
}


@dataclass
class UsbRig:
    device: SimDevice
    function: UsbtmcFunction
    stack: AsyncExitStack
    inst: aiotmc.Instrument
    port: FakeUsbPort

    @property
    def transport(self) -> UsbtmcTransport:
        transport = self.inst.transport
        assert isinstance(transport, UsbtmcTransport)
        return transport

    async def reopen(self) -> None:
        """Close the instrument and open a new session on the same device."""
        await self.stack.aclose()
        self.stack = AsyncExitStack()
        await self.stack.__aenter__()
        self.port = FakeUsbPort(self.function)
        transport = await self.stack.enter_async_context(
            open_usbtmc_transport(self.port, resource=RESOURCE, **USB_OPTIONS)
        )
        self.inst = aiotmc.Instrument(transport, timeout=TIMEOUT, max_message_size=MAX_MESSAGE)
        self.stack.push_async_callback(self.inst.aclose)


@asynccontextmanager
async def usb_rig(**function_options: Any) -> AsyncIterator[UsbRig]:
    device = hostile_device()
    function = UsbtmcFunction(device, **function_options)
    rig = UsbRig(device, function, AsyncExitStack(), None, None)  # type: ignore[arg-type]
    await rig.stack.__aenter__()
    try:
        await rig.reopen()
        await echo(rig.inst, 1)
        yield rig
    finally:
        await rig.stack.aclose()


async def _usb_stall_out(rig: UsbRig) -> Outcome:
    rig.function.stall_bulk_out(times=2)  # one halt is retried; the second is an error
    return await measure(lambda: rig.inst.query("ECHO? 1"))


async def _usb_stall_in(rig: UsbRig) -> Outcome:
    rig.function.stall_bulk_in(times=2)
    return await measure(lambda: rig.inst.query("ECHO? 1"))


async def _usb_late(rig: UsbRig) -> Outcome:
    rig.function.response_delay = 30
    try:
        return await measure(lambda: rig.inst.query("ECHO? 1"))
    finally:
        rig.function.response_delay = 0


async def _usb_drip(rig: UsbRig) -> Outcome:
    rig.function.max_in_transfer = 4
    rig.function.response_delay = 0.05
    try:
        return await measure(lambda: rig.inst.query("ECHO? 12345678901234567890", timeout=0.15))
    finally:
        rig.function.max_in_transfer = None
        rig.function.response_delay = 0


def _corrupt(kind: str) -> Callable[[UsbRig], Awaitable[Outcome]]:
    async def fault(rig: UsbRig) -> Outcome:
        rig.function.corrupt_next_response = kind
        return await measure(lambda: rig.inst.query("ECHO? 1"))

    return fault


def _usb_raw(command: str, *, block: bool = False) -> Callable[[UsbRig], Awaitable[Outcome]]:
    async def fault(rig: UsbRig) -> Outcome:
        if block:
            return await measure(lambda: rig.inst.query_block(command))
        return await measure(lambda: rig.inst.query(command))

    return fault


UsbFault = tuple[Callable[[UsbRig], Awaitable[Outcome]], type[Exception], float | None]
USB_FAULTS: dict[str, UsbFault] = {
    "bulk-OUT endpoint stall": (_usb_stall_out, UsbStallError, None),
    "bulk-IN endpoint stall": (_usb_stall_in, UsbStallError, None),
    "answer later than the timeout": (_usb_late, ReadTimeout, TIMEOUT),
    "slow-drip answer": (_usb_drip, ReadTimeout, 0.15),
    **{
        f"DEV_DEP_MSG_IN {kind.replace('_', ' ')}": (_corrupt(kind), RemoteProtocolError, None)
        for kind in CORRUPTIONS
    },
    "garbage where a block is due": (_usb_raw("GARBage?", block=True), RemoteProtocolError, None),
    "garbage after a block": (_usb_raw("TRAILer?", block=True), RemoteProtocolError, None),
    "oversized block header": (_usb_raw("HUGEheader?", block=True), RemoteProtocolError, None),
    "malformed block header": (_usb_raw("BADHeader?", block=True), RemoteProtocolError, None),
    "block shorter than announced": (
        _usb_raw("SHORtblock?", block=True),
        RemoteProtocolError,
        None,
    ),
    "oversized text answer": (_usb_raw("BIGText?"), RemoteProtocolError, None),
}


@pytest.mark.parametrize("name", list(USB_FAULTS))
async def test_usbtmc_fault(name: str, anyio_backend: str) -> None:
    fault, error, timeout = USB_FAULTS[name]
    async with usb_rig() as rig:
        outcome = await fault(rig)
        check(outcome, error, timeout=timeout, peak=8 * MB)
        assert not rig.transport.broken
        await echo(rig.inst)
        await echo(rig.inst, 43)


async def test_usbtmc_device_vanishes_mid_transfer(anyio_backend: str) -> None:
    """Unplug while a read waits: ConnectionLostError at once, on every later call too;
    after a replug a reopened session works (no hang, no leaked transfer)."""
    async with usb_rig() as rig:
        rig.function.response_delay = 30

        async def action() -> None:
            async with anyio.create_task_group() as tg:

                async def unplug() -> None:
                    await anyio.wait_all_tasks_blocked()
                    rig.function.disconnect()

                tg.start_soon(unplug)
                await rig.inst.query("ECHO? 1", timeout=10)

        outcome = await measure(action)
        if isinstance(outcome.error, BaseExceptionGroup):
            outcome.error = outcome.error.exceptions[0]
        check(outcome, ConnectionLostError, timeout=None)
        for _ in range(2):
            later = await measure(lambda: rig.inst.query("ECHO? 2"))
            check(later, ConnectionLostError, timeout=None)
        rig.function.response_delay = 0
        rig.function.replug()
        await rig.reopen()
        await echo(rig.inst)


async def test_usbtmc_failed_recovery_is_session_broken_and_reopen_fixes_it(
    anyio_backend: str,
) -> None:
    """The device stalls every abort and clear: the timed-out exchange raises ReadTimeout
    in time, later calls SessionBrokenError at once; a reopened session (which starts with
    a device clear) gets its own answers."""
    async with usb_rig() as rig:
        rig.function.response_delay = 30
        rig.function.fail_abort = rig.function.fail_clear = True
        outcome = await measure(lambda: rig.inst.query_block("BLK? 100000,5"))
        check(outcome, ReadTimeout, timeout=TIMEOUT)
        assert rig.transport.broken
        later = await measure(lambda: rig.inst.query("ECHO? 1"))
        check(later, SessionBrokenError, timeout=None)
        rig.function.fail_abort = rig.function.fail_clear = False
        rig.function.response_delay = 0
        await rig.reopen()
        await echo(rig.inst)


async def test_usbtmc_recovery_that_never_ends_is_bounded(anyio_backend: str) -> None:
    """CHECK_*_STATUS answers PENDING forever: the recovery gives up after
    ``recovery_timeout``; the call raised its ReadTimeout, the next SessionBrokenError."""
    async with usb_rig() as rig:
        rig.function.response_delay = 30
        rig.function.abort_pending_polls = 10**9
        outcome = await measure(lambda: rig.inst.query("ECHO? 1"))
        recovery = USB_OPTIONS["recovery_timeout"]
        check(outcome, ReadTimeout, timeout=TIMEOUT + recovery)
        check(await measure(lambda: rig.inst.query("ECHO? 2")), SessionBrokenError, timeout=None)
        rig.function.abort_pending_polls = 0
        rig.function.response_delay = 0
        await rig.reopen()
        await echo(rig.inst)


async def test_usbtmc_upload_cancelled_after_the_device_took_a_whole_transfer(
    anyio_backend: str,
) -> None:
    """Regression: a multi-transfer upload cancelled while its first transfer was in
    flight, but after the device had received all of it (a fast device: the cancel loses
    the race). The bulk-OUT abort then finds nothing in progress; without a device clear
    the next message would be appended to the half-sent upload (found by the libusb
    storm: the next query hung until its timeout)."""
    async with usb_rig(max_packet_size=512) as rig:
        # 16372 payload bytes + 12 header bytes = 32 whole packets per transfer.
        await rig.stack.aclose()
        rig.stack = AsyncExitStack()
        await rig.stack.__aenter__()
        rig.port = FakeUsbPort(rig.function)
        transport = await rig.stack.enter_async_context(
            open_usbtmc_transport(
                rig.port, resource=RESOURCE, max_transfer_size=16372, **USB_OPTIONS
            )
        )
        rig.inst = aiotmc.Instrument(transport, timeout=TIMEOUT)
        rig.stack.push_async_callback(rig.inst.aclose)
        hold = rig.port.hold("bulk_out", deliver_on_cancel=16384)
        upload = b"UPL #6100000" + bytes(100_000) + b"\n"
        async with anyio.create_task_group() as tg:

            async def cancel_when_parked() -> None:
                await hold.reached.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(cancel_when_parked)
            await rig.inst.write_raw(upload)
        assert hold.cancelled
        assert rig.function.seen.out_transfers[-1][1] == 16372  # the device has it all
        await checkpoint()
        await echo(rig.inst)
        assert rig.device.uploads == []  # type: ignore[attr-defined]


# -- USBTMC through real libusb ---------------------------------------------------------------


@pytest.mark.umockdev
def test_usbtmc_libusb_faults(umockdev: Any, anyio_backend: str) -> None:
    """Stalls, a late answer, every header corruption and an unplug mid-transfer, through
    real libusb (assertions, elapsed bounds included, run in the client)."""
    bed = umockdev([echo_usb_device()])
    result = run_hardening_client(bed, "faults", backend=anyio_backend, timeout=90)
    print(result)
    assert set(result["faults"]) >= {"stall 0x82", "stall 0x01", "late answer", "unplug"}


def test_every_fault_is_in_the_reliability_table() -> None:
    """docs/reliability.md lists every fault these tests inject (by the names used here)."""
    from pathlib import Path

    page = (Path(__file__).resolve().parents[2] / "docs" / "reliability.md").read_text()
    rows = {line.split("|")[1].strip() for line in page.splitlines() if line.startswith("| ")}
    missing = [name for name in sorted(set(TCP_FAULTS) | set(USB_FAULTS)) if name not in rows]
    assert not missing, f"faults missing from docs/reliability.md: {missing}"
