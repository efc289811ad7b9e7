"""A serial Prologix/AR488 adapter through the pyserial backend (what Windows uses for a
GPIB-USB adapter's COM port), on Linux against the adapter simulator on a pty."""

from __future__ import annotations

import anyio
import pytest

import aiotmc
from aiotmc.sim.devices import create_device
from aiotmc.sim.prologix_server import PrologixServer
from aiotmc.testing import CHECKS, KitOptions, check_transport, conformance_device
from aiotmc.transports import serial as serial_transport
from aiotmc.transports.prologix import PrologixTransport
from aiotmc.transports.serial._pyserial import INSTALL_HINT, ThreadChannel

pytest.importorskip("serial")

PYSERIAL = {"serial_backend": "pyserial"}
#: worker-thread hops at every wait: smaller cancellation sweeps than the termios kit's
KIT = KitOptions(block_sizes=(1, 4096, 100_000), cancel_block_size=20_000, max_steps=150)


def _channel(inst: aiotmc.Instrument) -> object:
    transport = inst.transport
    assert isinstance(transport, PrologixTransport)
    return transport._adapter.stream.channel


async def test_conformance_over_a_pyserial_adapter() -> None:
    devices = {12: conformance_device()}
    async with PrologixServer(devices, pty=True) as server:
        with anyio.fail_after(150):
            report = await check_transport(
                lambda: aiotmc.open_transport(server.resource(12), **PYSERIAL), options=KIT
            )
    print({name: str(stats) for name, stats in report.items()})
    assert list(report) == list(CHECKS)
    assert report["cancellation"].cancelled > 20


async def test_two_instruments_share_one_pyserial_line() -> None:
    devices = {5: create_device("dmm"), 22: create_device("psu")}
    async with (
        PrologixServer(devices, pty=True) as server,
        aiotmc.open(server.resource(5), timeout=5, **PYSERIAL) as dmm,
        aiotmc.open(server.resource(22), timeout=5, **PYSERIAL) as psu,
    ):
        async with anyio.create_task_group() as tg:
            for inst in (dmm, psu, dmm, psu):
                tg.start_soon(inst.identify)
        assert isinstance(_channel(dmm), ThreadChannel)  # the line opens on first use
        assert (await dmm.identify()).model != (await psu.identify()).model
        assert int(await dmm.read_stb()) >= 0
        # A query cancelled mid-way leaves the next answer its own.
        with anyio.move_on_after(0):
            await dmm.query("*IDN?")
        assert (await psu.identify()).model == (await psu.identify()).model
        assert "," in await dmm.query("*IDN?")


async def test_gpib_board_on_a_pyserial_adapter() -> None:
    async with (
        PrologixServer({3: conformance_device()}, pty=True) as server,
        aiotmc.open("GPIB0::3::INSTR", adapter=server.interface, timeout=5, **PYSERIAL) as inst,
    ):
        assert await inst.query("ECHO? gpib over pyserial") == "gpib over pyserial"
        assert isinstance(_channel(inst), ThreadChannel)


async def test_a_bad_backend_is_refused_before_any_io() -> None:
    with pytest.raises(ValueError, match="serial_backend must be one of"):
        async with aiotmc.open("PRLGX-ASRL0::/dev/null::5::INSTR", serial_backend="termios"):
            pass


async def test_missing_pyserial_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serial_transport, "_pyserial_unavailable", lambda: INSTALL_HINT)
    with pytest.raises(ImportError, match=r"aiotmc\[serial\]") as caught:
        async with aiotmc.open("PRLGX-ASRL0::/dev/null::5::INSTR", **PYSERIAL):
            pass
    assert "PRLGX-ASRL0::/dev/null::5::INSTR" in str(caught.value)
