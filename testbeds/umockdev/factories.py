"""Device factories for the umockdev process (``--devices '[{"factory": ...}]'``)."""

from __future__ import annotations

from typing import Any

from aiotmc.sim.usb_function import UsbFunction

__all__ = ["usbtmc"]


def usbtmc(config: dict[str, Any]) -> UsbFunction:
    """A USBTMC/USB488 instrument around a simulated model (the default factory).

    ``config`` keys: ``model`` (``"dmm"``, ``"psu"``...; default ``"dmm"``),
    ``model_options`` (keyword arguments for ``create_device``), ``quirks`` (a dict of
    :class:`~aiotmc.protocol.quirks.Quirks` fields); every other key is a keyword argument
    of :class:`~aiotmc.sim.usbtmc_device.UsbtmcFunction` (``vid``, ``pid``, ``serial``,
    ``usb488``, ``interrupt_endpoint``, ``max_packet_size``...).
    """
    from aiotmc.protocol.quirks import Quirks
    from aiotmc.sim.devices import create_device
    from aiotmc.sim.usbtmc_device import UsbtmcFunction

    options = dict(config)
    model = create_device(options.pop("model", "dmm"), **options.pop("model_options", {}))
    quirks = options.pop("quirks", None)
    if quirks is not None:
        options["quirks"] = Quirks(**quirks)
    function: UsbFunction = UsbtmcFunction(model, **options)
    return function
