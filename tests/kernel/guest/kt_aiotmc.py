"""aiotmc's USB client through real xHCI + usbcore + usbfs + libusb + python-libusb1.

Every test runs on asyncio and trio (the root conftest's ``anyio_backend``) and with both
libusb event drivers: ``thread`` and ``pollfd`` (which needs a real usbfs: here it has
one). Each test plugs a fresh emulated instrument; the kernel's usbtmc driver binds
first and aiotmc detaches it, as it would on a desktop.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest

from aiotmc import ConnectionLostError
from aiotmc._usb.libusb_port import Libusb1Port
from aiotmc._usb.transfer import ZOMBIES
from aiotmc.protocol.events import ControlRequest
from aiotmc.transports.usbtmc import UsbtmcTransport, open_usbtmc_transport

from .conftest import record
from .link import PID, VID, HostLink

GET_CAPABILITIES = ControlRequest(request_type=0xA1, request=7, value=0, index=0, length=0x18)


@pytest.fixture(params=["thread", "pollfd"])
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@asynccontextmanager
async def transport(serial: str, driver: str) -> AsyncIterator[UsbtmcTransport]:
    async with (
        Libusb1Port(VID, PID, serial, driver=driver) as port,
        open_usbtmc_transport(port, resource=port.resource) as t,
    ):
        assert port.driver_name == driver
        yield t


async def query(t: UsbtmcTransport, command: bytes, max_size: int = 1 << 20) -> bytes:
    await t.send_message([command])
    return await t.receive_message(max_size=max_size)


async def test_idn_stb_trigger_clear(plugged: HostLink, driver: str) -> None:
    device = plugged.plug("dmm")
    async with transport(device.serial, driver) as t:
        idn = await query(t, b"*IDN?\n")
        assert idn.startswith(b"aiotmc,"), idn
        started = time.perf_counter()
        for _ in range(20):
            assert await query(t, b"*IDN?\n") == idn
        per_query = (time.perf_counter() - started) / 20
        await t.send_message([b"*CLS;*SRE 0\n"])
        assert await t.read_stb() & 0x10 == 0
        await t.trigger()
        await t.clear()
        await t.set_remote(True, lockout=True)
        stats = await anyio.to_thread.run_sync(plugged.stats)
        assert stats["triggers"] == 1 and stats["remote_enabled"] and stats["local_lockout"]
        await t.set_remote(False)
        assert await query(t, b"*OPC?\n") == b"1\n"
    # aiotmc gave the interface back: the kernel driver is bound again.
    assert device.driver() == "usbtmc"
    record(f"idn_roundtrip_ms[{driver}]", round(per_query * 1000, 2))


async def test_srq_from_the_instrument(plugged: HostLink, driver: str) -> None:
    device = plugged.plug("dmm")
    async with transport(device.serial, driver) as t:
        assert t.srq is not None
        async with t.srq.subscribe() as events:
            await t.send_message([b"*CLS;*ESE 1;*SRE 32;*OPC\n"])
            with anyio.fail_after(10):
                event = await events.receive()
            assert event.status & 0x60 == 0x60, event
            await anyio.to_thread.run_sync(plugged.call, "inject_srq", 0x51)
            with anyio.fail_after(10):
                event = await events.receive()
            assert event.status == 0x51, event


async def test_cancelled_read_then_reuse(plugged: HostLink, driver: str) -> None:
    """A bulk-IN nobody answers, cancelled: the usbredir cancel path; the port still works."""
    device = plugged.plug("dmm")
    async with Libusb1Port(VID, PID, device.serial, driver=driver) as port:
        with anyio.move_on_after(0.3) as scope:
            await port.bulk_in(512)
        assert scope.cancelled_caught
        assert (await port.control(GET_CAPABILITIES))[0] == 1
        async with open_usbtmc_transport(port, resource=port.resource) as t:
            assert (await query(t, b"*IDN?\n")).startswith(b"aiotmc,")
    assert not ZOMBIES


async def test_hot_unplug_mid_transfer(plugged: HostLink, driver: str) -> None:
    device = plugged.plug("dmm")
    async with transport(device.serial, driver) as t:
        await anyio.to_thread.run_sync(plugged.set, "response_delay", 60.0)
        await t.send_message([b"*IDN?\n"])
        failure: list[BaseException] = []

        async def pending_read() -> None:
            try:
                await t.receive_message(max_size=4096)
            except ConnectionLostError as exc:
                failure.append(exc)

        with anyio.fail_after(15):
            async with anyio.create_task_group() as tg:
                tg.start_soon(pending_read)
                await anyio.sleep(0.3)
                await anyio.to_thread.run_sync(lambda: plugged.unplug(wait=False))
        assert failure, "the pending read did not fail with ConnectionLostError"
        with pytest.raises(ConnectionLostError):
            await t.send_message([b"*IDN?\n"])
    # A new device plugged afterwards is found by a new port (hot-plug seen).
    again = plugged.plug("dmm")
    async with transport(again.serial, driver) as t:
        assert (await query(t, b"*IDN?\n")).startswith(b"aiotmc,")
    assert not ZOMBIES


async def test_idle_client_does_not_spin(plugged: HostLink, driver: str) -> None:
    """Waiting on interrupt-IN costs (almost) no CPU: both drivers block on the real usbfs."""
    device = plugged.plug("dmm")
    async with (
        Libusb1Port(VID, PID, device.serial, driver=driver) as port,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(port.interrupt_in, 8)
        await anyio.sleep(0.2)
        cpu, wall = time.process_time(), time.monotonic()
        await anyio.sleep(1.0)
        percent = 100 * (time.process_time() - cpu) / (time.monotonic() - wall)
        tg.cancel_scope.cancel()
    record(f"idle_client_cpu_pct[{driver}]", round(percent, 1))
    assert percent < 20, f"an idle client uses {percent:.0f}% of the (emulated) CPU"
