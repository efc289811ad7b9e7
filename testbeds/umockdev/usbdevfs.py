"""Linux usbdevfs ABI bits the emulator needs: ioctl numbers and ``struct usbdevfs_urb``.

Numbers are computed with the kernel's ``_IOC`` macros for the running architecture's
pointer size (``struct usbdevfs_urb`` is 56 bytes on 64-bit Linux). Stdlib only.
"""

from __future__ import annotations

import ctypes
import errno
import struct
from dataclasses import dataclass
from typing import Final

__all__ = [
    "CAPABILITIES",
    "URB_SIZE",
    "Ioctl",
    "UrbHeader",
    "UrbType",
    "ioctl_name",
]

_IOC_NONE: Final = 0
_IOC_WRITE: Final = 1
_IOC_READ: Final = 2

POINTER_SIZE: Final = ctypes.sizeof(ctypes.c_void_p)


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (ord("U") << 8) | nr


class _Urb(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_ubyte),
        ("endpoint", ctypes.c_ubyte),
        ("status", ctypes.c_int),
        ("flags", ctypes.c_uint),
        ("buffer", ctypes.c_void_p),
        ("buffer_length", ctypes.c_int),
        ("actual_length", ctypes.c_int),
        ("start_frame", ctypes.c_int),
        ("number_of_packets", ctypes.c_int),
        ("error_count", ctypes.c_int),
        ("signr", ctypes.c_uint),
        ("usercontext", ctypes.c_void_p),
    ]


URB_SIZE: Final = ctypes.sizeof(_Urb)
URB_STATUS_OFFSET: Final = _Urb.status.offset
URB_BUFFER_OFFSET: Final = _Urb.buffer.offset
URB_ACTUAL_LENGTH_OFFSET: Final = _Urb.actual_length.offset

_DISCONNECT_CLAIM_SIZE: Final = 4 + 4 + 256
_GETDRIVER_SIZE: Final = 4 + 256
_IOCTL_SIZE: Final = 4 + 4 + POINTER_SIZE  # struct usbdevfs_ioctl {int; int; void*}
_SETINTERFACE_SIZE: Final = 8
_CONNECTINFO_SIZE: Final = 8


class Ioctl:
    """usbdevfs request numbers."""

    CONTROL: Final = _ioc(_IOC_READ | _IOC_WRITE, 0, 8 + 2 * 4 + POINTER_SIZE)
    RESETEP: Final = _ioc(_IOC_READ, 3, 4)
    SETINTERFACE: Final = _ioc(_IOC_READ, 4, _SETINTERFACE_SIZE)
    SETCONFIGURATION: Final = _ioc(_IOC_READ, 5, 4)
    GETDRIVER: Final = _ioc(_IOC_WRITE, 8, _GETDRIVER_SIZE)
    SUBMITURB: Final = _ioc(_IOC_READ, 10, URB_SIZE)
    DISCARDURB: Final = _ioc(_IOC_NONE, 11, 0)
    REAPURB: Final = _ioc(_IOC_WRITE, 12, POINTER_SIZE)
    REAPURBNDELAY: Final = _ioc(_IOC_WRITE, 13, POINTER_SIZE)
    CLAIMINTERFACE: Final = _ioc(_IOC_READ, 15, 4)
    RELEASEINTERFACE: Final = _ioc(_IOC_READ, 16, 4)
    CONNECTINFO: Final = _ioc(_IOC_WRITE, 17, _CONNECTINFO_SIZE)
    IOCTL: Final = _ioc(_IOC_READ | _IOC_WRITE, 18, _IOCTL_SIZE)
    RESET: Final = _ioc(_IOC_NONE, 20, 0)
    CLEAR_HALT: Final = _ioc(_IOC_READ, 21, 4)
    DISCONNECT: Final = _ioc(_IOC_NONE, 22, 0)
    CONNECT: Final = _ioc(_IOC_NONE, 23, 0)
    GET_CAPABILITIES: Final = _ioc(_IOC_READ, 26, 4)
    DISCONNECT_CLAIM: Final = _ioc(_IOC_READ, 27, _DISCONNECT_CLAIM_SIZE)
    DROP_PRIVILEGES: Final = _ioc(_IOC_WRITE, 30, 4)
    GET_SPEED: Final = _ioc(_IOC_NONE, 31, 0)


_NAMES: Final = {
    value: name for name, value in vars(Ioctl).items() if name.isupper() and isinstance(value, int)
}


def ioctl_name(request: int) -> str:
    """``"SUBMITURB"`` etc., or the number in hex."""
    return _NAMES.get(request, f"0x{request:08x}")


class UrbType:
    ISO: Final = 0
    INTERRUPT: Final = 1
    CONTROL: Final = 2
    BULK: Final = 3


URB_ZERO_PACKET: Final = 0x40

CAP_ZERO_PACKET: Final = 0x01
CAP_BULK_CONTINUATION: Final = 0x02
CAP_NO_PACKET_SIZE_LIM: Final = 0x04
CAP_BULK_SCATTER_GATHER: Final = 0x08
CAP_REAP_AFTER_DISCONNECT: Final = 0x10

#: What the emulated usbfs advertises: one URB per transfer, ZLP flag, reap after unplug.
CAPABILITIES: Final = (
    CAP_ZERO_PACKET
    | CAP_BULK_CONTINUATION
    | CAP_NO_PACKET_SIZE_LIM
    | CAP_BULK_SCATTER_GATHER
    | CAP_REAP_AFTER_DISCONNECT
)

#: URB completion statuses (negative errno, as the kernel reports them).
STATUS_OK: Final = 0
STATUS_STALL: Final = -errno.EPIPE
STATUS_DISCARDED: Final = -errno.ENOENT
STATUS_SHUTDOWN: Final = -errno.ESHUTDOWN
STATUS_NO_DEVICE: Final = -errno.ENODEV

USB_SPEED_HIGH: Final = 3


@dataclass(frozen=True, slots=True)
class UrbHeader:
    """The fields of a submitted ``struct usbdevfs_urb`` the emulator uses."""

    type: int
    endpoint: int
    flags: int
    buffer: int
    buffer_length: int

    @classmethod
    def parse(cls, raw: bytes) -> UrbHeader:
        urb = _Urb.from_buffer_copy(bytes(raw[:URB_SIZE]).ljust(URB_SIZE, b"\0"))
        return cls(
            type=urb.type,
            endpoint=urb.endpoint,
            flags=urb.flags,
            buffer=urb.buffer or 0,
            buffer_length=urb.buffer_length,
        )

    @property
    def is_in(self) -> bool:
        return bool(self.endpoint & 0x80)


def pack_int(value: int) -> bytes:
    """A C ``int`` in native byte order (``IoctlData.update`` takes bytes)."""
    return struct.pack("=i", value)


def pack_uint(value: int) -> bytes:
    return struct.pack("=I", value)


def unpack_uint(raw: bytes) -> int:
    return int(struct.unpack_from("=I", bytes(raw))[0])


def unpack_pointer(raw: bytes) -> int:
    return int(struct.unpack_from("=Q" if POINTER_SIZE == 8 else "=I", bytes(raw))[0])
