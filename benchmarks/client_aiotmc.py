"""aiotmc as users write it: ``aiotmc.open``, ``query``, ``query_block``, task groups.

One trial is one ``anyio.run`` (fresh event loop); opening connections is not timed.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from functools import partial
from typing import Any

import anyio

import aiotmc

from .common import NotAvailable, Result, arepeat, atime_calls, median, result
from .figures import (
    BLOCK_QUERY,
    IDN,
    MB,
    MEAS,
    UPLOAD,
    UPLOAD_CHECK,
    pattern_ok,
    resource,
    reused_buffer,
)

__all__ = ["AiotmcClient"]

_BACKENDS = {
    "aiotmc-asyncio": ("asyncio", {}),
    "aiotmc-trio": ("trio", {}),
    "aiotmc-uvloop": ("asyncio", {"use_uvloop": True}),
}

Trial = Callable[[dict[str, Any]], Awaitable[Result]]


class AiotmcClient:
    """Runs each trial on the backend named by the client (asyncio, trio, uvloop)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.backend, self.options = _BACKENDS[name]
        if name == "aiotmc-trio":
            import trio  # noqa: F401 - fail at start-up, not in the first trial
        if name == "aiotmc-uvloop":
            import uvloop  # noqa: F401

    def versions(self) -> dict[str, str]:
        """Library versions for the report."""
        import importlib.metadata as md

        out = {"aiotmc": aiotmc.__version__, "anyio": md.version("anyio")}
        if self.backend == "trio":
            out["trio"] = md.version("trio")
        if self.options.get("use_uvloop"):
            out["uvloop"] = md.version("uvloop")
        return out

    def run(self, kind: str, params: dict[str, Any]) -> Result:
        """Run one trial of ``kind``."""
        trial: Trial | None = TRIALS.get(kind)
        if trial is None:
            raise NotAvailable(f"no aiotmc trial {kind!r}")
        return anyio.run(partial(trial, params), backend=self.backend, backend_options=self.options)


async def _rtt_loop(inst: aiotmc.Instrument, queries: int, warmup: int) -> Result:
    rtt_us, cpu_us = await atime_calls(partial(inst.query, IDN), queries, warmup)
    return result(rtt_us=rtt_us, cpu_us=cpu_us)


async def rtt(p: dict[str, Any]) -> Result:
    """``*IDN?`` round trip and client CPU per query; then the same through the transport's
    ``exchange`` alone (what ``Instrument.query`` calls), to show the Instrument layer's
    share."""
    async with aiotmc.open(resource(p["scope"])) as inst:
        out = await _rtt_loop(inst, p["queries"], p["warmup"])
        exchange = partial(
            inst.transport.exchange, (IDN + "\n").encode(), max_size=inst.max_message_size
        )
        rtt_us, cpu_us = await atime_calls(exchange, p["queries"], p["warmup"])
        out["metrics"]["rtt_exchange_us"] = rtt_us
        out["metrics"]["cpu_exchange_us"] = cpu_us
        return out


async def fanout(p: dict[str, Any]) -> Result:
    """One query on each of N instruments, concurrently in a task group."""
    ports = p["dmm"][: p["instruments"]]
    async with AsyncExitStack() as stack:
        insts = [await stack.enter_async_context(aiotmc.open(resource(port))) for port in ports]

        async def one(inst: aiotmc.Instrument) -> None:
            float(await inst.query(MEAS))

        async def everyone() -> None:
            async with anyio.create_task_group() as tg:
                for inst in insts:
                    tg.start_soon(one, inst)

        await everyone()  # warm-up
        times = await arepeat(everyone, p["reps"])
    return result(ms=median(times) * 1e3)


async def block(p: dict[str, Any]) -> Result:
    """Read a block of ``size`` bytes into a new buffer or into one reused buffer."""
    size: int = p["size"]
    command = BLOCK_QUERY.format(size=size)
    async with aiotmc.open(resource(p["scope"]), max_message_size=size + 64) as inst:
        if not pattern_ok(await inst.query_block(command), size):
            raise RuntimeError("block payload does not match the test pattern")
        if p["reuse"]:
            buffer = reused_buffer(size)

            async def read() -> None:
                await inst.query_block(command, into=buffer)

        else:

            async def read() -> None:
                await inst.query_block(command)

        times = await arepeat(read, p["reps"])
    return result(mb_s=size / MB / median(times))


async def upload(p: dict[str, Any]) -> Result:
    """Upload a block with ``write_binary_values`` and wait for the device to confirm it."""
    import numpy

    size: int = p["size"]
    payload = numpy.resize(numpy.arange(256, dtype=numpy.uint8), size)
    async with aiotmc.open(resource(p["scope"])) as inst:

        async def send() -> str:
            await inst.write_binary_values(UPLOAD, payload, datatype="B")
            return await inst.query(UPLOAD_CHECK)

        if not (await send()).startswith(f"{size},"):
            raise RuntimeError("upload not confirmed by the device")
        times = await arepeat(send, p["reps"])
    return result(mb_s=size / MB / median(times))


