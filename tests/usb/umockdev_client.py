"""Client side of the umockdev tests: scenarios run through real libusb + python-libusb1.

This module runs in a subprocess started by ``tests/usb/conftest.py`` with
``LD_PRELOAD=libumockdev-preload.so.0`` and ``UMOCKDEV_DIR`` set (the preload must be in
the process from its start), never inside the pytest process::

    python -m tests.usb.umockdev_client <scenario> --backend trio --driver thread

A scenario is an ``async def`` that raises (usually AssertionError) on failure; the
process then prints the traceback on stderr and exits 1. On success it prints one line
``RESULT <json>`` with the scenario's measurements. ``AIOTMC_UMOCKDEV_CONTROL`` is the
device process's control socket (fault injection), ``AIOTMC_UMOCKDEV_INFO`` its READY
description.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc

from aiotmc import (
    ConnectionLostError,
    ResourceBusyError,
    ResourceNotFoundError,
    SessionBrokenError,
    UsbStallError,
)
from aiotmc._usb.discovery import alist_usbtmc_devices
from aiotmc._usb.errors import AmbiguousDeviceError, TransferStatus
from aiotmc._usb.libusb_port import Libusb1Port, open_usb_port
from aiotmc._usb.transfer import ZOMBIES
from aiotmc.protocol.events import ControlRequest
from aiotmc.protocol.usbtmc import HEADER_SIZE, MsgID, pack_header, unpack_header
from testbeds.umockdev.control import ControlClient
from testbeds.umockdev.host import INFO_ENV

VID, PID = 0x0957, 0x1796

Scenario = Callable[["Env"], Awaitable[dict[str, Any] | None]]
SCENARIOS: dict[str, Scenario] = {}


def scenario(fn: Scenario) -> Scenario:
    SCENARIOS[fn.__name__] = fn
    return fn


class Env:
    """What a scenario gets: driver choice, device info and the device control channel."""

    def __init__(self, driver: str) -> None:
        self.driver = driver
        self.info: dict[str, Any] = json.loads(os.environ[INFO_ENV])
        #: ``await env.control("stats")``: a command to the device process (fault injection).
        self.control = ControlClient()

    def open(self, serial: str | None = None, **kwargs: Any) -> Libusb1Port:
        return Libusb1Port(VID, PID, serial, driver=self.driver, **kwargs)

    async def aclose(self) -> None:
        await self.control.aclose()


# -- raw USBTMC helpers (the transport under test elsewhere; here: the port) --------------


class Usbtmc:
    """Minimal USBTMC framing over a Libusb1Port, to exercise the port directly."""

    def __init__(self, port: Libusb1Port) -> None:
        self.port = port
        self.tag = 0

    def _next_tag(self) -> int:
        self.tag = self.tag % 255 + 1
        return self.tag

    async def write(self, message: bytes) -> None:
        tag = self._next_tag()
        header = pack_header(MsgID.DEV_DEP_MSG_OUT, tag, len(message), attributes=1)  # EOM
        await self.port.bulk_out(header + message + b"\0" * (-len(message) % 4))

    async def read(self, chunk: int = 1 << 20) -> bytes:
        data = bytearray()
        while True:
            tag = self._next_tag()
            await self.port.bulk_out(pack_header(MsgID.REQUEST_DEV_DEP_MSG_IN, tag, chunk))
            while True:
                transfer = await self.port.bulk_in(chunk + HEADER_SIZE)
                if transfer:  # a device may send an empty first packet
                    break
            header = unpack_header(transfer)
            assert (header.msg_id, header.tag) == (MsgID.DEV_DEP_MSG_IN, tag), (header, tag)
            data += transfer[HEADER_SIZE : HEADER_SIZE + header.transfer_size]
            if header.eom:
                return bytes(data)

    async def query(self, command: str) -> bytes:
        await self.write(command.encode() + b"\n")
        return await self.read()


GET_CAPABILITIES = ControlRequest(request_type=0xA1, request=7, value=0, index=0, length=0x18)


def read_status_byte(tag: int) -> ControlRequest:
    return ControlRequest(request_type=0xA1, request=128, value=tag, index=0, length=3)


# -- scenarios -----------------------------------------------------------------------------


@scenario
async def open_close(env: Env) -> dict[str, Any]:
    serial = env.info["devices"][0]["serial"]
    async with env.open() as port:
        assert port.resource == f"USB0::0x0957::0x1796::{serial}::INSTR", port.resource
        assert port.driver_name == env.driver
        assert (port.bulk_out_endpoint, port.bulk_in_endpoint) == (0x01, 0x82)
        assert port.interrupt_in_endpoint == 0x83
        assert port.max_packet_size == 512
        assert port.interface_number == 0
        assert port.usb488
        caps = await port.control(GET_CAPABILITIES)
        assert len(caps) == 0x18 and caps[0] == 0x01, caps.hex()
        stats = await env.control("stats")
        assert stats["claimed"] == [0], stats
    assert (await env.control("stats"))["claimed"] == []
    async with env.open(serial) as port:
        assert port.info is not None and port.info.serial == serial
    for wrong in (dict(serial="NOPE"), dict(interface=3)):
        try:
            async with env.open(**wrong):
                raise AssertionError("opened a device that does not exist")
        except ResourceNotFoundError as exc:
            assert "no USBTMC device matches" in str(exc)
    try:
        async with open_usb_port(VID, 0x9999, driver=env.driver):
            raise AssertionError("opened a device that does not exist")
    except ResourceNotFoundError:
        pass
    return {"caps": caps.hex()}


@scenario
async def idn_roundtrip(env: Env) -> dict[str, Any]:
    """``*IDN?`` round trips: raw USBTMC framing on the port, then through the transport."""
    from aiotmc.transports.usbtmc import open_usbtmc_transport

    count = 50
    async with env.open() as port:
        tmc = Usbtmc(port)
        assert (await tmc.query("*IDN?")).count(b",") == 3
        started = time.perf_counter()
        for _ in range(count):
            await tmc.query("*IDN?")
        raw = (time.perf_counter() - started) / count
        tmc.tag = 0  # the transport numbers its own bTags
        async with open_usbtmc_transport(port, resource=port.resource) as transport:

            async def query(command: bytes) -> bytes:
                await transport.send_message([command])
                return await transport.receive_message(max_size=1 << 20)

            idn = await query(b"*IDN?\n")
            started = time.perf_counter()
            for _ in range(count):
                await query(b"*IDN?\n")
            per_query = (time.perf_counter() - started) / count
            stb = await transport.read_stb()
    assert idn.count(b",") == 3, idn
    return {
        "idn": idn.decode().strip(),
        "roundtrip_ms": round(per_query * 1000, 3),
        "raw_roundtrip_ms": round(raw * 1000, 3),
        "via": f"UsbtmcTransport (read_stb {stb})",
    }


@scenario
async def big_block(env: Env) -> dict[str, Any]:
    size = 4_000_000
    async with env.open() as port:
        tmc = Usbtmc(port)
        started = time.perf_counter()
        response = await tmc.query(f"BLOCK? {size}")
        elapsed_in = time.perf_counter() - started
        digits = response[1] - 0x30
        length = int(response[2 : 2 + digits])
        payload = response[2 + digits : 2 + digits + length]
        assert length == size and len(payload) == size
        assert payload == (bytes(range(256)) * (size // 256 + 1))[:size]
        blob = bytes(size)
        started = time.perf_counter()
        await tmc.write(b"X " + blob)
        elapsed_out = time.perf_counter() - started
        stats = await env.control("stats")
    assert stats["endpoints"]["0x01"]["bytes"] >= size
    return {
        "in_MBps": round(size / elapsed_in / 1e6, 1),
        "out_MBps": round(size / elapsed_out / 1e6, 1),
    }


@scenario
async def transport_block(env: Env) -> dict[str, Any]:
    """A several-MB IEEE block from the scope model through UsbtmcTransport."""
    from aiotmc.transports.usbtmc import open_usbtmc_transport

    size = 4_000_000
    async with env.open() as port, open_usbtmc_transport(port, resource=port.resource) as t:
        started = time.perf_counter()
        await t.send_message([f":WAVeform:TEST? {size}\n".encode()])
        response = await t.receive_message(max_size=size + 64)
        elapsed = time.perf_counter() - started
        digits = response[1] - 0x30
        assert int(response[2 : 2 + digits]) == size
        payload = response[2 + digits : 2 + digits + size]
        assert payload == (bytes(range(256)) * (size // 256 + 1))[:size]
        await t.send_message([b"*IDN?\n"])
        assert b"SIM" in await t.receive_message(max_size=4096)
    return {"MBps": round(size / elapsed / 1e6, 1)}


@scenario
async def pipelined_block(env: Env) -> dict[str, Any]:
    """10 MB blocks into a caller buffer with several bulk-IN URBs in flight (compared
    with one at a time, with and without URB latency); a cancel mid-read, then the next
    query."""
    import zlib

    from aiotmc.protocol.ieee4882 import block_header
    from aiotmc.sim.device import test_pattern
    from aiotmc.transports.usbtmc import open_usbtmc_transport

    size = 10_000_000
    expected = (bytes(range(256)) * (size // 256 + 1))[:size]
    result: dict[str, Any] = {}
    async with (
        env.open() as port,
        open_usbtmc_transport(port, resource=port.resource, pipeline=True) as t,
    ):
        buffer = memoryview(bytearray(size))
        pipelined = t._pipelined
        assert pipelined is not None

        async def read(label: str) -> None:
            started = time.perf_counter()
            await t.send_message([f":WAVeform:TEST? {size}\n".encode()])
            payload = await t.receive_block(buffer, max_size=size)
            result[label] = round(size / (time.perf_counter() - started) / 1e6, 1)
            assert payload == expected

        for latency in (0, 0.002):
            await env.control(f"latency {latency}")
            t._pipelined = None  # one transfer at a time (the path before pipelining)
            await read(f"sequential_MBps_latency_{latency}")
            t._pipelined = pipelined
            await read(f"pipelined_MBps_latency_{latency}")
        stats = await env.control("stats")
        peak = stats["endpoints"][f"0x{port.bulk_in_endpoint:02x}"]["peak_outstanding"]
        assert peak >= 2, stats
        result["peak_in_flight"] = peak
        with anyio.move_on_after(0.05) as scope:
            await t.send_message([f":WAVeform:TEST? {size}\n".encode()])
            await t.receive_block(buffer, max_size=size)
        result["cancelled_mid_read"] = scope.cancelled_caught
        await env.control("latency 0")
        await t.send_message([b"*IDN?\n"])
        assert b"SIM" in await t.receive_message(max_size=4096)
        await t.send_message([b":WAVeform:TEST? 300000\n"])
        assert await t.receive_block(max_size=300000) == test_pattern(300000)
        # an upload: several DEV_DEP_MSG_OUT transfers (1 MiB each) in flight
        upload = bytes(test_pattern(3_000_000))
        started = time.perf_counter()
        await t.send_message([b":WAVeform:UPLoad ", block_header(len(upload)), upload, b"\n"])
        result["upload_MBps"] = round(len(upload) / (time.perf_counter() - started) / 1e6, 1)
        await t.send_message([b":WAVeform:UPLoad?\n"])
        answer = await t.receive_message(max_size=100)
        assert answer == b"%d,%d\n" % (len(upload), zlib.crc32(upload)), answer
        stats = await env.control("stats")
        out = stats["endpoints"][f"0x{port.bulk_out_endpoint:02x}"]["peak_outstanding"]
        result["peak_out_in_flight"] = out
    return result


@scenario
async def read_stb(env: Env) -> dict[str, Any]:
    """READ_STATUS_BYTE: the reply arrives on interrupt-IN with bNotify1 = 0x80 | bTag."""
    async with env.open() as port:
        tmc = Usbtmc(port)
        await tmc.write(b"*SRE 0;*ESE 0;*CLS\n")
        replies = []
        for tag in (2, 3, 127):
            control = await port.control(read_status_byte(tag))
            assert control[0] == 0x01 and control[1] == tag, control.hex()
            with anyio.fail_after(5):
                notification = await port.interrupt_in(8)
            assert notification[0] == 0x80 | tag, notification.hex()
            replies.append(notification[1])
    return {"stb": replies}


@scenario
async def srq(env: Env) -> dict[str, Any]:
    """An SRQ injected on the bus, then one the instrument model raises itself (*OPC)."""
    async with env.open() as port:
        received: list[bytes] = []
        send, notifications = anyio.create_memory_object_stream[bytes](16)
        async with anyio.create_task_group() as tg:

            async def reader() -> None:
                async with send:
                    while True:
                        await send.send(await port.interrupt_in(8))

            tg.start_soon(reader)
            await anyio.sleep(0.05)
            await env.control("interrupt 8151")
            with anyio.fail_after(5):
                received.append(await notifications.receive())
            assert received[0] == b"\x81\x51", received
            tmc = Usbtmc(port)
            await tmc.write(b"*CLS;*ESE 1;*SRE 32;*OPC\n")
            with anyio.fail_after(5):
                received.append(await notifications.receive())
            tg.cancel_scope.cancel()
        notifications.close()
        assert received[1][0] == 0x81 and received[1][1] & 0x40, received
        # The cancelled reader's transfer was drained: the port still works.
        await port.control(GET_CAPABILITIES)
    return {"srq": [r.hex() for r in received]}


@scenario
async def cancel_bulk_in(env: Env) -> dict[str, Any]:
    """A bulk-IN nobody answers, cancelled: DISCARDURB reaches the device, port reusable."""
    async with env.open() as port:
        started = time.perf_counter()
        with anyio.move_on_after(0.2) as scope:
            await port.bulk_in(512)
        assert scope.cancelled_caught
        drained = time.perf_counter() - started
        completion = port.last_cancelled(port.bulk_in_endpoint)
        assert completion is not None and completion.status == TransferStatus.CANCELLED
        stats = await env.control("stats")
        assert stats["endpoints"]["0x82"]["discarded"] == 1, stats
        assert stats["ioctls"].get("DISCARDURB") == 1, stats
        assert not ZOMBIES
        tmc = Usbtmc(port)
        idn = await tmc.query("*IDN?")
        assert idn.count(b",") == 3
    return {"cancel_to_drained_ms": round((drained - 0.2) * 1000, 2)}


@scenario
async def leak(env: Env) -> dict[str, Any]:
    """libusb never gives a cancelled transfer back: leak it, fail loudly, exit cleanly."""
    await env.control("ignore-discards 1")
    port = env.open(cancel_grace=0.2)
    async with port:
        with anyio.move_on_after(0.1):
            await port.bulk_in(512)
        assert len(ZOMBIES) == 1
        try:
            await port.bulk_in(512)
            raise AssertionError("reused a leaked transfer")
        except SessionBrokenError:
            pass
        # Other endpoints still work.
        assert (await port.control(GET_CAPABILITIES))[0] == 1
        started = time.perf_counter()
    closed_in = time.perf_counter() - started
    assert closed_in < 2, closed_in
    # The process must still exit promptly (no finalizer spinning on the zombie).
    return {"close_s": round(closed_in, 3)}


@scenario
async def latency(env: Env) -> dict[str, Any]:
    """Slow completions; a cancel that loses the race to a completion (DISCARDURB EINVAL)."""
    async with env.open() as port:
        await env.control("latency 0.15")
        started = time.perf_counter()
        assert (await port.control(GET_CAPABILITIES))[0] == 1
        slow = time.perf_counter() - started
        assert slow >= 0.14, slow
        started = time.perf_counter()
        with anyio.move_on_after(0.05):
            await port.control(GET_CAPABILITIES)
        drained = time.perf_counter() - started
        completion = port.last_cancelled(0)
        assert completion is not None
        assert completion.status in (TransferStatus.COMPLETED, TransferStatus.CANCELLED)
        await env.control("latency 0")
        assert (await port.control(GET_CAPABILITIES))[0] == 1
    return {
        "slow_s": round(slow, 3),
        "drained_s": round(drained, 3),
        "race_status": TransferStatus(completion.status).name,
    }


@scenario
async def discovery(env: Env) -> dict[str, Any]:
    found = await alist_usbtmc_devices()
    names = sorted(info.visa_name for info in found)
    expected = sorted(
        f"USB0::0x{d['vid']:04X}::0x{d['pid']:04X}::{d['serial']}::INSTR"
        for d in env.info["devices"]
    )
    assert names == expected, (names, expected)
    assert all(info.manufacturer and info.product and info.accessible for info in found)
    only = await alist_usbtmc_devices(vid=VID, pid=PID)
    assert len(only) == 2, only
    try:
        async with env.open():
            raise AssertionError("opened one of two devices without a serial number")
    except AmbiguousDeviceError as exc:
        assert "A1" in str(exc) and "B2" in str(exc), str(exc)
    async with env.open("B2") as port:
        assert port.resource == "USB0::0x0957::0x1796::B2::INSTR"
        assert port.info is not None and port.info.address == 3
        # Listing while a device is open and claimed does not disturb it.
        again = await alist_usbtmc_devices()
        assert len(again) == 3
        assert (await port.control(GET_CAPABILITIES))[0] == 1
    return {"found": names}


@scenario
async def unplug(env: Env) -> dict[str, Any]:
    """Unplug during a pending bulk-IN: ConnectionLostError, then on every use."""
    async with env.open() as port:
        errors: list[BaseException] = []
        async with anyio.create_task_group() as tg:

            async def pending_read() -> None:
                try:
                    await port.bulk_in(512)
                except ConnectionLostError as exc:
                    errors.append(exc)

            tg.start_soon(pending_read)
            await anyio.sleep(0.05)
            await env.control("unplug")
        assert errors, "the pending read did not fail"
        for operation in (
            lambda: port.bulk_out(b"\0" * 12),
            lambda: port.control(GET_CAPABILITIES),
        ):
            try:
                await operation()
                raise AssertionError("I/O after unplug succeeded")
            except ConnectionLostError:
                pass
    assert not ZOMBIES
    assert await alist_usbtmc_devices() == []
    return {"error": str(errors[0])}


@scenario
async def busy(env: Env) -> None:
    """A second claim of the same interface (another libusb context) is refused."""
    async with env.open():
        try:
            async with env.open():
                raise AssertionError("claimed an interface twice")
        except ResourceBusyError as exc:
            assert "claimed" in str(exc)
    async with env.open():
        pass


@scenario
async def stall(env: Env) -> None:
    async with env.open() as port:
        await env.control("stall 0x82")
        try:
            await port.bulk_in(512)
            raise AssertionError("read from a halted endpoint")
        except UsbStallError as exc:
            assert exc.endpoint == 0x82
        await port.clear_halt(0x82)
        tmc = Usbtmc(port)
        assert (await tmc.query("*IDN?")).count(b",") == 3
        try:
            await port.control(ControlRequest(request_type=0xA1, request=99, value=0, index=0))
            raise AssertionError("an unknown class request did not stall")
        except UsbStallError:
            pass
        assert (await port.control(GET_CAPABILITIES))[0] == 1
        await port.reset()  # USB port reset: libusb re-claims the interface
        assert (await tmc.query("*IDN?")).count(b",") == 3
        assert (await env.control("stats"))["ioctls"].get("RESET") == 1


@scenario
async def stall_rules(env: Env) -> dict[str, Any]:
    """Endpoint halts through real libusb (the emulator halts at the chosen byte): one
    before the response or on a one-packet command is retried and the query answered;
    mid-response or a second one raises UsbStallError after a device clear. After each,
    ``*ESR?`` reads 0 and the error queue is empty."""
    from aiotmc.transports.usbtmc import open_usbtmc_transport

    async def ask(t: Any, command: bytes) -> bytes:
        await t.send_message([command])
        return bytes(await t.receive_message(max_size=4096))

    async def clean(t: Any) -> None:
        assert await ask(t, b"*ESR?\n") == b"0\n"
        assert await ask(t, b"SYST:ERR?\n") == b'+0,"No error"\n'
        assert b"SIM" in await ask(t, b"*IDN?\n")

    options = {"poll_interval": 0.005, "drain_timeout": 0.05}
    seen: dict[str, str] = {}
    async with (
        env.open() as port,
        open_usbtmc_transport(port, resource=port.resource, **options) as t,
    ):
        await ask(t, b"*ESR?\n")  # baseline
        with anyio.fail_after(10):
            await env.control("call stall_bulk_in [0]")
            assert b"SIM" in await ask(t, b"*IDN?\n")
            await clean(t)
            await env.control("call stall_bulk_out [0]")
            assert b"SIM" in await ask(t, b"*IDN?\n")
            await clean(t)
            assert t.stall_retries == 2
            seen["retried"] = "answered"
            await env.control("set max_in_transfer 4")
            await env.control("call stall_bulk_in [16]")
            await t.send_message([b"*IDN?\n"])
            await expect(UsbStallError, t.receive_message(max_size=4096))
            await env.control("set max_in_transfer null")
            await clean(t)
            await env.control("call stall_bulk_in [0, 2]")
            await expect(UsbStallError, ask(t, b"*IDN?\n"))
            await clean(t)
            await env.control("call stall_bulk_out [0, 2]")
            await expect(UsbStallError, ask(t, b"*IDN?\n"))
            await clean(t)
            assert t.stall_retries == 4 and not t.broken
            seen["mid-response, second halts"] = "UsbStallError, clean"
    return seen


@scenario
async def misuse(env: Env) -> None:
    port = env.open()
    async with port:
        async with anyio.create_task_group() as tg:
            tg.start_soon(port.bulk_in, 512)
            await anyio.wait_all_tasks_blocked()
            try:
                await port.bulk_in(512)
                raise AssertionError("two concurrent reads on one endpoint")
            except anyio.BusyResourceError:
                pass
            tg.cancel_scope.cancel()
        # aclose while another task waits: the waiter gets ClosedResourceError.
        outcome: list[BaseException] = []
        async with anyio.create_task_group() as tg:

            async def waiter() -> None:
                try:
                    await port.interrupt_in(8)
                except anyio.ClosedResourceError as exc:
                    outcome.append(exc)

            tg.start_soon(waiter)
            await anyio.sleep(0.05)
            await port.aclose()
        assert outcome, "waiter was not released by aclose"
        await port.aclose()
    try:
        await port.bulk_out(b"x")
        raise AssertionError("I/O on a closed port")
    except anyio.ClosedResourceError:
        pass


@scenario
async def idle_cpu(env: Env) -> dict[str, Any]:
    """CPU used by an idle client (interrupt-IN pending) and by the device process."""
    device_pid = int(env.info["pid"])

    def device_cpu() -> float:
        with open(f"/proc/{device_pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async with env.open() as port, anyio.create_task_group() as tg:
        driver = port._context.driver  # white box: the polling fallback's counters
        tg.start_soon(port.interrupt_in, 8)
        await anyio.sleep(0.3)
        handled = getattr(driver, "handled", 0)
        cpu, dev, wall = time.process_time(), device_cpu(), time.monotonic()
        await anyio.sleep(2.0)
        wall = time.monotonic() - wall
        client_pct = 100 * (time.process_time() - cpu) / wall
        device_pct = 100 * (device_cpu() - dev) / wall
        polls_per_s = (getattr(driver, "handled", 0) - handled) / wall
        polled = bool(getattr(driver, "polled_fds", ()))
        tg.cancel_scope.cancel()
    if polled:
        # umockdev's device node is a regular file: the pollfd driver can only poll it,
        # backing off to one libusb call per poll_backoff_max (4 ms). Its idle cost is that
        # rate (each call goes through umockdev's preload library, ~10 % of a core on
        # asyncio); CPU time varies with the machine's load, the rate does not grow with it.
        assert polls_per_s <= 1.5 / driver._poll_backoff_max, f"{polls_per_s:.0f} polls/s"
        assert client_pct < 50, f"idle polling client uses {client_pct:.1f}% of a core"
    else:
        assert client_pct < 20, f"idle client uses {client_pct:.1f}% of a core"
    return {
        "client_cpu_pct": round(client_pct, 1),
        "device_cpu_pct": round(device_pct, 1),
        "polls_per_s": round(polls_per_s),
        "polled": polled,
    }


# -- the public API end to end: aiotmc.open(<VISA name>) -> Instrument ---------------------
#
# These scenarios group many checks per client process (starting one costs ~1 s); each
# check runs as a named step, and a failing step names itself in the error.


def pattern(size: int) -> bytes:
    return (bytes(range(256)) * (size // 256 + 1))[:size]


def visa(device: dict[str, Any]) -> str:
    return f"USB0::0x{device['vid']:04X}::0x{device['pid']:04X}::{device['serial']}::INSTR"


class Steps:
    """Named checks: progress on stderr, failures collected or raised with the step name."""

    def __init__(self) -> None:
        self.failures: list[str] = []
        self.timings: dict[str, float] = {}

    @asynccontextmanager
    async def __call__(self, name: str, *, keep_going: bool = False) -> AsyncIterator[None]:
        sys.stderr.write(f"step {name} ...\n")
        started = time.perf_counter()
        try:
            yield
        except Exception as exc:
            text = f"step {name!r} failed: {type(exc).__name__}: {exc}"
            if not keep_going:
                raise AssertionError(text) from exc  # main() prints the traceback
            sys.stderr.write(text + "\n" + traceback.format_exc())
            self.failures.append(text)
        else:
            self.timings[name] = round(time.perf_counter() - started, 3)
            sys.stderr.write(f"step {name} ok ({self.timings[name]} s)\n")

    def check(self) -> None:
        if self.failures:
            raise AssertionError(
                f"{len(self.failures)} step(s) failed:\n" + "\n".join(self.failures)
            )


async def expect(error: type[BaseException], awaitable: Awaitable[Any]) -> BaseException:
    try:
        await awaitable
    except error as exc:
        return exc
    raise AssertionError(f"expected {error.__name__}")


async def _unplug_during(env: Env, index: int, name: str, pending: bool) -> str:
    import aiotmc

    async with aiotmc.open(name, driver=env.driver, timeout=30) as inst:
        assert (await inst.query("*IDN?")).startswith("aiotmc,SIM-")
        if pending:
            await env.control(f"@{index} call model.delay_next_responses [30.0, 1]")
        else:
            await env.control(f"@{index} latency 0.03")  # every URB completes 30 ms late
        lost: list[BaseException] = []
        async with anyio.create_task_group() as tg:

            async def transfer() -> None:
                try:
                    await inst.query_block(":WAVeform:TEST? 4000000")
                except aiotmc.ConnectionLostError as exc:
                    lost.append(exc)

            tg.start_soon(transfer)
            with anyio.fail_after(10):
                while True:  # until the read is pending / the block is really flowing
                    stats = await env.control(f"@{index} stats")
                    if pending and stats["pending_in"].get("0x82"):
                        break
                    if stats["endpoints"].get("0x82", {}).get("bytes", 0) >= 100_000:
                        break
                    await anyio.sleep(0.01)
            await env.control(f"@{index} latency 0")
            await env.control(f"@{index} unplug")
        assert lost, "the transfer did not fail with ConnectionLostError"
        assert not pending or "endpoint 0x82" in str(lost[0]), lost[0]  # the read
        await expect(aiotmc.ConnectionLostError, inst.query("*IDN?"))
        await expect(aiotmc.ConnectionLostError, inst.read_stb())
    try:
        async with aiotmc.open(name, driver=env.driver):
            raise AssertionError("opened an unplugged device")
    except aiotmc.ResourceNotFoundError:
        pass
    return str(lost[0])


BLOCK_SIZE = 8 * 1024 * 1024
STORM = 300


@scenario
async def instrument(env: Env) -> dict[str, Any]:
    """``aiotmc.open`` by VISA name: queries, 8 MB blocks, SRQ, read_stb in an SRQ storm,
    timeout and cancellation recovery; then hot-unplug of the two spare devices."""
    import aiotmc

    scope = env.info["devices"][0]
    steps = Steps()
    result: dict[str, Any] = {}
    name = visa(scope)
    async with aiotmc.open(name, driver=env.driver, timeout=10) as inst:
        async with steps("open"):
            assert isinstance(inst, aiotmc.Instrument)
            assert inst.resource == name, inst.resource
            caps = inst.transport.info.capabilities
            assert caps.srq and caps.read_stb and caps.trigger, caps

        async with steps("*IDN? query"):
            idn = await inst.query("*IDN?")
            assert idn == "aiotmc,SIM-SCOPE,0001,0.1", idn
            count = 50
            started = time.perf_counter()
            for _ in range(count):
                assert await inst.query("*IDN?") == idn
            result["idn_roundtrip_ms"] = round((time.perf_counter() - started) / count * 1e3, 3)

        async with steps("8 MB block into a new buffer"):
            expected = pattern(BLOCK_SIZE)
            assert b"\n" in expected
            started = time.perf_counter()
            block = await inst.query_block(f":WAVeform:TEST? {BLOCK_SIZE}")
            elapsed = time.perf_counter() - started
            assert isinstance(block, bytearray) and len(block) == BLOCK_SIZE, len(block)
            assert block == expected, "block payload differs from 00..FF"
            result["block_new_MBps"] = round(BLOCK_SIZE / elapsed / 1e6, 1)
            del block

        async with steps("8 MB block into a reused buffer"):
            buffer = bytearray(b"\xee") * (BLOCK_SIZE + 100)
            rates = []
            for size in (BLOCK_SIZE, BLOCK_SIZE - 1001):
                started = time.perf_counter()
                view = await inst.query_block(f":WAVeform:TEST? {size}", into=buffer)
                rates.append(size / (time.perf_counter() - started) / 1e6)
                assert isinstance(view, memoryview) and view.obj is buffer and len(view) == size
                assert buffer[:size] == expected[:size], "payload not read into the buffer"
                view.release()
            assert buffer[BLOCK_SIZE:] == b"\xee" * 100, "wrote past the block"
            result["block_reused_MBps"] = round(max(rates), 1)
            assert await inst.query("*IDN?") == idn

        async with steps("SRQ on operation complete (*ESE 1;*SRE 32, *OPC)"):
            await inst.write("*CLS;*ESE 1;*SRE 32")
            async with inst.service_requests() as events:
                started = time.perf_counter()
                await inst.write(":TRIGger:SOURce BUS;:SINGle;*OPC")
                await inst.trigger()  # USB488 TRIGGER: the acquisition runs ~10 ms
                with anyio.fail_after(5):
                    event = await events.receive()
                result["srq_after_trigger_ms"] = round((time.perf_counter() - started) * 1e3, 2)
            assert event.status & 0x40 and event.status & 0x20, event
            assert event.source == name, event.source
            assert await inst.query("*ESR?") == "1"
            stb = int(await inst.read_stb())  # the serial poll reads and clears RQS
            assert stb & 0x60 == 0x40, hex(stb)
            assert int(await inst.read_stb()) & 0x60 == 0

        async with steps("read_stb during an SRQ storm"):
            await inst.write("*CLS;*ESE 0;*SRE 0;NO:SUCH:COMMand")  # EAV: stb 0x04
            assert int(await inst.read_stb()) == 0x04
            srq = inst.transport.srq
            assert srq is not None
            dropped_before = srq.dropped
            fast: list[int] = []
            slow_got: list[int] = []
            reads: list[int] = []
            storm_over = anyio.Event()
            async with (
                inst.service_requests(buffer=STORM + 10) as all_events,
                inst.service_requests(buffer=4) as few_events,  # read only at the end
                anyio.create_task_group() as tg,
            ):

                async def subscriber() -> None:
                    async for event in all_events:
                        fast.append(int(event.status))
                        if len(fast) == STORM:
                            storm_over.set()
                            return

                async def poller() -> None:  # two of them: tags interleave under the lock
                    while not storm_over.is_set() or len(reads) < 100:
                        reads.append(int(await inst.read_stb()))

                tg.start_soon(subscriber)
                await env.control(f"storm {STORM} 1 2")  # one SRQ every ~2 ms
                started = time.perf_counter()
                with anyio.fail_after(20):
                    async with anyio.create_task_group() as pollers:
                        pollers.start_soon(poller)
                        pollers.start_soon(poller)
                storm_s = time.perf_counter() - started
                while True:
                    try:
                        slow_got.append(int(few_events.receive_nowait().status))
                    except anyio.WouldBlock:
                        break
            assert set(reads) == {0x04}, f"read_stb crossed with SRQs: {sorted(set(reads))}"
            want = [0x40 | (n & 0x3F) for n in range(STORM)]
            assert fast == want, "SRQs lost, duplicated or out of order"
            slow_dropped = srq.dropped - dropped_before
            assert len(slow_got) + slow_dropped == STORM, (len(slow_got), slow_dropped)
            assert slow_got == want[: len(slow_got)], slow_got
            result["storm"] = {
                "srq": STORM,
                "read_stb": len(reads),
                "seconds": round(storm_s, 3),
                "slow_subscriber_dropped": slow_dropped,
            }
            await inst.write("*CLS")

        async with steps("timeout, then the next answer"):
            await env.control("call model.delay_next_responses [3.0, 1]")
            started = time.perf_counter()
            await expect(aiotmc.ReadTimeout, inst.query("*ESE?", timeout=0.3))
            result["timeout_recovered_s"] = round(time.perf_counter() - started, 3)
            assert getattr(inst.transport, "recoveries", 0) >= 1
            assert await inst.query("*IDN?") == idn
            assert await inst.query("*ESE?") == "0"
            # Again, with the late answer ready in the device before the next query.
            await env.control("call model.delay_next_responses [0.4, 1]")
            await expect(aiotmc.ReadTimeout, inst.query("*ESE?", timeout=0.2))
            await anyio.sleep(0.3)
            assert await inst.query("*IDN?") == idn

        async with steps("cancelled query, then the next answer"):
            await env.control("call model.delay_next_responses [3.0, 1]")
            with anyio.move_on_after(0.2) as scope_:
                await inst.query(":WAVeform:TEST? 3")
            assert scope_.cancelled_caught
            assert await inst.query("*IDN?") == idn
            block = await inst.query_block(":WAVeform:TEST? 1000")
            assert block == pattern(1000)
            await inst.write("*CLS")
            assert await inst.errors() == []

    # Two spare devices with their own product IDs (so their names leave the serial out):
    # one unplugged while a 4 MB block is flowing, one while a bulk-IN read is pending.
    for index, pending in ((1, False), (2, True)):
        spare = env.info["devices"][index]
        short = f"USB0::0x{spare['vid']:04X}::0x{spare['pid']:04X}::INSTR"
        what = "a bulk-IN read pending" if pending else "a 4 MB block flowing"
        async with steps(f"hot-unplug with {what}: ConnectionLostError"):
            result[f"unplug_{'pending' if pending else 'block'}"] = await _unplug_during(
                env, index, short, pending
            )
    assert not ZOMBIES
    result["steps_s"] = steps.timings
    return result


# -- every quirk, through aiotmc.open --------------------------------------------------------

#: One emulated device per named behaviour of :class:`Quirks` (the device misbehaves that
#: way; the client opens it with ``quirks=`` set to the same value). ``terminator`` is not
#: a behaviour but a parameter of ``eom_unreliable`` / ``transfer_size_includes_padding``.
QUIRK_BEHAVIOURS: dict[str, dict[str, Any]] = {
    "one_request_per_response": {"one_request_per_response": True},
    "eom_unreliable": {"eom_unreliable": True, "max_transfer_size": 63},
    "transfer_size_wrong_for_blocks": {"transfer_size_wrong_for_blocks": True},
    "no_short_packet_on_exact_multiple": {"no_short_packet_on_exact_multiple": True},
    "transfer_size_includes_padding": {"transfer_size_includes_padding": True},
    "empty_first_bulk_in_retry": {"empty_first_bulk_in_retry": True},
    "msgid_unreliable": {"msgid_unreliable": True},
    "max_transfer_size": {"max_transfer_size": 63},
    "max_out_transfer_size": {"max_out_transfer_size": 48},
    "reset_on_open": {"reset_on_open": True},
    "remote_local_broken": {"remote_local_broken": True},
    "clear_hangs": {"clear_hangs": True},
    "write_read_delay": {"write_read_delay": 0.02},
}
NOT_A_BEHAVIOUR = {"terminator"}
#: Product IDs for vendor-wide table entries ``(VID, None)``: models without an entry.
VENDOR_PIDS = {0x1AB1: 0x04B0, 0xF4EC: 0x1010, 0x1334: 0x0202, 0x0B21: 0x0039}


def quirks_dict(quirks: Any) -> dict[str, Any]:
    from dataclasses import fields

    return {f.name: getattr(quirks, f.name) for f in fields(quirks)}


def quirk_devices() -> list[dict[str, Any]]:
    """The quirk testbed: one device per behaviour, then one per KNOWN_QUIRKS entry.

    Each entry is a device spec for the umockdev process plus ``label``, ``expect`` (the
    Quirks fields the client must end up with) and ``explicit`` (pass ``quirks=``)."""
    from dataclasses import fields

    from aiotmc.protocol.quirks import KNOWN_QUIRKS, Quirks

    names = {f.name for f in fields(Quirks)} - NOT_A_BEHAVIOUR
    missing = names - set(QUIRK_BEHAVIOURS)
    assert not missing, f"add a umockdev case for the new quirk(s) {sorted(missing)}"
    devices: list[dict[str, Any]] = []
    for name, values in QUIRK_BEHAVIOURS.items():
        quirks = quirks_dict(Quirks(**values))
        config: dict[str, Any] = {"model": "scope", "serial": f"Q-{name}", "quirks": quirks}
        spec = {"factory": INSTRUMENT_FACTORY, "config": config}
        devices.append({**spec, "label": name, "expect": quirks, "explicit": True})
    for (vid, pid), quirks_value in KNOWN_QUIRKS.items():
        product = pid if pid is not None else VENDOR_PIDS.get(vid, 0x7E57)
        assert pid is not None or (vid, product) not in KNOWN_QUIRKS
        quirks = quirks_dict(quirks_value)
        label = f"table {vid:04X}:{'*' if pid is None else f'{pid:04X}'}"
        config = {
            "model": "scope",
            "vid": vid,
            "pid": product,
            "serial": f"T-{vid:04X}-{product:04X}",
            "quirks": quirks,
        }
        spec = {"factory": INSTRUMENT_FACTORY, "config": config}
        devices.append({**spec, "label": label, "expect": quirks, "explicit": False})
    return devices


INSTRUMENT_FACTORY = "testbeds.umockdev.factories:usbtmc"


@scenario
async def quirks(env: Env) -> dict[str, Any]:
    """Each emulated misbehaving device, opened by VISA name: a query, blocks, an upload,
    a device clear; remote/local refused where it is broken; failures listed together."""
    import zlib

    import aiotmc
    from aiotmc.protocol.ieee4882 import block_header
    from aiotmc.protocol.quirks import Quirks

    plan = quirk_devices()
    devices = env.info["devices"]
    assert len(devices) == len(plan), "the testbed does not match quirk_devices()"
    steps = Steps()
    upload = pattern(300)
    for index, (spec, device) in enumerate(zip(plan, devices, strict=True)):
        expect_quirks = Quirks(**spec["expect"])
        name = visa(device)
        assert device["serial"] == spec["config"]["serial"]
        async with steps(f"{spec['label']} ({name})", keep_going=True):
            options: dict[str, Any] = {"quirks": expect_quirks} if spec["explicit"] else {}
            with anyio.fail_after(30):
                async with aiotmc.open(name, driver=env.driver, timeout=10, **options) as inst:
                    transport: Any = inst.transport  # a UsbtmcTransport
                    assert transport.quirks == expect_quirks, transport.quirks
                    active = await env.control(f"@{index} get quirks.active")
                    assert set(active) == set(expect_quirks.active), active  # misbehaving
                    assert await inst.query("*IDN?") == "aiotmc,SIM-SCOPE,0001,0.1"
                    small = expect_quirks.max_transfer_size is not None
                    for size in (0, 493, 1005, 5000 if small else 70_000):
                        block = await inst.query_block(f":WAVeform:TEST? {size}")
                        assert block == pattern(size), f"{size}-byte block differs"
                    await inst.write_raw(
                        b":WAVeform:UPLoad " + block_header(len(upload)) + upload + b"\n"
                    )
                    answer = await inst.query(":WAVeform:UPLoad?")
                    assert answer == f"{len(upload)},{zlib.crc32(upload)}", answer
                    await inst.clear()
                    assert await inst.query("*IDN?") == "aiotmc,SIM-SCOPE,0001,0.1"
                    remote = inst.transport.info.capabilities.remote_local
                    if expect_quirks.remote_local_broken:
                        assert not remote
                        await expect(aiotmc.UnsupportedOperation, transport.set_remote(True))
                    else:
                        assert remote
                        await transport.set_remote(True)
                        await transport.set_remote(False)
                    assert await inst.query("*ESE?") == "0"
                    stats = await env.control(f"@{index} stats")
                    resets = stats["ioctls"].get("RESET", 0)
                    assert resets == int(expect_quirks.reset_on_open), stats["ioctls"]
    steps.check()
    return {"devices": len(plan), "steps_s": steps.timings}


@scenario
async def quirk_controls(env: Env) -> dict[str, Any]:
    """Negative controls: the quirk devices opened *without* their quirk really fail, so
    the ``quirks`` scenario is not vacuous."""
    from dataclasses import replace

    import aiotmc
    from aiotmc.protocol.quirks import NO_QUIRKS, Quirks

    plan = quirk_devices()
    devices = env.info["devices"]
    assert {c[0] for c in NEGATIVE_CONTROLS} == set(QUIRK_BEHAVIOURS), "a control is missing"
    steps = Steps()
    errors: dict[str, str] = {}
    by_label = {spec["label"]: (spec, dev) for spec, dev in zip(plan, devices, strict=True)}
    for label, action, error in NEGATIVE_CONTROLS:
        spec, device = by_label[label]
        # Everything the device does, except the one behaviour under test.
        quirks = replace(Quirks(**spec["expect"]), **{label: getattr(NO_QUIRKS, label)})
        async with steps(f"without the quirk: {label} fails", keep_going=True):
            with anyio.fail_after(30):
                async with open_bounded(visa(device), env.driver, quirks) as inst:
                    try:
                        await action(inst)
                    except Exception as exc:
                        errors[label] = f"{type(exc).__name__}: {exc}"
                        kinds = tuple(
                            Misbehaved if e == "Misbehaved" else getattr(aiotmc, e) for e in error
                        )
                        assert isinstance(exc, kinds), errors[label]
                    else:
                        raise AssertionError("worked without the quirk")
    steps.check()
    return {"errors": errors}


@asynccontextmanager
async def open_bounded(name: str, driver: str, quirks: Any) -> AsyncIterator[Any]:
    """Like ``aiotmc.open(name, quirks=quirks, timeout=0.3)``, with recovery bounded to
    0.5 s (a hanging CHECK_CLEAR_STATUS would otherwise take the default 5 s)."""
    import aiotmc
    from aiotmc.resources import UsbInstr, parse_resource
    from aiotmc.transports.usbtmc import open_usbtmc_transport

    res = parse_resource(name)
    assert isinstance(res, UsbInstr)
    async with (
        open_usb_port(res.vid, res.pid, res.serial, driver=driver) as port,
        open_usbtmc_transport(
            port, resource=name, quirks=quirks, recovery_timeout=0.5, poll_interval=0.02
        ) as transport,
        aiotmc.Instrument(transport, timeout=0.3) as inst,
    ):
        yield inst


class Misbehaved(Exception):
    """A negative control got a wrong answer (rather than an error)."""


async def _remote_then_query(inst: Any) -> None:
    await inst.transport.set_remote(True)
    await inst.query("*IDN?")


def _answer_is(command: str, good: str, twice: bool = False) -> Callable[[Any], Awaitable[None]]:
    async def action(inst: Any) -> None:
        for _ in range(2 if twice else 1):
            answer = await inst.query(command)
            if answer != good:
                raise Misbehaved(f"{command} answered {answer!r}")

    return action


def _block_is(size: int) -> Callable[[Any], Awaitable[None]]:
    async def action(inst: Any) -> None:
        block = await inst.query_block(f":WAVeform:TEST? {size}")
        if block != pattern(size):
            raise Misbehaved(f"a {size}-byte block came back as {len(block)} wrong bytes")

    return action


IDN = "aiotmc,SIM-SCOPE,0001,0.1"

#: (behaviour, what to do, how it fails) with ``quirks=Quirks()`` and ``timeout=0.3``.
NEGATIVE_CONTROLS: list[tuple[str, Callable[[Any], Awaitable[Any]], tuple[str, ...]]] = [
    # The restarted response: wrong data, bytes after the block, or no end (timing).
    (
        "one_request_per_response",
        _block_is(3_000_000),
        ("AiotmcTimeout", "RemoteProtocolError", "Misbehaved"),
    ),
    ("eom_unreliable", _answer_is("*IDN?", IDN), ("AiotmcTimeout",)),
    ("transfer_size_wrong_for_blocks", _block_is(70_000), ("RemoteProtocolError",)),
    ("no_short_packet_on_exact_multiple", _block_is(1005), ("AiotmcTimeout",)),
    ("transfer_size_includes_padding", _answer_is("*IDN?", IDN), ("Misbehaved",)),
    # The first empty read after opening passes as a stale ZLP; the next one cannot.
    ("empty_first_bulk_in_retry", _answer_is("*IDN?", IDN, twice=True), ("RemoteProtocolError",)),
    ("msgid_unreliable", _answer_is("*IDN?", IDN), ("RemoteProtocolError",)),
    ("max_transfer_size", _answer_is("*IDN?", IDN), ("AiotmcTimeout",)),
    ("max_out_transfer_size", _answer_is("*IDN?;" * 10 + "*IDN?", ""), ("UsbStallError",)),
    ("reset_on_open", _answer_is("*IDN?", IDN), ("AiotmcTimeout",)),
    ("remote_local_broken", _remote_then_query, ("AiotmcTimeout",)),
    ("clear_hangs", lambda inst: inst.clear(), ("AiotmcTimeout", "SessionBrokenError")),
    ("write_read_delay", _answer_is("*IDN?", IDN), ("AiotmcTimeout",)),
]


# -- main ----------------------------------------------------------------------------------


#: Scenarios that group many checks get longer (the harness kills a client after 50 s).
LIMITS = {"instrument": 40.0, "quirks": 40.0, "quirk_controls": 40.0}


async def _run(name: str, driver: str) -> dict[str, Any] | None:
    env = Env(driver)
    limit = float(os.environ.get("AIOTMC_UMOCKDEV_TIMEOUT", LIMITS.get(name, 30.0)))
    try:
        with anyio.fail_after(limit):
            return await SCENARIOS[name](env)
    finally:
        await env.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    parser.add_argument("--driver", default="thread", choices=["thread", "pollfd", "auto"])
    args = parser.parse_args(argv)
    try:
        result = anyio.run(_run, args.scenario, args.driver, backend=args.backend)
    except BaseException:
        traceback.print_exc()
        return 1
    sys.stdout.write("RESULT " + json.dumps(result or {}) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
