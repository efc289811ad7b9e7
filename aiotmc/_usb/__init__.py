"""Private USB layer: the only package that imports usb1 (python-libusb1).

* :func:`open_usb_port` / :class:`Libusb1Port`: a claimed USBTMC interface implementing
  :class:`~aiotmc._usb.port.UsbPort` with libusb async transfers.
* :class:`UsbContext`: one libusb context plus its event driver (``"thread"``,
  ``"pollfd"`` or ``"auto"``, see :mod:`.driver`), shareable between ports.
* :func:`list_usbtmc_devices` / :func:`alist_usbtmc_devices`: discovery.

Names are imported lazily so that ``aiotmc._usb.port`` stays cheap to import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .context import UsbContext
    from .discovery import UsbResourceInfo, alist_usbtmc_devices, list_usbtmc_devices
    from .errors import AmbiguousDeviceError, LibusbNotFoundError
    from .libusb_port import Libusb1Port, open_usb_port

__all__ = [
    "AmbiguousDeviceError",
    "Libusb1Port",
    "LibusbNotFoundError",
    "UsbContext",
    "UsbResourceInfo",
    "alist_usbtmc_devices",
    "list_usbtmc_devices",
    "open_usb_port",
]

_LAZY: dict[str, str] = {
    "AmbiguousDeviceError": ".errors",
    "Libusb1Port": ".libusb_port",
    "LibusbNotFoundError": ".errors",
    "UsbContext": ".context",
    "UsbResourceInfo": ".discovery",
    "alist_usbtmc_devices": ".discovery",
    "list_usbtmc_devices": ".discovery",
    "open_usb_port": ".libusb_port",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
