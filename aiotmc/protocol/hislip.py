"""HiSLIP (IVI-6.1) wire format, sans-IO: headers, message types, reassembly, MessageIDs.

Every HiSLIP message is a 16-byte header (``"HS"``, message type u8, control code u8,
message parameter u32, payload length u64, network byte order) and a payload. This
module encodes and decodes them and reassembles messages from a byte stream without
ever sizing a buffer from the 64-bit length field: a length above the reader's limit is
a typed error before any byte of the payload is kept.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from .._exceptions import LocalProtocolError, RemoteProtocolError
from .._types import BytesLike

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_PORT",
    "FIRST_MESSAGE_ID",
    "HEADER",
    "HEADER_SIZE",
    "MAX_SUB_ADDRESS",
    "NO_MESSAGE_ID",
    "UNATTRIBUTED",
    "ErrorCode",
    "FatalCode",
    "Feature",
    "Header",
    "HislipError",
    "IdSource",
    "InitializeRequest",
    "InitializeResponse",
    "LockResult",
    "Message",
    "MessageIdCounter",
    "MessageTooLarge",
    "MessageType",
    "PayloadSink",
    "Reassembler",
    "data_messages",
    "decode_header",
    "decode_initialize",
    "decode_initialize_response",
    "decode_max_message_size",
    "encode",
    "encode_header",
    "encode_initialize",
    "encode_initialize_response",
    "encode_max_message_size",
    "negotiate_version",
    "raise_if_error",
]

DEFAULT_PORT: Final = 4880
HEADER: Final = struct.Struct("!2sBBIQ")
HEADER_SIZE: Final = 16
PROLOGUE: Final = b"HS"
FIRST_MESSAGE_ID: Final = 0xFFFFFF00  #: a client's first MessageID, and again after device clear
NO_MESSAGE_ID: Final = 0xFFFFFEFE  #: "nothing sent yet" in AsyncStatusQuery (§6.14)
UNATTRIBUTED: Final = 0xFFFFFFFF  #: a server's Data it cannot attribute to a message
DEFAULT_MAX_MESSAGE_SIZE: Final = 1 << 20  #: VISA's default (1 MiB)
MAX_SUB_ADDRESS: Final = 256  #: also the longest shared-lock name
_MASK32: Final = 0xFFFFFFFF
_U64: Final = struct.Struct("!Q")


class MessageType(enum.IntEnum):
    """HiSLIP message types (IVI-6.1 Table 4; 26-38 are 2.0)."""

    Initialize = 0
    InitializeResponse = 1
    FatalError = 2
    Error = 3
    AsyncLock = 4
    AsyncLockResponse = 5
    Data = 6
    DataEnd = 7
    DeviceClearComplete = 8
    DeviceClearAcknowledge = 9
    AsyncRemoteLocalControl = 10
    AsyncRemoteLocalResponse = 11
    Trigger = 12
    Interrupted = 13
    AsyncInterrupted = 14
    AsyncMaximumMessageSize = 15
    AsyncMaximumMessageSizeResponse = 16
    AsyncInitialize = 17
    AsyncInitializeResponse = 18
    AsyncDeviceClear = 19
    AsyncServiceRequest = 20
    AsyncStatusQuery = 21
    AsyncStatusResponse = 22
    AsyncDeviceClearAcknowledge = 23
    AsyncLockInfo = 24
    AsyncLockInfoResponse = 25
    GetDescriptors = 26
    GetDescriptorsResponse = 27
    StartTLS = 28
    AsyncStartTLS = 29
    AsyncStartTLSResponse = 30
    EndTLS = 31
    AsyncEndTLS = 32
    AsyncEndTLSResponse = 33
    GetSaslMechanismList = 34
    GetSaslMechanismListResponse = 35
    AuthenticationStart = 36
    AuthenticationExchange = 37
    AuthenticationResult = 38


class ErrorCode(enum.IntEnum):
    """Control codes of a (non-fatal) Error message."""

    UNIDENTIFIED = 0
    UNRECOGNIZED_MESSAGE_TYPE = 1
    UNRECOGNIZED_CONTROL_CODE = 2
    UNRECOGNIZED_VENDOR_DEFINED_MESSAGE = 3
    MESSAGE_TOO_LARGE = 4
    AUTHENTICATION_FAILED = 5


class FatalCode(enum.IntEnum):
    """Control codes of a FatalError message (both connections close after it)."""

    UNIDENTIFIED = 0
    POORLY_FORMED_HEADER = 1
    CONNECTION_WITHOUT_BOTH_CHANNELS = 2
    INVALID_INITIALIZATION_SEQUENCE = 3
    MAXIMUM_CLIENTS_EXCEEDED = 4
    SECURE_CONNECTION_FAILED = 5


class Feature(enum.IntFlag):
    """Feature bits (InitializeResponse, AsyncDeviceClearAcknowledge, DeviceClearComplete)."""

    NONE = 0
    OVERLAPPED = 0x01
    ENCRYPTION = 0x02  #: 2.0: secure connection mandatory
    INITIAL_ENCRYPTION = 0x04  #: 2.0: encrypt from the start


class LockResult(enum.IntEnum):
    """AsyncLockResponse control codes."""

    FAILURE = 0
    SUCCESS = 1
    SUCCESS_SHARED = 2
    ERROR = 3


class HislipError(RemoteProtocolError):
    """The peer sent an Error or FatalError message; ``code`` is its control code."""

    def __init__(self, message: str, *, code: int, fatal: bool) -> None:
        super().__init__(message)
        self.code = code
        self.fatal = fatal


class MessageTooLarge(RemoteProtocolError):
    """A header announced a payload above the reader's limit (nothing was allocated)."""


