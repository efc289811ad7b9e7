"""Open a simulated instrument through any attachment: in-process, TCP or emulated USB.

What the pytest plugin's fixtures use; usable without pytest too::

    async with open_sim_instrument("psu", via="tcp") as inst:
        await inst.write("VOLT 5")
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from ..instrument import Instrument
    from ..sim.device import SimDevice

__all__ = ["ATTACHMENTS", "open_sim_instrument", "sim_device"]

ATTACHMENTS: Final = ("sim", "tcp", "usb")
"""``via=`` values: in-process ``SIM::``, ``SimServer`` on 127.0.0.1, USBTMC over the
in-process USB port (``FakeUsbPort``; no libusb needed)."""


def sim_device(model: str | SimDevice, **kwargs: Any) -> SimDevice:
    """``model`` itself if it is a device, else a new ``create_device(model, **kwargs)``."""
    from ..sim.device import SimDevice

    if isinstance(model, SimDevice):
        if kwargs:
            raise TypeError("device options given with a ready device")
        return model
    from ..sim.devices import create_device

    return create_device(model, **kwargs)


@asynccontextmanager
async def open_sim_instrument(
    model: str | SimDevice = "dmm", *, via: str = "sim", **options: Any
) -> AsyncIterator[Instrument]:
    """An :class:`~aiotmc.Instrument` on a simulated instrument through ``via``.

    ``model``: a model name for a new device (never the process-wide ``SIM::`` ones) or
    your own :class:`~aiotmc.sim.SimDevice`. ``options`` go to ``aiotmc.open``
    (``timeout=``, ``read_termination=``...); for ``"usb"`` to ``Instrument``.
    """
    import aiotmc

    device = sim_device(model)
    if via == "sim":
        async with aiotmc.open("SIM::fixture::fixture", device=device, **options) as inst:
            yield inst
    elif via == "tcp":
        from ..sim.server import SimServer

        async with SimServer(device) as server, aiotmc.open(server.resource, **options) as inst:
            yield inst
    elif via == "usb":
        from ..sim.fake_port import FakeUsbPort
        from ..sim.usbtmc_device import UsbtmcFunction
        from ..transports.usbtmc import open_usbtmc_transport

        function = UsbtmcFunction(device, serial="SIM0001")
        resource = f"USB0::{function.vid:#06x}::{function.pid:#06x}::SIM0001::INSTR"
        async with (
            open_usbtmc_transport(FakeUsbPort(function), resource=resource) as transport,
            aiotmc.Instrument(transport, **options) as inst,
        ):
            yield inst
    else:
        raise ValueError(f"via must be one of {ATTACHMENTS}, not {via!r}")
