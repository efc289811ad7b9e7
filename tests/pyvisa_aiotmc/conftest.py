"""Every simulated kind aiotmc opens, served once per module for PyVISA's ``@aiotmc``
backend: ``SIM::``, a raw TCP socket, VXI-11, HiSLIP, a serial pty, a Prologix adapter
over TCP and USBTMC behind the in-process USB port. The servers run in aiotmc.sync's event
loop thread (the one the backend's sessions use)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from aiotmc.sim.devices import create_device
from aiotmc.sim.hislip_server import HislipServer
from aiotmc.sim.prologix_server import PrologixServer
from aiotmc.sim.pty_server import PtyServer
from aiotmc.sim.server import SimServer
from aiotmc.sim.vxi11_server import Vxi11Server
from aiotmc.sync._portal import portal_for
from tests.conftest import fake_usb_bus

pyvisa = pytest.importorskip("pyvisa")

KINDS = ["sim", "socket", "vxi11", "hislip", "serial", "prologix", "usb"]


@pytest.fixture(scope="module")
def resources() -> Iterator[dict[str, str]]:
    """kind -> the resource name of a simulated scope reached that way."""
    portal = portal_for("asyncio")
    with ExitStack() as stack:
        hold = portal.hold
        names = {"sim": "SIM::scope::pyvisa-backend"}
        names["socket"] = stack.enter_context(hold(SimServer(create_device("scope")))).resource
        vxi = stack.enter_context(hold(Vxi11Server(create_device("scope"))))
        names["vxi11"] = vxi.resource()
        names["hislip"] = stack.enter_context(
            hold(HislipServer(create_device("scope"), strict=True))
        ).resource
        names["serial"] = stack.enter_context(hold(PtyServer(create_device("scope")))).resource
        prologix = stack.enter_context(hold(PrologixServer({5: create_device("scope")})))
        names["prologix"] = prologix.resource(5)
        names["usb"] = stack.enter_context(fake_usb_bus({"PV1": create_device("scope")}))["PV1"]
        yield names


@pytest.fixture(scope="module")
def rm() -> Iterator[object]:
    """PyVISA's resource manager on the aiotmc backend."""
    manager = pyvisa.ResourceManager("@aiotmc")
    yield manager
    manager.close()


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)
