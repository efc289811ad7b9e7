"""Shared fixtures: every async test runs on asyncio and on trio.

``open_sim_instrument(model, via)`` opens a simulated instrument through one of the real
attachments: ``"sim"`` (in-process), ``"tcp"`` (SimServer on 127.0.0.1, real socket) and
``"usb"`` (USBTMC emulator behind the in-process USB port, real UsbtmcTransport). The
Instrument tests run once per attachment: one suite, every transport.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest

import aiotmc
from aiotmc.sim.device import SimDevice
from aiotmc.sim.devices import create_device
from aiotmc.transports.base import MessageTransport

TRANSPORTS = ["sim", "tcp", "usb"]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@asynccontextmanager
async def open_device(
    device: SimDevice, via: str, **options: Any
) -> AsyncIterator[aiotmc.Instrument]:
    """Open ``device`` through the attachment named ``via``."""
    if via == "sim":
        async with aiotmc.open("SIM::test::fixture", device=device, **options) as inst:
            yield inst
    elif via == "tcp":
        from aiotmc.sim.server import SimServer

        async with SimServer(device) as server, aiotmc.open(server.resource, **options) as inst:
            inst.server = server  # type: ignore[attr-defined]
            yield inst
    elif via == "usb":
        from aiotmc.sim.fake_port import FakeUsbPort
        from aiotmc.sim.usbtmc_device import UsbtmcFunction
        from aiotmc.transports.usbtmc import open_usbtmc_transport

        function = UsbtmcFunction(device)
        port = FakeUsbPort(function)
        async with open_usbtmc_transport(port, resource="USB0::0x0957::0x1796::MY123::INSTR") as t:
            inst = aiotmc.Instrument(t, **options)
            inst.function = function  # type: ignore[attr-defined]
            inst.port = port  # type: ignore[attr-defined]
            try:
                yield inst
            finally:
                await inst.aclose()
    else:  # pragma: no cover
        raise ValueError(via)


LinkOpener = Callable[[], AbstractAsyncContextManager[MessageTransport]]


@asynccontextmanager
async def open_link(device: SimDevice, via: str) -> AsyncIterator[LinkOpener]:
    """A function opening new links to ``device`` through ``via`` (the conformance kit's
    ``open_link``); the TCP server runs while the block does."""
    if via == "sim":
        yield lambda: aiotmc.open_transport("SIM::kit::kit", device=device)
    elif via == "tcp":
        from aiotmc.sim.server import SimServer

        async with SimServer(device) as server:
            yield lambda: aiotmc.open_transport(server.resource)
    elif via == "usb":
        from aiotmc.sim.fake_port import FakeUsbPort
        from aiotmc.sim.usbtmc_device import UsbtmcFunction
        from aiotmc.transports.usbtmc import open_usbtmc_transport

        function = UsbtmcFunction(device)
        resource = "USB0::0x0957::0x1796::MY123::INSTR"
        yield lambda: open_usbtmc_transport(FakeUsbPort(function), resource=resource)
    else:  # pragma: no cover
        raise ValueError(via)


OpenSim = Callable[..., AbstractAsyncContextManager[aiotmc.Instrument]]


@pytest.fixture(params=TRANSPORTS)
def via(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def open_sim(via: str) -> OpenSim:
    """``async with open_sim("dmm", latency=0.0) as inst`` through the current transport."""

    def opener(model: str = "dmm", *, device: SimDevice | None = None, **options: Any):
        return open_device(device or create_device(model), via, **options)

    opener.via = via  # type: ignore[attr-defined]
    return opener
