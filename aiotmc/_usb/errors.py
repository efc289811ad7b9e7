"""libusb error codes and transfer statuses mapped to the aiotmc exception tree.

Mapping is by number (``USBError.value`` / ``libusb_transfer.status``), never by the
exception class names python-libusb1 generates at import time. The numbers are libusb's
stable ABI, repeated here so this module (and the transfer logic) works without usb1.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from .._exceptions import (
    AiotmcError,
    ConnectError,
    ConnectionLostError,
    PermissionDeniedError,
    ResourceBusyError,
    TransportError,
    UsbStallError,
    UsbTransferError,
)

__all__ = [
    "AmbiguousDeviceError",
    "LibusbError",
    "LibusbNotFoundError",
    "TransferStatus",
    "error_from_code",
    "error_from_status",
    "map_usb_errors",
    "udev_hint",
    "usb_error_code",
]


class LibusbError(enum.IntEnum):
    """``enum libusb_error``."""

    SUCCESS = 0
    IO = -1
    INVALID_PARAM = -2
    ACCESS = -3
    NO_DEVICE = -4
    NOT_FOUND = -5
    BUSY = -6
    TIMEOUT = -7
    OVERFLOW = -8
    PIPE = -9
    INTERRUPTED = -10
    NO_MEM = -11
    NOT_SUPPORTED = -12
    OTHER = -99


class TransferStatus(enum.IntEnum):
    """``enum libusb_transfer_status``."""

    COMPLETED = 0
    ERROR = 1
    TIMED_OUT = 2
    CANCELLED = 3
    STALL = 4
    NO_DEVICE = 5
    OVERFLOW = 6


class LibusbNotFoundError(ConnectError, OSError):
    """No usable libusb-1.0 (or python-libusb1) could be loaded; the message says how to fix."""


class AmbiguousDeviceError(AiotmcError, LookupError):
    """Several USB devices match and no serial number was given to choose between them."""


_DESCRIPTIONS: Final[dict[int, str]] = {
    TransferStatus.ERROR: "transfer failed",
    TransferStatus.TIMED_OUT: "transfer timed out in libusb",
    TransferStatus.CANCELLED: "transfer was cancelled",
    TransferStatus.STALL: "endpoint stalled (halt)",
    TransferStatus.NO_DEVICE: "device disconnected",
    TransferStatus.OVERFLOW: "device sent more data than requested (overflow)",
}


def udev_hint(vid: int | None = None, pid: int | None = None) -> str:
    """How to grant access on Linux: a udev rule for this device (or for all USBTMC)."""
    if vid is not None and pid is not None:
        match = f'ATTR{{idVendor}}=="{vid:04x}", ATTR{{idProduct}}=="{pid:04x}", '
    else:
        match = ""
    return (
        "access to the USB device was denied. On Linux add a udev rule, e.g. "
        f"/etc/udev/rules.d/50-usbtmc.rules containing\n"
        f'  SUBSYSTEM=="usb", {match}MODE="0660", TAG+="uaccess"\n'
        "then run `sudo udevadm control --reload && sudo udevadm trigger` and replug; "
        "on Windows install the WinUSB driver (e.g. with Zadig)."
    )


def usb_error_code(exc: BaseException) -> int | None:
    """The libusb error number carried by a python-libusb1 ``USBError``, else None."""
    value = getattr(exc, "value", None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _name(code: int) -> str:
    try:
        return f"LIBUSB_ERROR_{LibusbError(code).name}"
    except ValueError:
        return f"libusb error {code}"


def error_from_code(
    code: int,
    *,
    operation: str,
    resource: str | None = None,
    endpoint: int | None = None,
    opening: bool = False,
    vid: int | None = None,
    pid: int | None = None,
) -> TransportError:
    """The aiotmc exception for a libusb error number returned by ``operation``.

    ``opening`` turns generic failures into :class:`ConnectError` (open/claim time).
    """
    message = f"{operation} failed: {_name(code)}"
    if code == LibusbError.ACCESS:
        return PermissionDeniedError(f"{message}; {udev_hint(vid, pid)}", resource=resource)
    if code == LibusbError.BUSY:
        return ResourceBusyError(
            f"{message}; the interface is claimed by another program or driver",
            resource=resource,
        )
    if code == LibusbError.NO_DEVICE:
        return ConnectionLostError(f"{message}; device disconnected", resource=resource)
    if code == LibusbError.PIPE:
        return UsbStallError(message, resource=resource, status=code, endpoint=endpoint)
    if opening:
        return ConnectError(message, resource=resource)
    return UsbTransferError(message, resource=resource, status=code, endpoint=endpoint)


def error_from_status(
    status: int, *, resource: str | None = None, endpoint: int | None = None
) -> TransportError | None:
    """The aiotmc exception for a completed transfer's status; None for COMPLETED."""
    if status == TransferStatus.COMPLETED:
        return None
    where = f" on endpoint 0x{endpoint:02x}" if endpoint is not None else ""
    message = _DESCRIPTIONS.get(status, f"transfer status {status}") + where
    if status == TransferStatus.NO_DEVICE:
        return ConnectionLostError(message, resource=resource)
    if status == TransferStatus.STALL:
        return UsbStallError(message, resource=resource, status=status, endpoint=endpoint)
    return UsbTransferError(message, resource=resource, status=status, endpoint=endpoint)


@contextmanager
def map_usb_errors(
    operation: str,
    *,
    resource: str | None = None,
    endpoint: int | None = None,
    opening: bool = False,
    vid: int | None = None,
    pid: int | None = None,
) -> Iterator[None]:
    """Re-raise python-libusb1 ``USBError`` as aiotmc exceptions (cancellation passes)."""
    try:
        yield
    except AiotmcError:
        raise
    except Exception as exc:
        code = usb_error_code(exc)
        if code is None:
            raise
        raise error_from_code(
            code,
            operation=operation,
            resource=resource,
            endpoint=endpoint,
            opening=opening,
            vid=vid,
            pid=pid,
        ) from exc
