"""The usbredir protocol adapter: an emulated USB device plugged into QEMU's ``usb-redir``.

* :mod:`.protocol`: :class:`UsbredirDevice`, the sans-IO usb-host end of the spice
  usbredir protocol, serving a :class:`~aiotmc.sim.usb_function.UsbFunction`.
* :mod:`.runner`: :class:`UsbredirRunner`, a thread that connects devices to QEMU
  chardev sockets (connect = plug, close = unplug).

Stdlib only. ``python -m testbeds.usbredir --connect PATH`` serves one instrument.
"""

from __future__ import annotations

from .protocol import PROTOCOL_VERSION, UsbredirDevice, UsbredirError, parse_descriptors
from .runner import Address, UsbredirRunner

__all__ = [
    "PROTOCOL_VERSION",
    "Address",
    "UsbredirDevice",
    "UsbredirError",
    "UsbredirRunner",
    "parse_descriptors",
]
