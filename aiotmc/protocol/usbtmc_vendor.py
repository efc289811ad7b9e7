"""USBTMC vendor-specific bulk messages, sans-IO (USBTMC 1.0 §3.2.1.2, §3.2.1.3, §3.3.1.2).

``VENDOR_SPECIFIC_OUT`` (MsgID 126) carries vendor data to the device in one bulk-OUT
transfer; ``REQUEST_VENDOR_SPECIFIC_IN`` (MsgID 127 on bulk-OUT) asks for at most
TransferSize bytes, which the device sends back as one ``VENDOR_SPECIFIC_IN`` transfer
(MsgID 127 on bulk-IN, the same bTag, no EOM: the transfer is the unit). Both use the
12-byte bulk header of :mod:`aiotmc.protocol.usbtmc` with bytes 8-11 reserved (zero) and
payloads padded to a multiple of 4 bytes.

The transport allocates bTags (from the same sequence as its other bulk-OUT transfers)
and moves the bytes; this module builds and checks them.
"""

from __future__ import annotations

from typing import Final

from .._exceptions import LocalProtocolError, RemoteProtocolError
from .._types import BytesLike
from .usbtmc import HEADER_SIZE, MsgID, pack_header, unpack_header

__all__ = [
    "parse_vendor_specific_in",
    "request_vendor_specific_in",
    "vendor_in_read_size",
    "vendor_specific_out",
]

_MAX_U32: Final = 0xFFFF_FFFF


def vendor_specific_out(tag: int, data: BytesLike) -> bytes:
    """One VENDOR_SPECIFIC_OUT transfer: header, ``data``, alignment padding."""
    size = len(data)
    if not 1 <= size <= _MAX_U32:
        raise LocalProtocolError(f"a vendor-specific message needs 1 to 2**32-1 bytes, got {size}")
    return b"".join((pack_header(MsgID.VENDOR_SPECIFIC_OUT, tag, size), data, bytes(-size % 4)))


def request_vendor_specific_in(tag: int, max_size: int) -> bytes:
    """The REQUEST_VENDOR_SPECIFIC_IN header asking for at most ``max_size`` bytes."""
    if not 1 <= max_size <= _MAX_U32:
        raise LocalProtocolError(f"max_size must be 1 to 2**32-1, got {max_size}")
    return pack_header(MsgID.REQUEST_VENDOR_SPECIFIC_IN, tag, max_size)


def vendor_in_read_size(max_size: int, max_packet_size: int) -> int:
    """Bulk-IN read size for the answer to a request of ``max_size`` bytes: header,
    payload and padding, rounded up to whole packets."""
    size = HEADER_SIZE + max_size + (-max_size % 4)
    return -(-size // max_packet_size) * max_packet_size


def parse_vendor_specific_in(data: BytesLike, *, tag: int, max_size: int) -> int:
    """Check the VENDOR_SPECIFIC_IN header at the start of ``data``; its TransferSize.

    Raises RemoteProtocolError for a short or corrupt header, another MsgID, another
    bTag, or a TransferSize above the ``max_size`` that was asked for.
    """
    header = unpack_header(data)
    if header.msg_id != MsgID.VENDOR_SPECIFIC_IN:
        raise RemoteProtocolError(
            f"expected VENDOR_SPECIFIC_IN (MsgID 127), got MsgID {header.msg_id}"
        )
    if header.tag != tag:
        raise RemoteProtocolError(
            f"VENDOR_SPECIFIC_IN bTag {header.tag} does not match the request's bTag {tag}"
        )
    if header.transfer_size > max_size:
        raise RemoteProtocolError(
            f"VENDOR_SPECIFIC_IN of {header.transfer_size} bytes exceeds the {max_size} asked for"
        )
    return header.transfer_size
