"""Listing USBTMC devices: a private libusb context, synchronous, in a worker thread.

String descriptors need (synchronous) control transfers, so enumeration uses its own
libusb context that is created and closed per call: it never shares event handling with
the contexts of open instruments and only opens devices (no claims), which does not
disturb a program that has them claimed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial

import anyio

from .context import LibusbContext, LibusbDevice
from .descriptors import find_usbtmc_interfaces
from .errors import LibusbError, usb_error_code

__all__ = ["UsbResourceInfo", "alist_usbtmc_devices", "list_usbtmc_devices", "visa_usb_name"]

logger = logging.getLogger(__name__)


def visa_usb_name(
    vid: int, pid: int, serial: str | None, interface: int = 0, board: int = 0
) -> str:
    """``USB<board>::0x<VID>::0x<PID>::<serial>[::<interface>]::INSTR``.

    The interface number is included only when it is not 0 (as VISA libraries print it).
    Without a serial number the interface cannot be named (the grammar would be
    ambiguous): such a device is opened by VID:PID alone. The same text as
    :class:`aiotmc.resources.UsbInstr` prints (a test keeps them in step); formatted here
    because this layer imports nothing above it, and a serial number the grammar cannot
    parse (``"S N"``) is still named.
    """
    parts = [f"USB{board}", f"0x{vid:04X}", f"0x{pid:04X}"]
    if serial:
        parts.append(serial)
        if interface:
            parts.append(str(interface))
    parts.append("INSTR")
    return "::".join(parts)


@dataclass(frozen=True, slots=True, kw_only=True)
class UsbResourceInfo:
    """One USBTMC interface of an attached device."""

    vid: int
    pid: int
    serial: str | None
    interface: int
    manufacturer: str | None = None
    product: str | None = None
    bus: int = 0
    address: int = 0
    usb488: bool = False
    accessible: bool = True  #: False when the device could not be opened (permissions)

    @property
    def visa_name(self) -> str:
        """The VISA resource name, e.g. ``USB0::0x0957::0x1796::MY123::INSTR``."""
        return visa_usb_name(self.vid, self.pid, self.serial, self.interface)


def _strings(device: LibusbDevice) -> tuple[str | None, str | None, str | None, bool]:
    try:
        handle = device.open()
    except Exception as exc:
        code = usb_error_code(exc)
        if code is None:
            raise
        if code == LibusbError.ACCESS:
            logger.debug("no access to %03d/%03d", device.bus, device.address)
        else:
            logger.debug("cannot open %03d/%03d: %s", device.bus, device.address, code)
        return None, None, None, False
    try:
        values: list[str | None] = []
        for index in (device.manufacturer_index, device.product_index, device.serial_index):
            try:
                values.append(handle.string(index))
            except Exception as exc:
                if usb_error_code(exc) is None and not isinstance(exc, ValueError):
                    raise
                values.append(None)
        return values[0], values[1], values[2], True
    finally:
        handle.close()


def enumerate_usbtmc(
    context: LibusbContext,
    *,
    vid: int | None = None,
    pid: int | None = None,
    read_strings: bool = True,
) -> list[UsbResourceInfo]:
    """USBTMC interfaces of the devices ``context`` sees (blocking)."""
    found: list[UsbResourceInfo] = []
    for device in context.devices():
        try:
            if (vid is not None and device.vid != vid) or (pid is not None and device.pid != pid):
                continue
            interfaces = find_usbtmc_interfaces(device.interfaces())
            if not interfaces:
                continue
            manufacturer = product = serial = None
            accessible = True
            if read_strings:
                manufacturer, product, serial, accessible = _strings(device)
            found.extend(
                UsbResourceInfo(
                    vid=device.vid,
                    pid=device.pid,
                    serial=serial,
                    interface=interface.number,
                    manufacturer=manufacturer,
                    product=product,
                    bus=device.bus,
                    address=device.address,
                    usb488=interface.usb488,
                    accessible=accessible,
                )
                for interface in interfaces
            )
        finally:
            device.close()
    found.sort(key=lambda info: (info.bus, info.address, info.interface))
    return found


def list_usbtmc_devices(
    *, vid: int | None = None, pid: int | None = None, library: str | None = None
) -> list[UsbResourceInfo]:
    """Attached USBTMC interfaces, optionally filtered by VID/PID.

    Blocking (libusb enumeration and string descriptors): call it from a worker thread,
    or use :func:`alist_usbtmc_devices`. Raises ``LibusbNotFoundError`` without libusb.
    """
    context = LibusbContext.create(library=library)
    try:
        return enumerate_usbtmc(context, vid=vid, pid=pid)
    finally:
        context.close()


async def alist_usbtmc_devices(
    *, vid: int | None = None, pid: int | None = None, library: str | None = None
) -> list[UsbResourceInfo]:
    """:func:`list_usbtmc_devices` in a worker thread."""
    return await anyio.to_thread.run_sync(
        partial(list_usbtmc_devices, vid=vid, pid=pid, library=library),
        abandon_on_cancel=True,
    )
