"""Shared fixtures: every async test runs on asyncio and on trio.

``open_device(device, via)`` opens a simulated instrument through one of the real
attachments: ``"sim"`` (in-process), ``"tcp"`` (SimServer on 127.0.0.1, real socket) and
``"usb"`` (USBTMC emulator behind the in-process USB port, real UsbtmcTransport). The
Instrument tests run once per attachment: one suite, every transport. ``open_link`` does
the same for the conformance kit (``aiotmc.testing``); ``fake_usb_bus`` lets
``aiotmc.open("USB0::...")`` reach emulated devices through the in-process port.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from typing import Any
from unittest import mock

import pytest

import aiotmc
from aiotmc.sim.device import SimDevice
from aiotmc.sim.devices import create_device
from aiotmc.transports.base import MessageTransport

TRANSPORTS = ["sim", "tcp", "usb"]

# No test sends DNS-SD multicast to a real network: LAN browsing stays off (CLI
# subprocesses inherit this) except inside a network namespace a test makes itself.
os.environ["AIOTMC_MDNS_SECONDS"] = "0"


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


@contextmanager
def fake_usb_bus(devices: Mapping[str, SimDevice]) -> Iterator[dict[str, str]]:
    """``aiotmc.open("USB0::0x0957::0x1796::<name>::INSTR")`` reaches ``devices[name]``
    behind a UsbtmcFunction and the in-process FakeUsbPort instead of libusb.

    Everything above the port is the real path (resource parsing, ``open_usb_resource``,
    clear on open, reopen). Yields the resource name of each device.
    """
    from aiotmc.sim.fake_port import FakeUsbPort
    from aiotmc.sim.usbtmc_device import UsbtmcFunction
    from aiotmc.transports.usbtmc import open_usb_resource

    functions = {name: UsbtmcFunction(dev, serial=name) for name, dev in devices.items()}

    @asynccontextmanager
    async def fake_port(resource: Any, **_: Any) -> AsyncIterator[FakeUsbPort]:
        function = functions.get(resource.serial)
        if function is None:
            raise aiotmc.ResourceNotFoundError(f"no emulated device {resource.serial!r}")
        port = FakeUsbPort(function)
        try:
            yield port
        finally:
            await port.aclose()

    scope = inspect.unwrap(open_usb_resource).__globals__  # where it finds its port opener
    assert "_libusb_port" in scope, "open_usb_resource no longer opens _libusb_port"
    with mock.patch.dict(scope, {"_libusb_port": fake_port}):
        yield {name: f"USB0::0x0957::0x1796::{name}::INSTR" for name in devices}


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