@dataclass(frozen=True, slots=True)
class Header:
    """A decoded 16-byte header. ``type`` is an int: vendor types (128-255) are legal."""

    type: int
    control: int
    param: int
    length: int


@dataclass(frozen=True, slots=True)
class Message:
    """One whole message: its header fields and payload."""

    type: int
    control: int
    param: int
    payload: bytes = b""


def encode_header(type_: int, control: int = 0, param: int = 0, length: int = 0) -> bytes:
    """The 16-byte header; raises :class:`LocalProtocolError` for out-of-range fields."""
    if not (0 <= type_ <= 255 and 0 <= control <= 255 and 0 <= param <= _MASK32):
        raise LocalProtocolError(f"HiSLIP header field out of range: {type_}, {control}, {param}")
    if not 0 <= length < 1 << 64:
        raise LocalProtocolError(f"HiSLIP payload length out of range: {length}")
    return HEADER.pack(PROLOGUE, type_, control, param, length)


def encode(type_: int, control: int = 0, param: int = 0, payload: BytesLike = b"") -> bytes:
    """A whole message as one ``bytes`` (for small messages; large ones send parts)."""
    return encode_header(type_, control, param, len(payload)) + bytes(payload)


def decode_header(data: BytesLike) -> Header:
    """Decode a 16-byte header; :class:`RemoteProtocolError` if it does not start "HS"."""
    if len(data) < HEADER_SIZE:
        raise RemoteProtocolError(f"HiSLIP header needs 16 bytes, got {len(data)}")
    prologue, type_, control, param, length = HEADER.unpack_from(data)
    if prologue != PROLOGUE:
        raise RemoteProtocolError(f"not a HiSLIP header (prologue {bytes(prologue)!r})")
    return Header(type_, control, param, length)


class PayloadSink(Protocol):
    """Where the reassembler puts large payloads of one answer (see :meth:`Reassembler.route`)."""

    def target(self, limit: int) -> memoryview:
        """A buffer for the next at most ``limit`` bytes."""
        ...

    def advance(self, count: int) -> None:
        """``count`` bytes were received into the last :meth:`target`."""
        ...

    def write(self, data: BytesLike) -> None:
        """Bytes that arrived elsewhere."""
        ...

    def abandon(self) -> None:
        """Discard the rest."""
        ...


