"""VXI-11 (VXIbus TCP/IP Instrument Protocol, rev. 1.0): programs, procedures, the
argument and result structures of the core, abort and interrupt channels, sans-IO.

Every structure is a frozen dataclass with ``encode()`` and ``decode(data)``; opaque
fields decode as views into the record (no copy). :func:`error_for` turns a VXI-11
error code into an exception of the aiotmc tree.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Final, Self

from .._exceptions import (
    AiotmcError,
    ConnectionLostError,
    LocalProtocolError,
    ReadTimeout,
    RemoteProtocolError,
    ResourceBusyError,
    ResourceNotFoundError,
    SessionBrokenError,
    TransportError,
    UnsupportedOperation,
    WriteTimeout,
)
from .._types import BytesLike
from .xdr import Packer, Unpacker

__all__ = [
    "DEVICE_ASYNC",
    "DEVICE_CORE",
    "DEVICE_INTR",
    "DEVICE_TCP",
    "END",
    "HANDLE_MAX",
    "TERMCHRSET",
    "VERSION",
    "WAITLOCK",
    "BusStatus",
    "CreateLinkParms",
    "CreateLinkResp",
    "DeviceDocmdParms",
    "DeviceDocmdResp",
    "DeviceEnableSrqParms",
    "DeviceError",
    "DeviceGenericParms",
    "DeviceLink",
    "DeviceLockParms",
    "DeviceReadParms",
    "DeviceReadResp",
    "DeviceReadStbResp",
    "DeviceRemoteFunc",
    "DeviceSrqParms",
    "DeviceWriteParms",
    "DeviceWriteResp",
    "Docmd",
    "ErrorCode",
    "Proc",
    "Reason",
    "device_write_head",
    "error_for",
]

DEVICE_CORE: Final = 0x0607AF  #: core channel program
DEVICE_ASYNC: Final = 0x0607B0  #: abort channel program
DEVICE_INTR: Final = 0x0607B1  #: interrupt channel program (the client serves it)
VERSION: Final = 1
DEVICE_TCP: Final = 0  #: create_intr_chan progFamily for TCP (not IPPROTO_TCP)
HANDLE_MAX: Final = 40  #: device_enable_srq handle<40>

# Device_Flags
WAITLOCK: Final = 0x01  #: wait up to lock_timeout for a lock held by another link
END: Final = 0x08  #: device_write: this chunk ends the message
TERMCHRSET: Final = 0x80  #: device_read: stop at termChar


class Proc(enum.IntEnum):
    """Procedure numbers of the three channels."""

    DEVICE_ABORT = 1  # abort channel
    CREATE_LINK = 10
    DEVICE_WRITE = 11
    DEVICE_READ = 12
    DEVICE_READSTB = 13
    DEVICE_TRIGGER = 14
    DEVICE_CLEAR = 15
    DEVICE_REMOTE = 16
    DEVICE_LOCAL = 17
    DEVICE_LOCK = 18
    DEVICE_UNLOCK = 19
    DEVICE_ENABLE_SRQ = 20
    DEVICE_DOCMD = 22
    DESTROY_LINK = 23
    CREATE_INTR_CHAN = 25
    DESTROY_INTR_CHAN = 26
    DEVICE_INTR_SRQ = 30  # interrupt channel


class Docmd(enum.IntEnum):
    """device_docmd commands of VXI-11.2 (GPIB gateways), on an interface link (``gpib0``).

    ``data_in`` and ``data_out`` are in network order; the size of one element is
    ``datasize``: 1 for SEND_COMMAND, 2 for the flag and status commands, 4 for addresses.
    """

    SEND_COMMAND = 0x020000  #: send bytes with ATN asserted (GPIB command bytes); echoes them
    BUS_STATUS = 0x020001  #: one :class:`BusStatus` item in, its 16-bit value out
    ATN_CONTROL = 0x020002  #: assert (1) or release (0) ATN
    REN_CONTROL = 0x020003  #: assert (1) or release (0) REN
    PASS_CONTROL = 0x020004  #: pass control to the 32-bit bus address given
    BUS_ADDRESS = 0x02000A  #: set the gateway's own bus address (0..30)
    IFC_CONTROL = 0x020010  #: pulse IFC (interface clear); no data


class BusStatus(enum.IntEnum):
    """BUS_STATUS items."""

    REMOTE = 1  #: REN asserted
    SRQ = 2  #: SRQ asserted by a device
    NDAC = 3  #: NDAC asserted
    SYSTEM_CONTROLLER = 4  #: the gateway is the system controller
    CONTROLLER_IN_CHARGE = 5  #: the gateway is controller in charge
    TALKER = 6  #: the gateway is addressed to talk
    LISTENER = 7  #: the gateway is addressed to listen
    BUS_ADDRESS = 8  #: the gateway's bus address


class Reason(enum.IntFlag):
    """Why a device_read ended (several may be set)."""

    NONE = 0
    REQCNT = 1  #: requestSize bytes were transferred
    CHR = 2  #: the termination character was seen
    END = 4  #: the message ended (EOI / END)


class ErrorCode(enum.IntEnum):
    """Device_ErrorCode values."""

    NO_ERROR = 0
    SYNTAX_ERROR = 1
    DEVICE_NOT_ACCESSIBLE = 3
    INVALID_LINK_IDENTIFIER = 4
    PARAMETER_ERROR = 5
    CHANNEL_NOT_ESTABLISHED = 6
    OPERATION_NOT_SUPPORTED = 8
    OUT_OF_RESOURCES = 9
    DEVICE_LOCKED_BY_ANOTHER_LINK = 11
    NO_LOCK_HELD_BY_THIS_LINK = 12
    IO_TIMEOUT = 15
    IO_ERROR = 17
    INVALID_ADDRESS = 21
    ABORT = 23
    CHANNEL_ALREADY_ESTABLISHED = 29

    @property
    def description(self) -> str:
        """The name as words: ``device locked by another link``."""
        return self.name.lower().replace("_", " ")


_ERRORS: Final[dict[int, type[AiotmcError]]] = {
    ErrorCode.SYNTAX_ERROR: LocalProtocolError,
    ErrorCode.DEVICE_NOT_ACCESSIBLE: ConnectionLostError,
    ErrorCode.INVALID_LINK_IDENTIFIER: SessionBrokenError,
    ErrorCode.PARAMETER_ERROR: LocalProtocolError,
    ErrorCode.CHANNEL_NOT_ESTABLISHED: LocalProtocolError,
    ErrorCode.OPERATION_NOT_SUPPORTED: UnsupportedOperation,
    ErrorCode.OUT_OF_RESOURCES: TransportError,
    ErrorCode.DEVICE_LOCKED_BY_ANOTHER_LINK: ResourceBusyError,
    ErrorCode.NO_LOCK_HELD_BY_THIS_LINK: LocalProtocolError,
    ErrorCode.IO_TIMEOUT: ReadTimeout,
    ErrorCode.IO_ERROR: TransportError,
    ErrorCode.INVALID_ADDRESS: ResourceNotFoundError,
    ErrorCode.ABORT: TransportError,
    ErrorCode.CHANNEL_ALREADY_ESTABLISHED: LocalProtocolError,
}


def error_for(code: int, operation: str, *, resource: str | None = None) -> AiotmcError:
    """The aiotmc exception for VXI-11 error ``code`` returned by ``operation``.

    Timeouts are :class:`~aiotmc.WriteTimeout` for device_write, else
    :class:`~aiotmc.ReadTimeout`; a device locked by another link is
    :class:`~aiotmc.ResourceBusyError`; an invalid link id is
    :class:`~aiotmc.SessionBrokenError` (reopen); unknown codes are
    :class:`~aiotmc.RemoteProtocolError`.
    """
    try:
        name = ErrorCode(code).description
    except ValueError:
        name = "unknown error code"
    text = f"{operation} failed: VXI-11 error {code} ({name})"
    if code == ErrorCode.IO_TIMEOUT and operation == "device_write":
        cls: type[AiotmcError] = WriteTimeout
    elif code == ErrorCode.DEVICE_NOT_ACCESSIBLE and operation == "create_link":
        cls = ResourceNotFoundError
    else:
        cls = _ERRORS.get(code, RemoteProtocolError)
    if issubclass(cls, TransportError):
        return cls(text, resource=resource)
    if resource:
        text = f"{resource}: {text}"
    return cls(text)


# -- structures ------------------------------------------------------------------------------


_FIXED: Final = {"int": "i", "uint": "I", "bool": "I"}


@dataclass(frozen=True, slots=True)
class _Plan:
    """How a structure is laid out: leading fixed-size fields (one ``struct``), then at
    most one variable-length field (opaque or string) at the end."""

    head: struct.Struct
    bools: tuple[int, ...]  # positions of bool fields among the fixed ones
    names: tuple[str, ...]  # dataclass field names, in order
    tail: str | None  # "opaque", "string" or None
    tail_limit: int


_plans: dict[type, _Plan] = {}


def _plan(cls: type[_Struct]) -> _Plan:
    plan = _plans.get(cls)
    if plan is not None:
        return plan
    kinds = cls._xdr
    names = tuple(f.name for f in fields(cls))  # type: ignore[arg-type]
    fixed = 0
    while fixed < len(kinds) and kinds[fixed] in _FIXED:
        fixed += 1
    if len(kinds) - fixed > 1:
        raise TypeError(f"{cls.__name__}: only the last field may have a variable length")
    tail = kinds[fixed] if fixed < len(kinds) else None
    plan = _Plan(
        head=struct.Struct(">" + "".join(_FIXED[k] for k in kinds[:fixed])),
        bools=tuple(i for i, k in enumerate(kinds[:fixed]) if k == "bool"),
        names=names,
        tail=tail,
        tail_limit=cls._limits.get(names[-1], 0xFFFFFFFF) if tail else 0,
    )
    _plans[cls] = plan
    return plan


class _Struct:
    """A VXI-11 structure: ``_xdr`` gives the XDR type of each dataclass field in order
    (fixed-size fields first, at most one opaque or string field, last)."""

    __slots__ = ()
    _xdr: ClassVar[tuple[str, ...]] = ()
    _limits: ClassVar[dict[str, int]] = {}

    def encode(self) -> bytes:
        """The XDR encoding."""
        plan = _plans.get(type(self)) or _plan(type(self))
        values = [getattr(self, name) for name in plan.names]
        for i in plan.bools:
            values[i] = 1 if values[i] else 0
        tail = values.pop() if plan.tail else None
        try:
            head = plan.head.pack(*values)
        except struct.error as exc:
            raise LocalProtocolError(
                f"{type(self).__name__}: XDR value out of range: {exc}"
            ) from None
        if tail is None:
            return head
        p = Packer()
        if plan.tail == "opaque":
            p.pack_opaque(tail, max_size=plan.tail_limit)
        else:
            p.pack_string(tail, max_size=plan.tail_limit)
        return head + p.getvalue()

    @classmethod
    def decode(cls, data: BytesLike) -> Self:
        """Decode from XDR; RemoteProtocolError when truncated or malformed."""
        plan = _plans.get(cls) or _plan(cls)
        head = plan.head
        try:
            values: list[Any] = list(head.unpack_from(data))
        except struct.error:
            size = len(memoryview(data).cast("B"))
            raise RemoteProtocolError(
                f"truncated XDR data: {cls.__name__} needs {head.size} bytes, got {size}"
            ) from None
        for i in plan.bools:
            if values[i] > 1:
                raise RemoteProtocolError(f"XDR bool must be 0 or 1, got {values[i]}")
            values[i] = values[i] == 1
        if plan.tail is not None:
            u = Unpacker(data)
            u.skip(head.size)
            if plan.tail == "opaque":
                values.append(u.unpack_opaque_view(max_size=plan.tail_limit))
            else:
                values.append(u.unpack_string(max_size=plan.tail_limit))
        return cls(*values)


@dataclass(frozen=True, slots=True)
class DeviceLink(_Struct):
    """A bare link id (device_unlock, destroy_link, device_abort)."""

    _xdr: ClassVar[tuple[str, ...]] = ("int",)
    lid: int


@dataclass(frozen=True, slots=True)
class DeviceError(_Struct):
    """A bare error code (most results)."""

    _xdr: ClassVar[tuple[str, ...]] = ("int",)
    error: int


@dataclass(frozen=True, slots=True)
class CreateLinkParms(_Struct):
    """create_link arguments; ``device`` is ``inst0``, ``gpib0,5``..."""

    _xdr: ClassVar[tuple[str, ...]] = ("int", "bool", "uint", "string")
    client_id: int
    lock_device: bool
    lock_timeout: int  #: ms
    device: str


@dataclass(frozen=True, slots=True)
class CreateLinkResp(_Struct):
    """create_link results (link id 0 is valid)."""

    _xdr: ClassVar[tuple[str, ...]] = ("int", "int", "uint", "uint")
    error: int
    lid: int
    abort_port: int
    max_recv_size: int


@dataclass(frozen=True, slots=True)
class DeviceWriteParms(_Struct):
    """device_write arguments."""

    _xdr: ClassVar[tuple[str, ...]] = ("int", "uint", "uint", "int", "opaque")
    lid: int
    io_timeout: int  #: ms
    lock_timeout: int  #: ms
    flags: int
    data: BytesLike


_WRITE_HEAD: Final = struct.Struct(">iIIiI")


def device_write_head(lid: int, io_timeout: int, lock_timeout: int, flags: int, size: int) -> bytes:
    """device_write arguments up to the data (then ``size`` data bytes and padding)."""
    return _WRITE_HEAD.pack(lid, io_timeout, lock_timeout, flags, size)


@dataclass(frozen=True, slots=True)
class DeviceWriteResp(_Struct):
    """device_write results: how many bytes the device took."""

    _xdr: ClassVar[tuple[str, ...]] = ("int", "uint")
    error: int
    size: int


@dataclass(frozen=True, slots=True)
class DeviceReadParms(_Struct):
    """device_read arguments."""

    _xdr: ClassVar[tuple[str, ...]] = ("int", "uint", "uint", "uint", "int", "int")
    lid: int
    request_size: int
    io_timeout: int  #: ms
    lock_timeout: int  #: ms
    flags: int
    term_char: int


@dataclass(frozen=True, slots=True)
class DeviceReadResp(_Struct):
    """device_read results: ``reason`` is a :class:`Reason` bit set."""

    _xdr: ClassVar[tuple[str, ...]] = ("int", "int", "opaque")
    error: int
    reason: int
    data: BytesLike


@dataclass(frozen=True, slots=True)
class DeviceReadStbResp(_Struct):
    """device_readstb results."""

    _xdr: ClassVar[tuple[str, ...]] = ("int", "uint")
    error: int
    stb: int


@dataclass(frozen=True, slots=True)
class DeviceGenericParms(_Struct):
    """Arguments of readstb, trigger, clear, remote, local."""

    _xdr: ClassVar[tuple[str, ...]] = ("int", "int", "uint", "uint")
    lid: int
    flags: int
    lock_timeout: int  #: ms
    io_timeout: int  #: ms


@dataclass(frozen=True, slots=True)
class DeviceLockParms(_Struct):
    """device_lock arguments."""

    _xdr: ClassVar[tuple[str, ...]] = ("int", "int", "uint")
    lid: int
    flags: int
    lock_timeout: int  #: ms


@dataclass(frozen=True, slots=True)
class DeviceEnableSrqParms(_Struct):
    """device_enable_srq arguments (``handle`` at most 40 bytes)."""

    _xdr: ClassVar[tuple[str, ...]] = ("int", "bool", "opaque")
    _limits: ClassVar[dict[str, int]] = {"handle": HANDLE_MAX}
    lid: int
    enable: bool
    handle: BytesLike


@dataclass(frozen=True, slots=True)
class DeviceDocmdParms(_Struct):
    """device_docmd arguments (VXI-11.2 gateway bus commands)."""

    _xdr: ClassVar[tuple[str, ...]] = ("int", "int", "uint", "uint", "int", "bool", "int", "opaque")
    lid: int
    flags: int
    io_timeout: int  #: ms
    lock_timeout: int  #: ms
    cmd: int
    network_order: bool
    datasize: int
    data_in: BytesLike


@dataclass(frozen=True, slots=True)
class DeviceDocmdResp(_Struct):
    """device_docmd results."""

    _xdr: ClassVar[tuple[str, ...]] = ("int", "opaque")
    error: int
    data_out: BytesLike


@dataclass(frozen=True, slots=True)
class DeviceRemoteFunc(_Struct):
    """create_intr_chan arguments: where the device connects for interrupts."""

    _xdr: ClassVar[tuple[str, ...]] = ("uint", "uint", "uint", "uint", "int")
    host_addr: int  #: IPv4 address as an integer
    host_port: int
    prog_num: int
    prog_vers: int
    prog_family: int  #: DEVICE_TCP (0) or DEVICE_UDP (1)


@dataclass(frozen=True, slots=True)
class DeviceSrqParms(_Struct):
    """device_intr_srq arguments (one-way: never answered)."""

    _xdr: ClassVar[tuple[str, ...]] = ("opaque",)
    _limits: ClassVar[dict[str, int]] = {"handle": HANDLE_MAX}
    handle: BytesLike
