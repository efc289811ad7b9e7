"""linux-gpib through ctypes against a stub libgpib built at test time (``cc``): the
conformance kit, service requests, abandoned calls, typed errors, the unavailable reason."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

import aiotmc
from aiotmc.registry import registry
from aiotmc.sim.devices import create_device
from aiotmc.testing import CHECKS, check_transport, conformance_device
from aiotmc.transports.linux_gpib import LinuxGpibTransport, library_problem, timeout_code

from .stub_bus import StubBus

pytestmark = pytest.mark.timeout(120)


def test_timeout_codes() -> None:
    assert timeout_code(0) == 1  # never TNONE (wait forever)
    assert timeout_code(0.1) == 9  # T100ms
    assert timeout_code(0.11) == 10  # T300ms
    assert timeout_code(5000) == 17  # T1000s


async def test_conformance_over_linux_gpib(stub_library: Path, bus_socket: Path) -> None:
    devices = {5: create_device("dmm"), 12: conformance_device()}
    async with StubBus(devices, bus_socket):
        with anyio.fail_after(100):
            report = await check_transport(
                lambda: aiotmc.open_transport("GPIB0::12::INSTR", libgpib=str(stub_library))
            )
    assert list(report) == list(CHECKS)
    assert report["cancellation"].cancelled > 20, report["cancellation"]


async def test_query_srq_and_bus_operations(stub_library: Path, bus_socket: Path) -> None:
    devices = {5: create_device("dmm"), 12: conformance_device()}
    async with (
        StubBus(devices, bus_socket) as bus,
        aiotmc.open("GPIB0::5::INSTR", libgpib=str(stub_library)) as dmm,
        aiotmc.open("GPIB0::12::INSTR", libgpib=str(stub_library)) as kit,
    ):
        assert isinstance(kit.transport, LinuxGpibTransport)
        assert await dmm.query("*IDN?") == devices[5].identity
        await kit.write("ECHO? waiting")
        assert await kit.read_stb() & 0x10  # MAV through ibrsp
        await kit.clear()
        assert not await kit.read_stb() & 0x10
        await kit.trigger()
        await kit.control_ren(aiotmc.RenMode.DEASSERT_GTL)
        assert 12 in bus.local
        await kit.write("*CLS;*ESE 1;*SRE 32")
        async with kit.service_requests() as events, dmm.service_requests() as others:
            await kit.write("*OPC")
            with anyio.fail_after(10):
                event = await events.receive()
            assert event.status & 0x40
            with pytest.raises(anyio.WouldBlock):
                others.receive_nowait()
        assert await kit.query("ECHO? after") == "after"


async def test_abandoned_read_then_own_answer(stub_library: Path, bus_socket: Path) -> None:
    """A cancelled ibrd goes on in its thread; the next exchange waits for it, clears the
    device and gets its own answer."""
    async with (
        StubBus({12: conformance_device()}, bus_socket) as bus,
        aiotmc.open_transport("GPIB0::12::INSTR", libgpib=str(stub_library)) as link,
    ):
        assert isinstance(link, LinuxGpibTransport)
        with anyio.move_on_after(0.2) as scope:
            await link.exchange(b"SLOW? 0.5,late\n", max_size=100)
        assert scope.cancelled_caught
        assert link.abandoned_calls == 1
        assert await link.exchange(b"ECHO? mine\n", max_size=100) == b"mine\n"
        assert ("C", 12) in bus.requests  # the device was cleared first
        with pytest.raises(aiotmc.ReadTimeout):
            await link.exchange(
                b"SLOW? 1e6,never\n", max_size=100, deadline=anyio.current_time() + 0.3
            )
        assert await link.exchange(b"ECHO? again\n", max_size=100) == b"again\n"


async def test_library_from_the_environment_and_errors(
    stub_library: Path, bus_socket: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AIOTMC_LIBGPIB names the library; no listener and no such board are typed."""
    monkeypatch.setenv("AIOTMC_LIBGPIB", str(stub_library))
    monkeypatch.delenv("AIOTMC_GPIB0", raising=False)
    async with StubBus({12: conformance_device()}, bus_socket):
        async with aiotmc.open("GPIB0::12::INSTR") as inst:
            assert inst.transport.info.details["library"] == str(stub_library)
            assert await inst.query("ECHO? env") == "env"
        async with aiotmc.open("GPIB0::7::INSTR") as nobody:
            with pytest.raises(aiotmc.ConnectionLostError, match="no listener"):
                await nobody.write("*IDN?")
        with pytest.raises(aiotmc.ResourceNotFoundError, match="no such GPIB board"):
            async with aiotmc.open("GPIB3::12::INSTR"):
                pass  # pragma: no cover


async def test_unavailable_reason(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = str(tmp_path / "libgpib.so.0")
    monkeypatch.setenv("AIOTMC_LIBGPIB", missing)
    for key in [k for k in __import__("os").environ if k.startswith("AIOTMC_GPIB")]:
        if key[len("AIOTMC_GPIB") :].isdigit():
            monkeypatch.delenv(key)
    problem = library_problem()
    assert problem is not None and "AIOTMC_LIBGPIB" in problem and missing in problem
    (row,) = [row for row in registry.status() if row.kind == "gpib"]
    assert not row.available and "no GPIB controller" in (row.reason or "")
    with pytest.raises(aiotmc.UnsupportedOperation, match="not attached to an adapter"):
        async with aiotmc.open("GPIB0::12::INSTR"):
            pass  # pragma: no cover


async def test_cancellation_storm_over_linux_gpib(stub_library: Path, bus_socket: Path) -> None:
    """Operations stopped at random points (abandoned library calls): every answer is its
    own afterwards, no typed error leaks."""
    import random
    from contextlib import AsyncExitStack

    from ...hardening.storm import Storm, iterations

    device = conformance_device()
    async with StubBus({12: device}, bus_socket):

        async def opener(stack: AsyncExitStack) -> aiotmc.Instrument:
            return await stack.enter_async_context(
                aiotmc.open("GPIB0::12::INSTR", libgpib=str(stub_library), timeout=5)
            )

        storm = Storm(
            random.Random(20261206),
            opener,
            block_sizes=(64, 20_000),
            upload_sizes=(1000, 20_000),
            latency=lambda delay: device.delay_next_responses(delay),
        )
        with anyio.fail_after(90):
            report = await storm.run(iterations(150))
    assert report.outcomes["cancelled"] + report.outcomes["fail_after"] > 10
    assert not report.typed_errors, report.typed_errors