class Reassembler:
    """Cut a byte stream into whole messages.

    Memory grows only with bytes fed in: a header's length is checked against
    ``max_payload`` (raising :class:`MessageTooLarge`) before any of its payload is kept,
    and the buffer holds at most one incomplete message plus what :meth:`feed` was given.
    A large payload (``direct_threshold`` bytes or more, its length checked first) gets
    its own buffer, which the reader may fill in place (:meth:`direct`, :meth:`advance`)
    and which becomes the message's payload without another copy.
    After an error the stream is out of step: the owner closes it.
    """

    __slots__ = (
        "_buffer",
        "_filled",
        "_header",
        "_payload",
        "_route_id",
        "_routed",
        "_sink",
        "_sink_left",
        "direct_threshold",
        "max_payload",
    )

    def __init__(self, max_payload: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self.max_payload = max_payload
        self.direct_threshold = 1 << 16
        self._buffer = bytearray()
        self._header: Header | None = None
        self._payload: bytearray | None = None  #: a large payload being filled
        self._filled = 0
        self._sink: PayloadSink | None = None
        self._route_id: int | None = None
        self._sink_left = 0  #: bytes of the current message still going to the sink
        self._routed = False  #: the current message goes to the sink

    def route(self, sink: PayloadSink, message_id: int) -> None:
        """Send the payloads of large Data/DataEnd messages with ``message_id`` to
        ``sink`` (their messages come out with an empty payload) until :meth:`unroute`."""
        self._sink, self._route_id = sink, message_id

    def unroute(self, *, abandon: bool = False) -> None:
        """Stop routing; a message being routed finishes into the sink (discarded there
        when ``abandon``)."""
        self._route_id = None
        if self._sink is not None:
            if abandon:
                self._sink.abandon()
            if not self._sink_left:
                self._sink = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as messages."""
        return len(self._buffer) + self._filled

    @property
    def idle(self) -> bool:
        """At a message boundary with nothing buffered: the next byte starts a header."""
        return self._header is None and not self._buffer

    @property
    def pending(self) -> Header | None:
        """The header of the message being reassembled, if its header is complete."""
        return self._header

    def feed(self, data: BytesLike) -> None:
        """Add received bytes."""
        if self._sink_left:
            assert self._sink is not None
            view = memoryview(data).cast("B")
            take = min(len(view), self._sink_left)
            self._sink.write(view[:take])
            self._sink_left -= take
            if take < len(view):
                self._buffer += view[take:]
            return
        payload = self._payload
        if payload is None:
            self._buffer += data
            return
        view = memoryview(data).cast("B")
        take = min(len(view), len(payload) - self._filled)
        payload[self._filled : self._filled + take] = view[:take]
        self._filled += take
        if take < len(view):
            self._buffer += view[take:]

    def direct(self) -> memoryview | None:
        """The unfilled rest of a large payload, to receive into in place (then call
        :meth:`advance`), or None."""
        if self._sink_left:
            assert self._sink is not None
            return self._sink.target(self._sink_left)
        payload = self._payload
        if payload is None or self._filled == len(payload):
            return None
        return memoryview(payload)[self._filled :]

    def advance(self, count: int) -> None:
        """``count`` bytes were written into :meth:`direct`'s view."""
        if self._sink_left:
            assert self._sink is not None
            self._sink.advance(count)
            self._sink_left -= count
            return
        self._filled += count

    def next_message(self) -> Message | None:
        """The next whole message, or None until more bytes arrive."""
        header = self._header
        if self._sink_left or (header is not None and self._routed):
            if self._sink_left:
                return None
            return self._routed_done(header)
        if self._payload is not None:
            assert header is not None
            if self._filled < len(self._payload):
                return None
            big, self._payload, self._filled, self._header = self._payload, None, 0, None
            # handed over without a copy: nobody else holds it, and payloads are only read
            return Message(header.type, header.control, header.param, big)  # type: ignore[arg-type]
        buffer = self._buffer
        if header is None:
            if len(buffer) < HEADER_SIZE:
                return None
            header = decode_header(buffer)
            if header.length > self.max_payload:
                raise MessageTooLarge(
                    f"HiSLIP message of type {header.type} announces {header.length} bytes,"
                    f" more than the limit of {self.max_payload}"
                )
            self._header = header
            if (
                self._route_id is not None
                and header.param == self._route_id
                and header.type in (MessageType.Data, MessageType.DataEnd)
                and header.length >= self.direct_threshold
            ):
                self._routed = True
                del buffer[:HEADER_SIZE]
                take = min(len(buffer), header.length)
                assert self._sink is not None
                self._sink.write(memoryview(buffer)[:take])
                del buffer[:take]
                self._sink_left = header.length - take
                return self.next_message()
            if header.length >= self.direct_threshold:
                self._payload = bytearray(header.length)  # bounded by max_payload above
                del buffer[:HEADER_SIZE]
                here = buffer[: header.length]
                del buffer[: len(here)]
                self._payload[: len(here)] = here
                self._filled = len(here)
                return self.next_message()
        end = HEADER_SIZE + header.length
        if len(buffer) < end:
            return None
        with memoryview(buffer) as view:
            payload = bytes(view[HEADER_SIZE:end])  # one copy, not two
        del buffer[:end]
        self._header = None
        return Message(header.type, header.control, header.param, payload)

    def _routed_done(self, header: Header | None) -> Message:
        assert header is not None
        self._header = None
        self._routed = False
        if self._route_id is None:
            self._sink = None  # unrouted meanwhile: this was its last message
        return Message(header.type, header.control, header.param, b"")

    def take_buffered(self) -> bytes:
        """Hand over the bytes received past the last whole message (a protocol switch
        such as StartTLS); raises :class:`RemoteProtocolError` inside a message."""
        if self._header is not None:
            raise RemoteProtocolError("the stream switched protocols inside a message")
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    def wants(self) -> int:
        """How many more bytes complete the current header or message (at least 1)."""
        if self._sink_left:
            return self._sink_left
        if self._payload is not None:
            return max(1, len(self._payload) - self._filled)
        if self._header is None:
            return max(1, HEADER_SIZE - len(self._buffer))
        return max(1, HEADER_SIZE + self._header.length - len(self._buffer))


# -- MessageIDs ------------------------------------------------------------------------------


class MessageIdCounter:
    """A client's MessageIDs (§3.1.2): start at 0xFFFFFF00, +2 per Data, DataEnd or
    Trigger, modulo 2**32, back to the start after device clear."""

    __slots__ = ("last", "next")

    def __init__(self) -> None:
        self.next = FIRST_MESSAGE_ID
        self.last = NO_MESSAGE_ID  #: the most recent MessageID sent (for status queries)

    def take(self) -> int:
        """The MessageID for the next message; advances the counter."""
        value = self.next
        self.last = value
        self.next = (value + 2) & _MASK32
        return value

    def reset(self) -> None:
        """After device clear."""
        self.next = FIRST_MESSAGE_ID
        self.last = NO_MESSAGE_ID


class IdSource(Protocol):
    """Where :func:`data_messages` takes MessageIDs from (a counter, or a fixed echo)."""

    def take(self) -> int:
        """The MessageID of the next message."""
        ...


def data_messages(
    parts: Sequence[BytesLike], *, max_payload: int, end: bool, ids: IdSource, rmt: bool
) -> list[tuple[bytes, list[memoryview]]]:
    """Split ``parts`` into Data messages of at most ``max_payload`` bytes each, the last
    one DataEnd when ``end``: ``(header, payload pieces)`` pairs, payload never copied.

    The RMT-delivered bit goes on the first message only. An empty message is one
    empty Data/DataEnd.
    """
    if max_payload < 1:
        raise LocalProtocolError(f"HiSLIP maximum payload must be positive, got {max_payload}")
    views = [memoryview(p).cast("B") for p in parts if len(p)]
    total = sum(len(v) for v in views)
    messages: list[tuple[bytes, list[memoryview]]] = []
    remaining = total
    index = 0
    offset = 0
    while True:
        size = min(remaining, max_payload)
        remaining -= size
        pieces: list[memoryview] = []
        need = size
        while need:
            view = views[index]
            take = min(need, len(view) - offset)
            pieces.append(view[offset : offset + take])
            need -= take
            offset += take
            if offset == len(view):
                index += 1
                offset = 0
        last = remaining == 0
        type_ = MessageType.DataEnd if last and end else MessageType.Data
        control = 1 if rmt and not messages else 0
        messages.append((encode_header(type_, control, ids.take(), size), pieces))
        if last:
            return messages


# -- Initialize and friends -----------------------------------------------------------------


def negotiate_version(client: tuple[int, int], server: tuple[int, int]) -> tuple[int, int]:
    """The protocol version both sides speak: the smaller one (§6.1)."""
    return min(client, server)


@dataclass(frozen=True, slots=True)
class InitializeRequest:
    """What a client's Initialize says."""

    version: tuple[int, int]
    vendor: bytes  #: two ASCII characters
    sub_address: str


@dataclass(frozen=True, slots=True)
class InitializeResponse:
    """What a server's InitializeResponse says."""

    version: tuple[int, int]
    session_id: int
    features: Feature


def encode_initialize(version: tuple[int, int], vendor: bytes, sub_address: str) -> bytes:
    """Initialize: version in the high 16 bits, 2-byte vendor id low, sub-address payload."""
    if len(vendor) != 2:
        raise LocalProtocolError(f"HiSLIP vendor id must be 2 bytes, got {vendor!r}")
    address = sub_address.encode("ascii")
    if len(address) > MAX_SUB_ADDRESS:
        raise LocalProtocolError(f"HiSLIP sub-address longer than {MAX_SUB_ADDRESS} bytes")
    param = (version[0] << 24) | (version[1] << 16) | (vendor[0] << 8) | vendor[1]
    return encode(MessageType.Initialize, 0, param, address)


def decode_initialize(message: Message) -> InitializeRequest:
    """Decode an Initialize (raises RemoteProtocolError for a bad one)."""
    if message.type != MessageType.Initialize:
        raise RemoteProtocolError(f"expected Initialize, got message type {message.type}")
    if len(message.payload) > MAX_SUB_ADDRESS:
        raise RemoteProtocolError("HiSLIP sub-address longer than 256 bytes")
    param = message.param
    vendor = bytes(((param >> 8) & 0xFF, param & 0xFF))
    try:
        address = message.payload.decode("ascii")
    except UnicodeDecodeError:
        raise RemoteProtocolError(f"sub-address is not ASCII: {message.payload!r}") from None
    return InitializeRequest(((param >> 24) & 0xFF, (param >> 16) & 0xFF), vendor, address)


def encode_initialize_response(
    version: tuple[int, int], session_id: int, features: Feature = Feature.NONE
) -> bytes:
    """InitializeResponse: negotiated version high, session id low, features in control."""
    if not 0 <= session_id <= 0xFFFF:
        raise LocalProtocolError(f"HiSLIP session id must fit 16 bits, got {session_id}")
    param = (version[0] << 24) | (version[1] << 16) | session_id
    return encode(MessageType.InitializeResponse, int(features), param)


def decode_initialize_response(message: Message) -> InitializeResponse:
    """Decode an InitializeResponse; an Error/FatalError becomes :class:`HislipError`."""
    raise_if_error(message)
    if message.type != MessageType.InitializeResponse:
        raise RemoteProtocolError(f"expected InitializeResponse, got message type {message.type}")
    param = message.param
    return InitializeResponse(
        ((param >> 24) & 0xFF, (param >> 16) & 0xFF), param & 0xFFFF, Feature(message.control & 7)
    )


def encode_max_message_size(type_: MessageType, size: int) -> bytes:
    """AsyncMaximumMessageSize or its Response: an 8-byte size payload."""
    return encode(type_, 0, 0, _U64.pack(size))


def decode_max_message_size(message: Message) -> int:
    """The size an AsyncMaximumMessageSize(Response) carries."""
    if len(message.payload) != 8:
        raise RemoteProtocolError(
            f"maximum message size payload must be 8 bytes, got {len(message.payload)}"
        )
    (size,) = _U64.unpack(message.payload)
    return int(size)


def raise_if_error(message: Message) -> None:
    """Raise :class:`HislipError` if ``message`` is an Error or FatalError."""
    if message.type in (MessageType.Error, MessageType.FatalError):
        fatal = message.type == MessageType.FatalError
        names = FatalCode if fatal else ErrorCode
        try:
            name = names(message.control).name
        except ValueError:
            name = f"code {message.control}"
        text = message.payload[:200].decode("ascii", "replace")
        kind = "FatalError" if fatal else "Error"
        raise HislipError(
            f"HiSLIP {kind} {name}" + (f": {text}" if text else ""),
            code=message.control,
            fatal=fatal,
        )
