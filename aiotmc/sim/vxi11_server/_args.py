"""The core channel's arguments and results on the wire: the fast decoders of
device_write / device_read arguments, the structs of their replies, which procedures
take a link id, and the error-only result of each procedure."""

from __future__ import annotations

import struct
from typing import Final

from ...protocol.vxi11 import (
    DeviceError,
    DeviceReadParms,
    DeviceReadStbResp,
    DeviceWriteParms,
    Proc,
)

__all__ = [
    "ACCEPTED",
    "GENERIC",
    "LID",
    "LINK_PROCS",
    "PAD",
    "READ_REPLY",
    "UNSUPPORTED",
    "WRITE_RESP",
    "error_only",
    "read_parms",
    "write_parms",
]

READ_REPLY: Final = struct.Struct(">6IiiI")  # accepted REPLY header + device_read results
ACCEPTED: Final = (1, 0, 0, 0, 0)  # REPLY, MSG_ACCEPTED, AUTH_NONE verifier, SUCCESS
_WRITE_HEAD: Final = struct.Struct(">iIIiI")  # DeviceWriteParms up to the data
_READ_PARMS: Final = struct.Struct(">iIIIii")
WRITE_RESP: Final = struct.Struct(">iI")  # DeviceWriteResp
PAD: Final = (b"", b"\0\0\0", b"\0\0", b"\0")  # XDR padding by length % 4

GENERIC: Final = frozenset(
    {
        Proc.DEVICE_READSTB,
        Proc.DEVICE_TRIGGER,
        Proc.DEVICE_CLEAR,
        Proc.DEVICE_REMOTE,
        Proc.DEVICE_LOCAL,
    }
)
UNSUPPORTED: Final = frozenset({Proc.DEVICE_DOCMD})  # on device links
LID: Final = struct.Struct(">i")
#: Procedures whose arguments start with a link id.
LINK_PROCS: Final = frozenset(
    {
        *GENERIC,
        Proc.DEVICE_WRITE,
        Proc.DEVICE_READ,
        Proc.DEVICE_LOCK,
        Proc.DEVICE_UNLOCK,
        Proc.DEVICE_ENABLE_SRQ,
        Proc.DEVICE_DOCMD,
        Proc.DESTROY_LINK,
    }
)


def write_parms(args: memoryview) -> DeviceWriteParms:
    """DeviceWriteParms, as its ``decode`` (one struct, the data as a view)."""
    if len(args) >= 20:
        lid, io_timeout, lock_timeout, flags, size = _WRITE_HEAD.unpack_from(args)
        if len(args) >= 20 + size + (-size & 3):
            return DeviceWriteParms(lid, io_timeout, lock_timeout, flags, args[20 : 20 + size])
    return DeviceWriteParms.decode(args)  # raises RemoteProtocolError, naming the problem


def read_parms(args: memoryview) -> DeviceReadParms:
    """DeviceReadParms, as its ``decode`` (one struct)."""
    try:
        return DeviceReadParms(*_READ_PARMS.unpack_from(args))
    except struct.error:
        return DeviceReadParms.decode(args)  # raises RemoteProtocolError, naming the problem


def error_only(proc: int, error: int) -> bytes:
    """The result of ``proc`` carrying only an error code."""
    if proc == Proc.DEVICE_READSTB:
        return DeviceReadStbResp(error, 0).encode()
    if proc == Proc.DEVICE_DOCMD:
        return DeviceError(error).encode() + b"\0\0\0\0"  # error, empty data_out
    return DeviceError(error).encode()
