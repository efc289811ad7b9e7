"""USBTMC 1.0 host side, sans-IO: bulk framing, bTags, class requests, capabilities.

Theory of operation (h11 style). :class:`UsbtmcConnection` never does I/O and never
looks at a clock. The transport asks it for bytes and control requests and feeds back
what the device sent:

* ``send_message(data, end=...)`` returns the DEV_DEP_MSG_OUT transfers to write, one per
  ``max_transfer_size`` chunk (EOM only on the last, zero padding to 4 bytes); never one
  header per packet.
* ``request_response(max_bytes)`` returns the REQUEST_DEV_DEP_MSG_IN to write. Then, until
  :class:`EndOfMessage`: ``next_event()``; on :data:`NEED_DATA` read
  ``next_read_size()`` bytes from bulk-IN and ``receive_bulk_in(data)``; on
  :class:`ResponseData` use ``data``; on :class:`NeedRequest` call ``request_response``
  again (the response continues in another transfer).
* Class requests are data: methods return :class:`~aiotmc.protocol.events.ControlRequest`
  values, module functions parse the replies.

A read ends a USB transfer when it is short (fewer bytes than asked, possibly zero).
The connection sizes reads so that a well-behaved device always ends a transfer inside
one read, and copes with the quirks in :class:`~aiotmc.protocol.quirks.Quirks`.

Every state change happens through :data:`_TRANSITIONS` below. A receive error moves the
connection to the sticky ``ERROR`` state; the transport then runs the abort (or clear)
sequence and calls :meth:`UsbtmcConnection.reset`.

Errors: :class:`~aiotmc.LocalProtocolError` when the caller breaks the rules,
:class:`~aiotmc.RemoteProtocolError` when the device does. Anything else is a bug.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final, TypeAlias

from .._exceptions import LocalProtocolError, RemoteProtocolError
from .._types import BytesLike
from .events import ControlRequest
from .ieee4882 import parse_block_header
from .quirks import NO_QUIRKS, Quirks
from .scpi import NEED_DATA

__all__ = [
    "DEFAULT_MAX_TRANSFER_SIZE",
    "HEADER_SIZE",
    "NEED_DATA",
    "BulkHeader",
    "CheckAbortReply",
    "CheckClearReply",
    "EndOfMessage",
    "InitiateAbortReply",
    "MsgID",
    "NeedRequest",
    "ResponseData",
    "UsbtmcCapabilities",
    "UsbtmcConnection",
    "UsbtmcRequest",
    "UsbtmcState",
    "UsbtmcStatus",
    "check_abort_bulk_in_status_request",
    "check_abort_bulk_out_status_request",
    "check_clear_status_request",
    "clear_feature_endpoint_halt_request",
    "get_capabilities_request",
    "indicator_pulse_request",
    "initiate_abort_bulk_in_request",
    "initiate_abort_bulk_out_request",
    "initiate_clear_request",
    "pack_header",
    "parse_capabilities",
    "parse_check_abort_bulk_in",
    "parse_check_abort_bulk_out",
    "parse_check_clear_status",
    "parse_initiate_abort",
    "parse_status",
    "unpack_header",
]


HEADER_SIZE: Final = 12
"""Bytes in every bulk header."""

DEFAULT_MAX_TRANSFER_SIZE: Final = 1 << 20
"""Payload bytes per DEV_DEP_MSG_OUT transfer and per request, unless configured."""

_MAX_U32: Final = 0xFFFF_FFFF
_EOM: Final = 0x01
_TERM_CHAR: Final = 0x02
_HEADER: Final = struct.Struct("<BBBxIBB2x")
_SNIFF: Final = 11  # longest IEEE 488.2 block header: '#9' + 9 digits


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
        return bool(self.attributes & _EOM)

    @property
    def term_char_set(self) -> bool:
        """bmTransferAttributes bit 1 (TermCharEnabled / ended on TermChar)."""
        return bool(self.attributes & _TERM_CHAR)


def pack_header(
    msg_id: int, tag: int, transfer_size: int, attributes: int = 0, term_char: int = 0
) -> bytes:
    """Encode a bulk header (bTagInverse computed here)."""
    if not 1 <= tag <= 255:
        raise LocalProtocolError(f"bTag must be 1..255, got {tag}")
    if not 0 <= transfer_size <= _MAX_U32:
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


# -- events ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResponseData:
    """Payload bytes of the response message, in order (a view into the received read)."""

    data: memoryview


@dataclass(frozen=True, slots=True)
class NeedRequest:
    """A transfer ended without EOM: call ``request_response`` for the rest.

    ``term_char`` is set when the transfer ended on the requested TermChar.
    """

    term_char: bool = False


@dataclass(frozen=True, slots=True)
class EndOfMessage:
    """The response message is complete (``term_char``: the last transfer ended on it)."""

    term_char: bool = False


Event: TypeAlias = ResponseData | NeedRequest | EndOfMessage

_END_OF_MESSAGE: Final = EndOfMessage()
_NEED_REQUEST: Final = NeedRequest()


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


# -- control requests and their replies ----------------------------------------------------


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


def initiate_abort_bulk_out_request(tag: int, endpoint: int) -> ControlRequest:
    """INITIATE_ABORT_BULK_OUT for the transfer with ``tag`` on ``endpoint``."""
    return ControlRequest(
        request_type=REQUEST_TYPE_ENDPOINT,
        request=UsbtmcRequest.INITIATE_ABORT_BULK_OUT,
        value=tag,
        index=endpoint,
        length=2,
    )


def check_abort_bulk_out_status_request(endpoint: int) -> ControlRequest:
    """CHECK_ABORT_BULK_OUT_STATUS."""
    return ControlRequest(
        request_type=REQUEST_TYPE_ENDPOINT,
        request=UsbtmcRequest.CHECK_ABORT_BULK_OUT_STATUS,
        value=0,
        index=endpoint,
        length=8,
    )


def initiate_abort_bulk_in_request(tag: int, endpoint: int) -> ControlRequest:
    """INITIATE_ABORT_BULK_IN for the response requested with ``tag``."""
    return ControlRequest(
        request_type=REQUEST_TYPE_ENDPOINT,
        request=UsbtmcRequest.INITIATE_ABORT_BULK_IN,
        value=tag,
        index=endpoint,
        length=2,
    )


def check_abort_bulk_in_status_request(endpoint: int) -> ControlRequest:
    """CHECK_ABORT_BULK_IN_STATUS."""
    return ControlRequest(
        request_type=REQUEST_TYPE_ENDPOINT,
        request=UsbtmcRequest.CHECK_ABORT_BULK_IN_STATUS,
        value=0,
        index=endpoint,
        length=8,
    )


def initiate_clear_request(interface: int) -> ControlRequest:
    """INITIATE_CLEAR."""
    return ControlRequest(
        request_type=REQUEST_TYPE_INTERFACE,
        request=UsbtmcRequest.INITIATE_CLEAR,
        value=0,
        index=interface,
        length=1,
    )


def check_clear_status_request(interface: int) -> ControlRequest:
    """CHECK_CLEAR_STATUS."""
    return ControlRequest(
        request_type=REQUEST_TYPE_INTERFACE,
        request=UsbtmcRequest.CHECK_CLEAR_STATUS,
        value=0,
        index=interface,
        length=2,
    )


def get_capabilities_request(interface: int) -> ControlRequest:
    """GET_CAPABILITIES (0x18 bytes)."""
    return ControlRequest(
        request_type=REQUEST_TYPE_INTERFACE,
        request=UsbtmcRequest.GET_CAPABILITIES,
        value=0,
        index=interface,
        length=0x18,
    )


def indicator_pulse_request(interface: int) -> ControlRequest:
    """INDICATOR_PULSE (blink the device's activity light)."""
    return ControlRequest(
        request_type=REQUEST_TYPE_INTERFACE,
        request=UsbtmcRequest.INDICATOR_PULSE,
        value=0,
        index=interface,
        length=1,
    )


def clear_feature_endpoint_halt_request(endpoint: int) -> ControlRequest:
    """Standard CLEAR_FEATURE(ENDPOINT_HALT) for ``endpoint`` (ports offer ``clear_halt``)."""
    return ControlRequest(request_type=0x02, request=0x01, value=0, index=endpoint, length=0)


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


# -- the state machine ----------------------------------------------------------------------


class UsbtmcState(enum.Enum):
    """Host-side session state."""

    IDLE = "IDLE"  #: nothing in progress
    SENDING = "SENDING"  #: a message was started with end=False; more of it must follow
    REQUESTED = "REQUESTED"  #: a REQUEST_DEV_DEP_MSG_IN was sent; a transfer header is due
    RECEIVING = "RECEIVING"  #: inside a DEV_DEP_MSG_IN transfer
    PARTIAL = "PARTIAL"  #: a transfer ended without EOM; request again for the rest
    ABORTING = "ABORTING"  #: an abort or clear sequence is running; ends with reset()
    ERROR = "ERROR"  #: the device broke the protocol; sticky until reset()


class _Ev(enum.Enum):
    SEND_PART = enum.auto()
    SEND_END = enum.auto()
    TRIGGER = enum.auto()
    REQUEST = enum.auto()
    HEADER = enum.auto()
    TRANSFER_END = enum.auto()
    MESSAGE_END = enum.auto()
    ABORT = enum.auto()
    RESET = enum.auto()


_S = UsbtmcState
_TRANSITIONS: Final[dict[UsbtmcState, dict[_Ev, UsbtmcState]]] = {
    _S.IDLE: {
        _Ev.SEND_PART: _S.SENDING,
        _Ev.SEND_END: _S.IDLE,
        _Ev.TRIGGER: _S.IDLE,
        _Ev.REQUEST: _S.REQUESTED,
        _Ev.ABORT: _S.ABORTING,
        _Ev.RESET: _S.IDLE,
    },
    _S.SENDING: {
        _Ev.SEND_PART: _S.SENDING,
        _Ev.SEND_END: _S.IDLE,
        _Ev.ABORT: _S.ABORTING,
        _Ev.RESET: _S.IDLE,
    },
    _S.REQUESTED: {_Ev.HEADER: _S.RECEIVING, _Ev.ABORT: _S.ABORTING, _Ev.RESET: _S.IDLE},
    _S.RECEIVING: {
        _Ev.TRANSFER_END: _S.PARTIAL,
        _Ev.MESSAGE_END: _S.IDLE,
        _Ev.ABORT: _S.ABORTING,
        _Ev.RESET: _S.IDLE,
    },
    # A new message may follow an unfinished response: the device discards the rest.
    _S.PARTIAL: {
        _Ev.REQUEST: _S.REQUESTED,
        _Ev.SEND_PART: _S.SENDING,
        _Ev.SEND_END: _S.IDLE,
        _Ev.TRIGGER: _S.IDLE,
        _Ev.ABORT: _S.ABORTING,
        _Ev.RESET: _S.IDLE,
    },
    _S.ABORTING: {_Ev.ABORT: _S.ABORTING, _Ev.RESET: _S.IDLE},
    _S.ERROR: {_Ev.ABORT: _S.ABORTING, _Ev.RESET: _S.IDLE},
}


def _round_up(size: int, packet: int) -> int:
    return -(-size // packet) * packet


def _pad(size: int) -> int:
    return -size % 4


class UsbtmcConnection:
    """The host side of one USBTMC interface (see the module docstring for the loop).

    ``max_transfer_size`` bounds the payload of each DEV_DEP_MSG_OUT transfer and the
    TransferSize of each request (quirks may lower it). ``capabilities`` can be given
    now or learnt later with :meth:`receive_capabilities`. ``first_read_size`` bounds the
    first bulk-IN read of a transfer (whose length is unknown until its header arrives):
    small answers fit in it, the rest of a large transfer is then read in one read.
    """

    def __init__(
        self,
        *,
        interface: int = 0,
        bulk_out_endpoint: int = 0x01,
        bulk_in_endpoint: int = 0x82,
        max_packet_size: int = 512,
        max_transfer_size: int = DEFAULT_MAX_TRANSFER_SIZE,
        quirks: Quirks = NO_QUIRKS,
        capabilities: UsbtmcCapabilities | None = None,
        first_read_size: int = 16 * 1024,
    ) -> None:
        if max_packet_size < 1:
            raise LocalProtocolError(f"max_packet_size must be positive, got {max_packet_size}")
        if max_transfer_size < 1:
            raise LocalProtocolError(f"max_transfer_size must be positive, got {max_transfer_size}")
        self.interface = interface
        self.bulk_out_endpoint = bulk_out_endpoint
        self.bulk_in_endpoint = bulk_in_endpoint
        self.max_packet_size = max_packet_size
        self.quirks = quirks
        self._capabilities = capabilities
        out_limit = quirks.out_transfer_limit
        self._out_chunk = min(max_transfer_size, out_limit) if out_limit else max_transfer_size
        in_limit = max_transfer_size
        if quirks.max_transfer_size:
            in_limit = min(in_limit, quirks.max_transfer_size)
        self._in_chunk = in_limit
        self._read_cap = _round_up(HEADER_SIZE + in_limit + 4, max_packet_size)
        self._first_read = _round_up(max(first_read_size, 1), max_packet_size)
        self._block_aware = (
            quirks.transfer_size_wrong_for_blocks
            or quirks.eom_unreliable
            or quirks.transfer_size_includes_padding
        )
        self._state = UsbtmcState.IDLE
        self._tag = 0
        self._out_tag = 0
        self._in_tag = 0
        # receive side: the current read
        self._buf: memoryview | None = None
        self._pos = 0
        self._asked = 0  # size handed out by next_read_size()
        self._short = False
        self._zlp_allowance = 1  # a stale zero-length packet may precede the first header
        self._empty_retry_left = 0
        self._header = bytearray()
        # the current request / transfer
        self._requested = 0
        self._t_left = 0  # payload bytes of this transfer still to come
        self._t_pad = 0  # alignment bytes after the payload still to come
        self._t_total = 0  # expected transfer length, header included
        self._t_received = 0  # bytes of this transfer consumed
        self._t_attributes = 0
        self._t_optional_term = False  # block-trust: a terminator may follow the block
        self._t_trusting_block = False
        self._draining = False  # discard the rest of the transfer up to a short packet
        # the current message
        self._m_received = 0
        self._m_sniff: bytearray | None = None
        self._m_block_end: int | None = None
        self._m_last = -1

    # -- introspection ---------------------------------------------------------------------

    @property
    def state(self) -> UsbtmcState:
        """The current :class:`UsbtmcState`."""
        return self._state

    @property
    def last_btag(self) -> int:
        """The bTag used last (0 before the first transfer)."""
        return self._tag

    @property
    def out_tag(self) -> int:
        """bTag of the last DEV_DEP_MSG_OUT or TRIGGER transfer (for abort bulk-OUT)."""
        return self._out_tag

    @property
    def in_tag(self) -> int:
        """bTag of the last REQUEST_DEV_DEP_MSG_IN (for abort bulk-IN)."""
        return self._in_tag

    @property
    def capabilities(self) -> UsbtmcCapabilities | None:
        """What GET_CAPABILITIES said (after quirks), or None if not asked yet."""
        return self._capabilities

    def _move(self, event: _Ev) -> None:
        new = _TRANSITIONS[self._state].get(event)
        if new is None:
            raise LocalProtocolError(f"cannot {event.name.lower()} in state {self._state.name}")
        self._state = new

    def _next_tag(self) -> int:
        self._tag = self._tag % 255 + 1
        return self._tag

    # -- sending -----------------------------------------------------------------------------

    def send_message(
        self, data: BytesLike | Sequence[BytesLike], *, end: bool = True
    ) -> list[bytes]:
        """The DEV_DEP_MSG_OUT transfers carrying ``data`` (one buffer or several parts).

        One transfer per ``max_transfer_size`` chunk, EOM on the last when ``end``.
        ``end=False`` with no data sends nothing. Raises LocalProtocolError for an empty
        message with ``end=True`` (TransferSize 0 is not allowed) or in a wrong state.
        """
        if isinstance(data, (bytes, bytearray, memoryview)):
            views = [memoryview(data).cast("B")]
        else:
            views = [memoryview(part).cast("B") for part in data]
        views = [v for v in views if len(v)]
        total = sum(len(v) for v in views)
        if total == 0:
            if end:
                raise LocalProtocolError("USBTMC cannot send an empty message (TransferSize 0)")
            if _Ev.SEND_PART not in _TRANSITIONS[self._state]:
                raise LocalProtocolError(f"cannot send in state {self._state.name}")
            return []
        self._move(_Ev.SEND_END if end else _Ev.SEND_PART)
        chunk = self._out_chunk
        transfers: list[bytes] = []
        index, offset = 0, 0
        remaining = total
        while remaining:
            size = min(chunk, remaining)
            remaining -= size
            attributes = _EOM if end and not remaining else 0
            tag = self._next_tag()
            pieces: list[BytesLike] = [pack_header(MsgID.DEV_DEP_MSG_OUT, tag, size, attributes)]
            need = size
            while need:
                view = views[index]
                take = min(need, len(view) - offset)
                pieces.append(view[offset : offset + take])
                need -= take
                offset += take
                if offset == len(view):
                    index, offset = index + 1, 0
            pad = _pad(size)
            if pad:
                pieces.append(b"\0" * pad)
            transfers.append(b"".join(pieces))
            self._out_tag = tag
        return transfers

    def trigger(self) -> bytes:
        """The USB488 TRIGGER bulk message (header only)."""
        self._move(_Ev.TRIGGER)
        tag = self._next_tag()
        self._out_tag = tag
        return pack_header(MsgID.TRIGGER, tag, 0)

    # -- receiving ---------------------------------------------------------------------------

    def request_response(self, max_bytes: int, *, term_char: int | None = None) -> bytes:
        """A REQUEST_DEV_DEP_MSG_IN for up to ``max_bytes`` (capped per transfer).

        ``term_char`` asks the device to end the transfer after that byte; it is only
        sent when the capabilities say the device supports TermChar.
        """
        if max_bytes < 1:
            raise LocalProtocolError(f"max_bytes must be positive, got {max_bytes}")
        new_message = self._state is UsbtmcState.IDLE
        self._move(_Ev.REQUEST)
        if self.quirks.one_request_per_response:
            size = min(max_bytes, _MAX_U32)
            if self.quirks.max_transfer_size:
                size = min(size, self.quirks.max_transfer_size)
        else:
            size = min(max_bytes, self._in_chunk)
        attributes = 0
        tc = 0
        caps = self._capabilities
        if term_char is not None and caps is not None and caps.term_char:
            attributes, tc = _TERM_CHAR, term_char & 0xFF
        tag = self._next_tag()
        self._in_tag = tag
        self._requested = size
        self._empty_retry_left = 1 if self.quirks.empty_first_bulk_in_retry else 0
        self._header.clear()
        if new_message:
            self._reset_message()
        return pack_header(MsgID.REQUEST_DEV_DEP_MSG_IN, tag, size, attributes, tc)

    def _reset_message(self) -> None:
        self._m_received = 0
        self._m_sniff = bytearray() if self._block_aware else None
        self._m_block_end = None
        self._m_last = -1

    def next_read_size(self) -> int:
        """How many bytes the next bulk-IN read must ask for (a multiple of the packet size)."""
        mps = self.max_packet_size
        state = self._state
        if state is UsbtmcState.REQUESTED:
            if self._header or self.quirks.no_short_packet_on_exact_multiple:
                size = mps
            else:  # small answers end inside this read; big ones continue exactly sized
                size = min(HEADER_SIZE + self._requested + 4, self._first_read)
        elif state is UsbtmcState.RECEIVING:
            if self._draining:
                size = mps
            else:
                remaining = max(self._t_total - self._t_received, 1)
                # One byte more, so that a well-behaved transfer ends inside the read.
                exact = self.quirks.no_short_packet_on_exact_multiple
                size = remaining if exact else remaining + 1
        else:
            raise LocalProtocolError(f"no bulk-IN read is due in state {state.name}")
        size = _round_up(size, mps)
        size = max(mps, min(size, self._read_cap))
        self._asked = size
        return size

    @property
    def read_is_exact(self) -> bool:
        """The due bulk-IN read is the rest of a transfer whose TransferSize is trusted.

        Then it may be split into several bulk transfers in flight at once: the device
        ends it with a short packet exactly where :meth:`next_read_size` expects. False
        for the first read of a transfer and whenever a quirk makes TransferSize or the
        short packet unreliable.
        """
        quirks = self.quirks
        return (
            self._state is UsbtmcState.RECEIVING
            and not self._draining
            and not self._t_trusting_block
            and not self._block_aware
            and not quirks.one_request_per_response
            and not quirks.no_short_packet_on_exact_multiple
        )

    def receive_bulk_in(self, data: BytesLike) -> None:
        """Feed the result of one bulk-IN read of ``next_read_size()`` bytes."""
        if self._state not in (UsbtmcState.REQUESTED, UsbtmcState.RECEIVING):
            raise LocalProtocolError(f"no bulk-IN data expected in state {self._state.name}")
        if self._buf is not None and self._pos < len(self._buf):
            raise LocalProtocolError("the previous read has not been consumed (call next_event)")
        if not self._asked:
            raise LocalProtocolError("call next_read_size() before each bulk-IN read")
        view = memoryview(data).cast("B") if not isinstance(data, bytes) else memoryview(data)
        if len(view) > self._asked:
            self._fail()
            raise RemoteProtocolError(f"bulk-IN read returned {len(view)} > {self._asked} bytes")
        self._short = len(view) < self._asked or len(view) % self.max_packet_size != 0
        self._asked = 0
        self._buf = view
        self._pos = 0

    def next_event(self) -> Event | type[NEED_DATA]:
        """The next :class:`ResponseData`, :class:`NeedRequest`, :class:`EndOfMessage`, or
        :data:`NEED_DATA` (read bulk-IN and call :meth:`receive_bulk_in`).

        Raises RemoteProtocolError (and enters ``ERROR``) when the device breaks framing.
        """
        if self._state is UsbtmcState.ERROR:
            raise LocalProtocolError("the connection is in ERROR: abort or clear, then reset()")
        try:
            return self._next_event()
        except RemoteProtocolError:
            self._fail()
            raise

    def _fail(self) -> None:
        self._state = UsbtmcState.ERROR
        self._buf = None

    def _next_event(self) -> Event | type[NEED_DATA]:
        while True:
            state = self._state
            buf = self._buf
            if state is UsbtmcState.REQUESTED:
                if buf is None:
                    return NEED_DATA
                if len(buf) == 0:
                    self._empty_read()
                    continue
                if self._pos == len(buf):
                    self._buf = None
                    if self._short:
                        raise RemoteProtocolError(
                            f"transfer ended inside its header ({bytes(self._header).hex()})"
                        )
                    continue
                self._parse_header(buf)
                continue
            if state is not UsbtmcState.RECEIVING:
                raise LocalProtocolError(f"no response is being received (state {state.name})")
            if buf is None:
                return NEED_DATA
            avail = len(buf) - self._pos
            if self._t_left:
                if not avail:
                    self._buf = None
                    if self._short:
                        raise RemoteProtocolError(
                            f"transfer ended {self._t_left} bytes short of its TransferSize"
                        )
                    continue
                event = self._payload(buf, avail)
                if event is not None:
                    return event
                continue
            if self._t_optional_term:
                if not avail:
                    if self._short:
                        return self._end_transfer(full_read=False)
                    self._buf = None  # the read ended with the block: a terminator may follow
                    continue
                self._t_optional_term = False
                terminated = buf[self._pos] == self.quirks.terminator
                if terminated:
                    self._pos += 1
                    self._t_received += 1
                    self._m_received += 1
                    self._m_last = self.quirks.terminator
                self._t_pad = _pad(self._t_received)
                self._t_total = self._t_received + self._t_pad
                if terminated:
                    return ResponseData(buf[self._pos - 1 : self._pos])
                continue
            if self._t_pad and avail:
                take = min(self._t_pad, avail)
                self._t_pad -= take
                self._pos += take
                self._t_received += take
                avail -= take
            if avail:  # more alignment bytes than the 4-byte padding
                self._pos = len(buf)
                if self._short:
                    return self._end_transfer(full_read=False)
                self._draining = True
                self._buf = None
                continue
            if self._short:
                return self._end_transfer(full_read=False)
            if self._t_pad or self._draining:
                self._buf = None
                continue
            return self._end_transfer(full_read=True)

    def _empty_read(self) -> None:
        self._buf = None
        if self._header:
            raise RemoteProtocolError("zero-length packet inside a transfer header")
        if self._zlp_allowance:
            self._zlp_allowance -= 1
            return
        if self._empty_retry_left:
            self._empty_retry_left -= 1
            return
        raise RemoteProtocolError("empty bulk-IN transfer where a DEV_DEP_MSG_IN header was due")

    def _parse_header(self, buf: memoryview) -> None:
        need = HEADER_SIZE - len(self._header)
        if not self._header and len(buf) - self._pos >= HEADER_SIZE:
            raw = buf[self._pos : self._pos + HEADER_SIZE]
        else:
            self._header += buf[self._pos : self._pos + need]
            if len(self._header) < HEADER_SIZE:
                self._pos = len(buf)
                return
            raw = memoryview(bytes(self._header))
        header = unpack_header(raw)
        self._pos += min(need, HEADER_SIZE)
        self._header.clear()
        if header.msg_id != MsgID.DEV_DEP_MSG_IN and not self.quirks.msgid_unreliable:
            raise RemoteProtocolError(
                f"expected DEV_DEP_MSG_IN (MsgID 2), got MsgID {header.msg_id}"
            )
        if header.tag != self._in_tag:
            raise RemoteProtocolError(
                f"DEV_DEP_MSG_IN bTag {header.tag} does not match the request's bTag {self._in_tag}"
            )
        size = header.transfer_size
        trust_blocks = self.quirks.transfer_size_wrong_for_blocks
        if size > self._requested and not trust_blocks:
            raise RemoteProtocolError(
                f"device sent a {size}-byte transfer for a {self._requested}-byte request"
            )
        self._move(_Ev.HEADER)
        self._zlp_allowance = 0
        self._t_left = size
        self._t_pad = _pad(size)
        self._t_total = HEADER_SIZE + size + self._t_pad
        self._t_received = HEADER_SIZE
        self._t_attributes = header.attributes
        self._t_optional_term = False
        self._t_trusting_block = False
        self._draining = False
        if trust_blocks and header.eom and not self._m_received and self._m_sniff is not None:
            self._peek_block(buf)

    def _peek_block(self, buf: memoryview) -> None:
        """Block-trust: find the block header right after the transfer header."""
        head = bytes(buf[self._pos : self._pos + _SNIFF])
        if head[:1] != b"#":
            return
        try:
            header = parse_block_header(head, max_size=1 << 62)
        except RemoteProtocolError:
            return
        if header is None or header.payload_length is None:
            return
        self._m_sniff = None
        self._trust_block(header.header_length + header.payload_length)

    def _trust_block(self, end: int) -> int:
        """The transfer holds the block and maybe a terminator, whatever TransferSize said."""
        self._m_block_end = end
        left = max(end - self._m_received, 0)
        self._t_trusting_block = True
        self._t_left = left
        self._t_optional_term = True
        self._t_pad = 0
        self._t_total = _round_up(self._t_received + left + 1, 4)
        return left

    def _payload(self, buf: memoryview, avail: int) -> ResponseData | None:
        n = min(self._t_left, avail)
        sniff = self._m_sniff
        if sniff is not None:
            n = self._sniff(buf, n, avail)
        start = self._pos
        self._pos += n
        self._t_left -= n
        self._t_received += n
        view = buf[start : start + n]
        if (
            not self._t_left
            and self.quirks.transfer_size_includes_padding
            and (self._t_attributes & _EOM or self.quirks.eom_unreliable)
            and (self._m_block_end is None or self._m_received + n > self._m_block_end)
        ):
            view = self._strip_padding(view)
        size = len(view)
        if not size:
            return None
        self._m_received += size
        self._m_last = view[size - 1]
        return ResponseData(view)

    def _sniff(self, buf: memoryview, n: int, avail: int) -> int:
        """Look for a block header at the message start; may change the transfer length."""
        sniff = self._m_sniff
        assert sniff is not None
        take = min(n, _SNIFF - len(sniff))
        sniff += buf[self._pos : self._pos + take]
        if sniff[0] != 0x23:  # '#'
            self._m_sniff = None
            return n
        try:
            header = parse_block_header(sniff, max_size=1 << 62)
        except RemoteProtocolError:
            self._m_sniff = None  # not a block after all: plain text starting with '#'
            return n
        if header is None:
            if len(sniff) >= _SNIFF:
                self._m_sniff = None
            return n
        self._m_sniff = None
        if header.payload_length is None:
            return n  # '#0': ends at the terminator like text
        end = header.header_length + header.payload_length
        self._m_block_end = end
        if not (self.quirks.transfer_size_wrong_for_blocks and self._t_attributes & _EOM):
            return n
        return min(self._trust_block(end), avail)

    def _strip_padding(self, view: memoryview) -> memoryview:
        """Drop up to 3 NULs that follow the terminator at the end of a transfer."""
        size = len(view)
        nuls = 0
        while nuls < 3 and nuls < size and view[size - 1 - nuls] == 0:
            nuls += 1
        if nuls and nuls < size and view[size - 1 - nuls] == self.quirks.terminator:
            return view[: size - nuls]
        return view

    def _end_transfer(self, *, full_read: bool) -> NeedRequest | EndOfMessage:
        self._buf = None
        self._draining = False
        self._t_optional_term = False
        if full_read:
            self._zlp_allowance = 1  # the device may still send the terminating ZLP
        term_char = bool(self._t_attributes & _TERM_CHAR)
        quirks = self.quirks
        block_end = self._m_block_end
        if self._t_trusting_block or quirks.one_request_per_response:
            done = True
        elif quirks.eom_unreliable:
            # The terminator ends the message, but not one inside a definite block.
            inside = block_end is not None and self._m_received <= block_end
            done = not inside and self._m_last == quirks.terminator
        else:
            done = bool(self._t_attributes & _EOM)
        if done:
            self._move(_Ev.MESSAGE_END)
            return EndOfMessage(term_char) if term_char else _END_OF_MESSAGE
        self._move(_Ev.TRANSFER_END)
        return NeedRequest(term_char) if term_char else _NEED_REQUEST

    # -- class requests ------------------------------------------------------------------------

    def get_capabilities(self) -> ControlRequest:
        """GET_CAPABILITIES for this interface."""
        return get_capabilities_request(self.interface)

    def receive_capabilities(self, data: BytesLike) -> UsbtmcCapabilities:
        """Decode GET_CAPABILITIES, apply quirks (``remote_local_broken``) and keep it."""
        caps = parse_capabilities(data)
        if self.quirks.remote_local_broken and (caps.ren_control or caps.rl1):
            caps = replace(caps, ren_control=False, rl1=False)
        self._capabilities = caps
        return caps

    def indicator_pulse(self) -> ControlRequest:
        """INDICATOR_PULSE for this interface."""
        return indicator_pulse_request(self.interface)

    def initiate_abort_bulk_in(self, tag: int | None = None) -> ControlRequest:
        """INITIATE_ABORT_BULK_IN for ``tag`` (default: the last request's bTag)."""
        self._move(_Ev.ABORT)
        return initiate_abort_bulk_in_request(
            self._in_tag if tag is None else tag, self.bulk_in_endpoint
        )

    def check_abort_bulk_in_status(self) -> ControlRequest:
        """CHECK_ABORT_BULK_IN_STATUS."""
        self._move(_Ev.ABORT)
        return check_abort_bulk_in_status_request(self.bulk_in_endpoint)

    def initiate_abort_bulk_out(self, tag: int | None = None) -> ControlRequest:
        """INITIATE_ABORT_BULK_OUT for ``tag`` (default: the last OUT transfer's bTag)."""
        self._move(_Ev.ABORT)
        return initiate_abort_bulk_out_request(
            self._out_tag if tag is None else tag, self.bulk_out_endpoint
        )

    def check_abort_bulk_out_status(self) -> ControlRequest:
        """CHECK_ABORT_BULK_OUT_STATUS."""
        self._move(_Ev.ABORT)
        return check_abort_bulk_out_status_request(self.bulk_out_endpoint)

    def initiate_clear(self) -> ControlRequest:
        """INITIATE_CLEAR for this interface."""
        self._move(_Ev.ABORT)
        return initiate_clear_request(self.interface)

    def check_clear_status(self) -> ControlRequest:
        """CHECK_CLEAR_STATUS for this interface."""
        self._move(_Ev.ABORT)
        return check_clear_status_request(self.interface)

    def reset(self) -> None:
        """Back to IDLE after a completed abort or clear (or to start over).

        The next header may be preceded by one stale zero-length packet, which is skipped.
        """
        self._move(_Ev.RESET)
        self._buf = None
        self._asked = 0
        self._header.clear()
        self._t_left = self._t_pad = 0
        self._t_optional_term = False
        self._draining = False
        self._zlp_allowance = 1
        self._reset_message()
