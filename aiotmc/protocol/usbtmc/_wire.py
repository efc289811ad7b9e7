"""USBTMC wire format: bulk headers, MsgIDs, class request codes and status values."""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final

from ..._exceptions import LocalProtocolError, RemoteProtocolError
from ..._types import BytesLike

__all__ = [
    "ATTR_EOM",
    "ATTR_TERM_CHAR",
    "DEFAULT_MAX_TRANSFER_SIZE",
    "HEADER_SIZE",
    "MAX_TRANSFER_SIZE_FIELD",
    "REQUEST_TYPE_ENDPOINT",
    "REQUEST_TYPE_INTERFACE",
    "BulkHeader",
    "MsgID",
    "UsbtmcRequest",
    "UsbtmcStatus",
    "pack_header",
    "pad_length",
    "unpack_header",
]


HEADER_SIZE: Final = 12
"""Bytes in every bulk header."""

DEFAULT_MAX_TRANSFER_SIZE: Final = 1 << 20
"""Payload bytes per DEV_DEP_MSG_OUT transfer and per request, unless configured."""

MAX_TRANSFER_SIZE_FIELD: Final = 0xFFFF_FFFF
"""The largest TransferSize a bulk header can carry (32 bits)."""

ATTR_EOM: Final = 0x01
"""bmTransferAttributes bit 0: the transfer ends the message (EOM)."""

ATTR_TERM_CHAR: Final = 0x02
"""bmTransferAttributes bit 1: TermChar enabled (request) / ended on TermChar (reply)."""

_HEADER: Final = struct.Struct("<BBBxIBB2x")


class MsgID(enum.IntEnum):
    """Bulk MsgID values (USBTMC table 2, USB488 table 3).

    ``DEV_DEP_MSG_IN`` is the same number as ``REQUEST_DEV_DEP_MSG_IN`` (2), and
    ``VENDOR_SPECIFIC_IN`` the same as ``REQUEST_VENDOR_SPECIFIC_IN`` (127): the
    direction tells them apart, so they are aliases here.
    """

    DEV_DEP_MSG_OUT = 1
    REQUEST_DEV_DEP_MSG_IN = 2
    DEV_DEP_MSG_IN = 2
    VENDOR_SPECIFIC_OUT = 126
    REQUEST_VENDOR_SPECIFIC_IN = 127
    VENDOR_SPECIFIC_IN = 127
    TRIGGER = 128  #: USB488


class UsbtmcRequest(enum.IntEnum):
    """USBTMC class control requests (bRequest)."""

    INITIATE_ABORT_BULK_OUT = 1
    CHECK_ABORT_BULK_OUT_STATUS = 2
    INITIATE_ABORT_BULK_IN = 3
    CHECK_ABORT_BULK_IN_STATUS = 4
    INITIATE_CLEAR = 5
    CHECK_CLEAR_STATUS = 6
    GET_CAPABILITIES = 7
    INDICATOR_PULSE = 64


class UsbtmcStatus(enum.IntEnum):
    """USBTMC_status values in class request replies."""

    SUCCESS = 0x01
    PENDING = 0x02
    INTERRUPT_IN_BUSY = 0x20  #: USB488: READ_STATUS_BYTE while a reply is still queued
    FAILED = 0x80
    TRANSFER_NOT_IN_PROGRESS = 0x81
    SPLIT_NOT_IN_PROGRESS = 0x82
    SPLIT_IN_PROGRESS = 0x83


REQUEST_TYPE_INTERFACE: Final = 0xA1  # class, interface recipient, device-to-host
REQUEST_TYPE_ENDPOINT: Final = 0xA2  # class, endpoint recipient, device-to-host


# -- bulk headers ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BulkHeader:
    """A decoded 12-byte bulk header (``term_char`` is byte 9, used by requests only)."""

    msg_id: int
    tag: int
    transfer_size: int
    attributes: int
    term_char: int = 0

    @property
    def eom(self) -> bool:
        """bmTransferAttributes bit 0."""
        return bool(self.attributes & ATTR_EOM)

    @property
    def term_char_set(self) -> bool:
        """bmTransferAttributes bit 1 (TermCharEnabled / ended on TermChar)."""
        return bool(self.attributes & ATTR_TERM_CHAR)


def pack_header(
    msg_id: int, tag: int, transfer_size: int, attributes: int = 0, term_char: int = 0
) -> bytes:
    """Encode a bulk header (bTagInverse computed here)."""
    if not 1 <= tag <= 255:
        raise LocalProtocolError(f"bTag must be 1..255, got {tag}")
    if not 0 <= transfer_size <= MAX_TRANSFER_SIZE_FIELD:
        raise LocalProtocolError(f"TransferSize {transfer_size} does not fit 32 bits")
    return _HEADER.pack(msg_id, tag, ~tag & 0xFF, transfer_size, attributes, term_char)


def unpack_header(data: BytesLike) -> BulkHeader:
    """Decode the first 12 bytes of ``data``; RemoteProtocolError if bTagInverse is wrong."""
    if len(data) < HEADER_SIZE:
        raise RemoteProtocolError(f"bulk header needs {HEADER_SIZE} bytes, got {len(data)}")
    msg_id, tag, inverse, size, attributes, term_char = _HEADER.unpack_from(data)
    if inverse != ~tag & 0xFF:
        raise RemoteProtocolError(
            f"bulk header bTagInverse {inverse:#04x} does not match bTag {tag} "
            f"(header {bytes(data[:HEADER_SIZE]).hex(' ')})"
        )
    return BulkHeader(msg_id, tag, size, attributes, term_char)


def pad_length(size: int) -> int:
    """Alignment bytes after a ``size``-byte payload (transfers end on a 4-byte boundary)."""
    return -size % 4
