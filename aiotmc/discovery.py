"""Finding instruments: ``await aiotmc.list_resources()``."""

from __future__ import annotations

from ._exceptions import UnsupportedOperation

__all__ = ["list_resources"]


async def list_resources() -> list[str]:
    """VISA names of the attached USBTMC instruments, e.g. ``USB0::0x0957::0x1796::MY1::INSTR``.

    Enumeration runs in a worker thread on a private libusb context, so open instruments
    are not disturbed and the event loop never blocks. Devices without a serial number are
    listed as ``USB0::vid::pid::INSTR`` (open them that way while they are unambiguous).

    Raises :class:`~aiotmc.UnsupportedOperation` when USB support is not installed
    (``pip install "aiotmc[usb]"``) and ``LibusbNotFoundError`` when no libusb is found.
    """
    try:
        from ._usb.discovery import alist_usbtmc_devices
    except ImportError as exc:  # python-libusb1 missing
        raise UnsupportedOperation(
            f'USB discovery needs python-libusb1: pip install "aiotmc[usb]" ({exc})'
        ) from exc
    return [info.visa_name for info in await alist_usbtmc_devices()]