async def concurrent(p: dict[str, Any]) -> Result:
    """``tasks`` tasks share one Instrument, each running ``per_task`` queries; then one
    task runs as many queries alone on the same connection (the uncontended figure)."""
    tasks, per_task = p["tasks"], p["per_task"]
    total = tasks * per_task
    async with aiotmc.open(resource(p["scope"])) as inst:

        async def worker() -> None:
            for _ in range(per_task):
                await inst.query(IDN)

        async def everyone() -> None:
            async with anyio.create_task_group() as tg:
                for _ in range(tasks):
                    tg.start_soon(worker)

        async def alone() -> None:
            for _ in range(total):
                await inst.query(IDN)

        await everyone()
        contended = median(await arepeat(everyone, 3)) / total * 1e6
        await alone()
        uncontended = median(await arepeat(alone, 3)) / total * 1e6
    return result(
        us_per_query=contended, uncontended_us=uncontended, contended_x=contended / uncontended
    )


async def srq(p: dict[str, Any]) -> Result:
    """In-process SIM path: service request published -> subscriber task wakes."""
    from aiotmc.sim.devices import create_device

    device = create_device("scope")
    events: int = p["events"]
    latencies: list[float] = []
    async with aiotmc.open("SIM::scope::bench", device=device) as inst:
        await inst.write("*CLS;*SRE 4")  # EAV (error queue not empty) requests service
        async with inst.service_requests(buffer=4) as stream:
            parked = anyio.Event()

            async def publisher() -> None:
                nonlocal parked
                for _ in range(events):
                    with anyio.fail_after(5):
                        await parked.wait()
                    parked = anyio.Event()
                    device.write(b"*CLS\n")  # RQS falls: the next error is a new edge
                    device.push_error(-300, "benchmark")

            async with anyio.create_task_group() as tg:
                tg.start_soon(publisher)
                for _ in range(events):
                    parked.set()
                    with anyio.fail_after(5):
                        event = await stream.receive()
                    latencies.append(time.monotonic() - event.monotonic)
    return result(srq_us=median(latencies) * 1e6)


def _open_usb() -> AbstractAsyncContextManager[Any]:
    """FakeUsbPort(UsbtmcFunction(scope)) behind the real UsbtmcTransport."""
    try:
        from aiotmc.sim.devices import create_device
        from aiotmc.sim.fake_port import FakeUsbPort
        from aiotmc.sim.usbtmc_device import UsbtmcFunction
        from aiotmc.transports.usbtmc import open_usbtmc_transport
    except ImportError as exc:
        raise NotAvailable(f"USB in-process path not importable yet ({exc.name})") from None
    port = FakeUsbPort(UsbtmcFunction(create_device("scope")))
    return open_usbtmc_transport(port, resource="USB0::0x2A8D::0x0001::BENCH::INSTR")


async def _block_rate(inst: aiotmc.Instrument, command: str, size: int, reps: int) -> Result:
    """Check the pattern once, then time block reads into one reused buffer: MB/s and the
    client's CPU per MB."""
    if not pattern_ok(await inst.query_block(command), size):
        raise RuntimeError("block payload does not match the test pattern")
    buffer = reused_buffer(size)

    async def read() -> None:
        await inst.query_block(command, into=buffer)

    cpu0 = time.process_time()
    times = await arepeat(read, reps)
    cpu = time.process_time() - cpu0
    mbytes = size / MB
    return result(mb_s=mbytes / median(times), cpu_ms_per_mb=cpu / (mbytes * len(times)) * 1e3)


async def usb_block(p: dict[str, Any]) -> Result:
    """Block read through FakeUsbPort + UsbtmcFunction + UsbtmcTransport."""
    size: int = p["size"]
    async with _open_usb() as transport:
        inst = aiotmc.Instrument(transport, max_message_size=size + 64)
        return await _block_rate(inst, BLOCK_QUERY.format(size=size), size, p["reps"])


async def usb_rtt(p: dict[str, Any]) -> Result:
    """``*IDN?`` round trip through the in-process USB port."""
    async with _open_usb() as transport:
        return await _rtt_loop(aiotmc.Instrument(transport), p["queries"], p["warmup"])


async def umockdev(p: dict[str, Any]) -> Result:
    """``aiotmc.open`` of the umockdev-emulated scope (real libusb below it): ``*IDN?``
    round trip, then a block into a reused buffer with the client's CPU per MB.

    Runs only in a worker started with ``LD_PRELOAD=libumockdev-preload.so.0`` and
    ``UMOCKDEV_DIR`` (see :mod:`benchmarks.usbbed`).
    """
    size: int = p["size"]
    async with aiotmc.open(p["usb_resource"], max_message_size=size + 64, timeout=60) as inst:
        rtt_us, _ = await atime_calls(partial(inst.query, IDN), p["queries"], p["warmup"])
        out = await _block_rate(inst, BLOCK_QUERY.format(size=size), size, p["reps"])
        port = getattr(inst.transport, "_port", None)  # UsbtmcTransport's Libusb1Port
        driver = getattr(port, "driver_name", None)
    out["metrics"]["rtt_us"] = rtt_us
    if driver:
        out["notes"].append(f"libusb driver: {driver}")
    return out


TRIALS: dict[str, Trial] = {
    "rtt": rtt,
    "fanout": fanout,
    "block": block,
    "upload": upload,
    "concurrent": concurrent,
    "srq": srq,
    "usb_block": usb_block,
    "usb_rtt": usb_rtt,
    "umockdev": umockdev,
}
