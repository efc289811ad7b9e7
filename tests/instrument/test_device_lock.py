"""Locks across clients on Instrument: lock_excl / unlock / lock_context (VXI-11, HiSLIP).

Two clients of one simulated instrument: while one holds the lock the other is refused
(ResourceBusyError after its lock_timeout), and gets it once released. Elsewhere the
methods raise UnsupportedOperation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

import aiotmc
from aiotmc.sim.devices import create_device
from aiotmc.sim.hislip_server import HislipServer
from aiotmc.sim.vxi11_server import Vxi11Server


@asynccontextmanager
async def served(kind: str) -> AsyncIterator[str]:
    device = create_device("dmm")
    if kind == "vxi11":
        async with Vxi11Server(device, portmapper_port=0) as vxi11:
            yield vxi11.resource()
    else:
        async with HislipServer(device, strict=True) as hislip:
            yield hislip.resource


@pytest.mark.parametrize("kind", ["vxi11", "hislip"])
async def test_lock_excl_keeps_other_clients_out(kind: str) -> None:
    async with (
        served(kind) as resource,
        aiotmc.open(resource, timeout=5) as a,
        aiotmc.open(resource, timeout=5) as b,
    ):
        assert a.transport.info.capabilities.locking
        await a.lock_excl()
        with pytest.raises(aiotmc.ResourceBusyError):
            await b.lock_excl(0.0)
        await a.unlock()
        async with b.lock_context(1.0):
            assert "SIM-DMM" in await b.query("*IDN?")
            with pytest.raises(aiotmc.ResourceBusyError):
                await a.lock_excl(0.0)
        await a.lock_excl(1.0)  # b's block released it
        await a.unlock()
        assert "SIM-DMM" in await a.query("*IDN?")
        with pytest.raises(ValueError, match="lock_timeout"):
            await a.lock_excl(-1)


async def test_links_without_locking_say_so() -> None:
    async with aiotmc.open("SIM::dmm::nolock", device=create_device("dmm")) as inst:
        for call in (inst.lock_excl, inst.unlock):
            with pytest.raises(aiotmc.UnsupportedOperation, match="locking across clients"):
                await call()
