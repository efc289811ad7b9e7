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
import struct
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
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
        self.info: dict[str, Any] = json.loads(os.environ["AIOTMC_UMOCKDEV_INFO"])
        self._control_path = os.environ["AIOTMC_UMOCKDEV_CONTROL"]
        self._stream: anyio.abc.SocketStream | None = None
        self._buffer = b""

    def open(self, serial: str | None = None, **kwargs: Any) -> Libusb1Port:
        return Libusb1Port(VID, PID, serial, driver=self.driver, **kwargs)

    async def control(self, command: str) -> Any:
        """Send a fault-injection command to the device process; return its result."""
        if self._stream is None:
            self._stream = await anyio.connect_unix(self._control_path)
        await self._stream.send(command.encode() + b"\n")
        while b"\n" not in self._buffer:
            self._buffer += await self._stream.receive()
        line, _, self._buffer = self._buffer.partition(b"\n")
        reply = json.loads(line)
        if not reply["ok"]:
            raise RuntimeError(f"device command {command!r} failed: {reply['error']}")
        return reply.get("result")

    async def aclose(self) -> None:
        if self._stream is not None:
            await self._stream.aclose()


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
        header = struct.pack("<BBBBIB3x", 1, tag, ~tag & 0xFF, 0, len(message), 1)
        transfer = header + message
        await self.port.bulk_out(transfer + b"\0" * (-len(transfer) % 4))

    async def read(self, chunk: int = 1 << 20) -> bytes:
        data = bytearray()
        while True:
            tag = self._next_tag()
            await self.port.bulk_out(struct.pack("<BBBBIB3x", 2, tag, ~tag & 0xFF, 0, chunk, 0))
            while True:
                transfer = await self.port.bulk_in(chunk + 12)
                if transfer:  # a device may send an empty first packet
                    break
            msg_id, rtag, _, _, size, attributes = struct.unpack_from("<BBBBIB", transfer)
            assert msg_id == 2 and rtag == tag, (msg_id, rtag, tag)
            data += transfer[12 : 12 + size]
            if attributes & 1:
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
            async with env.open(**wrong):  # type: ignore[arg-type]
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
    async with env.open() as port:
        try:
            from aiotmc.transports.usbtmc import open_usbtmc_transport
        except ImportError:
            open_usbtmc_transport = None
        if open_usbtmc_transport is not None:
            async with open_usbtmc_transport(port, resource=port.resource) as transport:

                async def query(command: bytes) -> bytes:
                    await transport.send_message([command])
                    return await transport.receive_message(max_size=1 << 20)

                idn = await query(b"*IDN?\n")
                started = time.perf_counter()
                for _ in range(50):
                    await query(b"*IDN?\n")
                per_query = (time.perf_counter() - started) / 50
                stb = await transport.read_stb()
                via = f"UsbtmcTransport (read_stb {stb})"
        else:
            tmc = Usbtmc(port)
            idn = await tmc.query("*IDN?")
            started = time.perf_counter()
            for _ in range(50):
                await tmc.query("*IDN?")
            per_query = (time.perf_counter() - started) / 50
            via = "raw"
    assert idn.count(b",") == 3, idn
    return {"idn": idn.decode().strip(), "roundtrip_ms": round(per_query * 1000, 3), "via": via}


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
        tg.start_soon(port.interrupt_in, 8)
        await anyio.sleep(0.3)
        cpu, dev, wall = time.process_time(), device_cpu(), time.monotonic()
        await anyio.sleep(2.0)
        wall = time.monotonic() - wall
        client_pct = 100 * (time.process_time() - cpu) / wall
        device_pct = 100 * (device_cpu() - dev) / wall
        tg.cancel_scope.cancel()
    assert client_pct < 20, f"idle client uses {client_pct:.1f}% of a core"
    return {"client_cpu_pct": round(client_pct, 1), "device_cpu_pct": round(device_pct, 1)}


# -- main ----------------------------------------------------------------------------------


async def _run(name: str, driver: str) -> dict[str, Any] | None:
    env = Env(driver)
    try:
        with anyio.fail_after(float(os.environ.get("AIOTMC_UMOCKDEV_TIMEOUT", "30"))):
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
