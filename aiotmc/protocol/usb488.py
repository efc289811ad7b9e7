"""USB488 1.0 subclass, sans-IO: READ_STATUS_BYTE, REN/GTL/LLO, interrupt-IN notifications.

Interrupt-IN carries two kinds of 2-byte notifications that share one endpoint:
``0x81, stb`` is a service request, ``0x80 | tag, stb`` the answer to READ_STATUS_BYTE
``tag`` (2..127; tag 1 is reserved for SRQ). A reader that reads the endpoint only when it
wants a status byte swallows SRQs (or takes an SRQ for its answer), so the transport keeps
one reader running and demultiplexes with :func:`parse_interrupt`.

Stdlib only; no I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, TypeAlias

from .._exceptions import LocalProtocolError, RemoteProtocolError
from .._types import BytesLike
from .events import ControlRequest
from .usbtmc import UsbtmcStatus, interface_request, parse_status

__all__ = [
    "SRQ_TAG",
    "Notification",
    "ReadStatusByteReply",
    "SrqNotification",
    "StatusByteReply",
    "StbTag",
    "Usb488Request",
    "VendorNotification",
    "go_to_local_request",
    "local_lockout_request",
    "parse_interrupt",
    "parse_read_status_byte",
    "read_status_byte_request",
    "ren_control_request",
    "srq_notification",
    "status_byte_notification",
]

SRQ_TAG: Final = 1
"""bNotify1 & 0x7F of an SRQ notification."""

_FIRST_TAG: Final = 2
_LAST_TAG: Final = 127


class Usb488Request(enum.IntEnum):
    """USB488 class control requests (bRequest)."""

    READ_STATUS_BYTE = 128
    REN_CONTROL = 160
    GO_TO_LOCAL = 161
    LOCAL_LOCKOUT = 162


class StbTag:
    """READ_STATUS_BYTE bTags: 2, 3, ..., 127, then 2 again."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last = _LAST_TAG

    @property
    def last(self) -> int:
        """The tag handed out last (127 before the first call)."""
        return self._last

    def next(self) -> int:
        """The next tag."""
        self._last = _FIRST_TAG if self._last >= _LAST_TAG else self._last + 1
        return self._last


def read_status_byte_request(tag: int, interface: int) -> ControlRequest:
    """READ_STATUS_BYTE with ``tag`` (2..127)."""
    if not _FIRST_TAG <= tag <= _LAST_TAG:
        raise LocalProtocolError(f"READ_STATUS_BYTE bTag must be 2..127, got {tag}")
    return interface_request(Usb488Request.READ_STATUS_BYTE, interface, 3, tag)


def ren_control_request(enable: bool, interface: int) -> ControlRequest:
    """REN_CONTROL: assert (``enable``) or deassert remote enable."""
    return interface_request(Usb488Request.REN_CONTROL, interface, 1, int(enable))


def go_to_local_request(interface: int) -> ControlRequest:
    """GO_TO_LOCAL."""
    return interface_request(Usb488Request.GO_TO_LOCAL, interface, 1)


def local_lockout_request(interface: int) -> ControlRequest:
    """LOCAL_LOCKOUT."""
    return interface_request(Usb488Request.LOCAL_LOCKOUT, interface, 1)


@dataclass(frozen=True, slots=True)
class ReadStatusByteReply:
    """The control reply to READ_STATUS_BYTE.

    ``status_byte`` is only meaningful without an interrupt endpoint; otherwise the
    status byte comes as a :class:`StatusByteReply` on interrupt-IN.
    """

    status: UsbtmcStatus
    tag: int
    status_byte: int


def parse_read_status_byte(data: BytesLike) -> ReadStatusByteReply:
    """Decode the 3-byte READ_STATUS_BYTE control reply."""
    status = parse_status(data)
    if len(data) < 3:
        if status is UsbtmcStatus.SUCCESS:
            raise RemoteProtocolError(f"READ_STATUS_BYTE reply too short: {bytes(data).hex()}")
        data = bytes(data).ljust(3, b"\0")
    return ReadStatusByteReply(status, data[1], data[2])


@dataclass(frozen=True, slots=True)
class SrqNotification:
    """A service request: the device's status byte when it asked for service."""

    status: int


@dataclass(frozen=True, slots=True)
class StatusByteReply:
    """The interrupt-IN answer to READ_STATUS_BYTE ``tag``."""

    tag: int
    status: int


@dataclass(frozen=True, slots=True)
class VendorNotification:
    """A vendor-specific interrupt-IN notification (bNotify1 bit 7 clear)."""

    data: bytes


Notification: TypeAlias = SrqNotification | StatusByteReply | VendorNotification


def parse_interrupt(data: BytesLike) -> Notification:
    """Decode one interrupt-IN packet; RemoteProtocolError when it is malformed."""
    if len(data) < 2:
        raise RemoteProtocolError(f"interrupt-IN notification too short: {bytes(data).hex()}")
    first = data[0]
    if not first & 0x80:
        return VendorNotification(bytes(data))
    tag = first & 0x7F
    if tag == SRQ_TAG:
        return SrqNotification(data[1])
    if tag < _FIRST_TAG:
        raise RemoteProtocolError(f"interrupt-IN notification with bTag 0: {bytes(data).hex()}")
    return StatusByteReply(tag, data[1])


def srq_notification(status_byte: int) -> bytes:
    """Device side: the SRQ notification for ``status_byte``."""
    return bytes((0x80 | SRQ_TAG, status_byte & 0xFF))


def status_byte_notification(tag: int, status_byte: int) -> bytes:
    """Device side: the interrupt-IN answer to READ_STATUS_BYTE ``tag``."""
    return bytes((0x80 | (tag & 0x7F), status_byte & 0xFF))
