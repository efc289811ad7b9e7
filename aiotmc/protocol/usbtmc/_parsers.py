"""Decoding USBTMC class request replies: status, aborts, clear and capabilities."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..._exceptions import RemoteProtocolError
from ..._types import BytesLike
from ._wire import UsbtmcStatus

__all__ = [
    "CheckAbortReply",
    "CheckClearReply",
    "InitiateAbortReply",
    "UsbtmcCapabilities",
    "parse_capabilities",
    "parse_check_abort_bulk_in",
    "parse_check_abort_bulk_out",
    "parse_check_clear_status",
    "parse_initiate_abort",
    "parse_status",
]


def _status(value: int, what: str = "class request") -> UsbtmcStatus:
    try:
        return UsbtmcStatus(value)
    except ValueError:
        raise RemoteProtocolError(f"{what} returned unknown status {value:#04x}") from None


def parse_status(data: BytesLike) -> UsbtmcStatus:
    """The USBTMC_status byte that starts every class request reply."""
    if len(data) < 1:
        raise RemoteProtocolError("empty class request reply")
    return _status(data[0])


# -- INITIATE_ABORT, CHECK_ABORT, CHECK_CLEAR ---------------------------------------------


@dataclass(frozen=True, slots=True)
class InitiateAbortReply:
    """INITIATE_ABORT_BULK_OUT/IN reply: status and the bTag the device considers current."""

    status: UsbtmcStatus
    tag: int


@dataclass(frozen=True, slots=True)
class CheckAbortReply:
    """CHECK_ABORT_BULK_OUT/IN_STATUS reply.

    ``more_data`` (bulk-IN only, bmAbortBulkIn bit 0): read bulk-IN before asking again.
    ``count`` is NBYTES_RXD / NBYTES_TXD.
    """

    status: UsbtmcStatus
    more_data: bool
    count: int


@dataclass(frozen=True, slots=True)
class CheckClearReply:
    """CHECK_CLEAR_STATUS reply (``more_data``: bmClear bit 0, drain bulk-IN)."""

    status: UsbtmcStatus
    more_data: bool


def _need(data: BytesLike, size: int, what: str) -> None:
    if len(data) < size:
        raise RemoteProtocolError(f"{what} reply needs {size} bytes, got {bytes(data).hex()}")


def parse_initiate_abort(data: BytesLike) -> InitiateAbortReply:
    """Decode an INITIATE_ABORT_BULK_OUT/IN reply (2 bytes)."""
    _need(data, 2, "INITIATE_ABORT")
    return InitiateAbortReply(_status(data[0], "INITIATE_ABORT"), data[1])


def parse_check_abort_bulk_out(data: BytesLike) -> CheckAbortReply:
    """Decode a CHECK_ABORT_BULK_OUT_STATUS reply (8 bytes)."""
    _need(data, 8, "CHECK_ABORT_BULK_OUT_STATUS")
    count = int.from_bytes(bytes(data[4:8]), "little")
    return CheckAbortReply(_status(data[0], "CHECK_ABORT_BULK_OUT_STATUS"), False, count)


def parse_check_abort_bulk_in(data: BytesLike) -> CheckAbortReply:
    """Decode a CHECK_ABORT_BULK_IN_STATUS reply (8 bytes)."""
    _need(data, 8, "CHECK_ABORT_BULK_IN_STATUS")
    count = int.from_bytes(bytes(data[4:8]), "little")
    status = _status(data[0], "CHECK_ABORT_BULK_IN_STATUS")
    return CheckAbortReply(status, bool(data[1] & 1), count)


def parse_check_clear_status(data: BytesLike) -> CheckClearReply:
    """Decode a CHECK_CLEAR_STATUS reply (2 bytes)."""
    _need(data, 2, "CHECK_CLEAR_STATUS")
    return CheckClearReply(_status(data[0], "CHECK_CLEAR_STATUS"), bool(data[1] & 1))


# -- capabilities -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class UsbtmcCapabilities:
    """GET_CAPABILITIES, decoded (USBTMC table 37, USB488 table 8).

    ``bcd_usb488`` is 0 for a plain USBTMC interface.
    """

    bcd_usbtmc: int = 0
    indicator_pulse: bool = False
    talk_only: bool = False
    listen_only: bool = False
    term_char: bool = False
    bcd_usb488: int = 0
    usb488_2: bool = False  #: the interface is IEEE 488.2 (USB488 interface bit 2)
    ren_control: bool = False  #: REN_CONTROL, GO_TO_LOCAL, LOCAL_LOCKOUT
    trigger: bool = False  #: the TRIGGER bulk message
    scpi: bool = False
    sr1: bool = False  #: service request capable
    rl1: bool = False  #: remote/local capable
    dt1: bool = False  #: device trigger capable

    @property
    def usb488(self) -> bool:
        """True for a USB488 interface (READ_STATUS_BYTE, SRQ notifications)."""
        return self.bcd_usb488 != 0

    def to_bytes(self, status: int = UsbtmcStatus.SUCCESS) -> bytes:
        """Encode the 0x18-byte GET_CAPABILITIES reply (the device side uses this)."""
        out = bytearray(0x18)
        out[0] = status
        struct.pack_into("<H", out, 2, self.bcd_usbtmc)
        out[4] = self.indicator_pulse << 2 | self.talk_only << 1 | self.listen_only
        out[5] = int(self.term_char)
        struct.pack_into("<H", out, 12, self.bcd_usb488)
        out[14] = self.usb488_2 << 2 | self.ren_control << 1 | self.trigger
        out[15] = self.scpi << 3 | self.sr1 << 2 | self.rl1 << 1 | self.dt1
        return bytes(out)


def parse_capabilities(data: BytesLike) -> UsbtmcCapabilities:
    """Decode a GET_CAPABILITIES reply; short replies are zero-extended."""
    status = parse_status(data)
    if status is not UsbtmcStatus.SUCCESS:
        raise RemoteProtocolError(f"GET_CAPABILITIES returned {status.name}")
    raw = bytes(data[:0x18]).ljust(0x18, b"\0")
    iface, dev, iface488, dev488 = raw[4], raw[5], raw[14], raw[15]
    return UsbtmcCapabilities(
        bcd_usbtmc=int.from_bytes(raw[2:4], "little"),
        indicator_pulse=bool(iface & 4),
        talk_only=bool(iface & 2),
        listen_only=bool(iface & 1),
        term_char=bool(dev & 1),
        bcd_usb488=int.from_bytes(raw[12:14], "little"),
        usb488_2=bool(iface488 & 4),
        ren_control=bool(iface488 & 2),
        trigger=bool(iface488 & 1),
        scpi=bool(dev488 & 8),
        sr1=bool(dev488 & 4),
        rl1=bool(dev488 & 2),
        dt1=bool(dev488 & 1),
    )
