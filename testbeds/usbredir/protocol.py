"""The usbredir wire protocol, usb-host side, sans-IO: a :class:`UsbFunction` behind QEMU.

QEMU's ``usb-redir`` device is the *usb-guest* end of the spice usbredir protocol (0.7):
it forwards every USB transaction the guest's host controller issues for the redirected
device. :class:`UsbredirDevice` is the *usb-host* end: bytes in (:meth:`receive_data`),
bytes out (:meth:`data_to_send`), and the emulated device is a
:class:`~aiotmc.sim.usb_function.UsbFunction`. No sockets, no threads, no clock of its own:
the caller pumps bytes and calls :meth:`poll` when :meth:`next_deadline` passes.

What is implemented (all QEMU sends to a device without isochronous endpoints or
streams): hello and capabilities (64-bit ids, 32-bit bulk lengths, ep_info max packet
size, device version), interface_info / ep_info / device_connect, reset,
set/get_configuration, set/get_alt_setting, control, bulk and interrupt packets,
start/stop_interrupt_receiving, cancel_data_packet. Every integer is little-endian;
packets are ``type u32, length u32, id u32|u64`` then a type header then data.
"""

from __future__ import annotations

import enum
import logging
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from aiotmc.protocol.events import ControlRequest
from aiotmc.sim.usb_function import Stall, UsbFunction

__all__ = [
    "PROTOCOL_VERSION",
    "Capability",
    "PacketType",
    "Status",
    "UsbredirDevice",
    "UsbredirError",
    "parse_descriptors",
]

_log = logging.getLogger("testbeds.usbredir")

PROTOCOL_VERSION: Final = "aiotmc usbredir host 0.7"


class UsbredirError(Exception):
    """The peer broke the protocol (the connection should be dropped)."""


class PacketType(enum.IntEnum):
    HELLO = 0
    DEVICE_CONNECT = 1
    DEVICE_DISCONNECT = 2
    RESET = 3
    INTERFACE_INFO = 4
    EP_INFO = 5
    SET_CONFIGURATION = 6
    GET_CONFIGURATION = 7
    CONFIGURATION_STATUS = 8
    SET_ALT_SETTING = 9
    GET_ALT_SETTING = 10
    ALT_SETTING_STATUS = 11
    START_ISO_STREAM = 12
    STOP_ISO_STREAM = 13
    ISO_STREAM_STATUS = 14
    START_INTERRUPT_RECEIVING = 15
    STOP_INTERRUPT_RECEIVING = 16
    INTERRUPT_RECEIVING_STATUS = 17
    ALLOC_BULK_STREAMS = 18
    FREE_BULK_STREAMS = 19
    BULK_STREAMS_STATUS = 20
    CANCEL_DATA_PACKET = 21
    FILTER_REJECT = 22
    FILTER_FILTER = 23
    DEVICE_DISCONNECT_ACK = 24
    START_BULK_RECEIVING = 25
    STOP_BULK_RECEIVING = 26
    BULK_RECEIVING_STATUS = 27
    CONTROL_PACKET = 100
    BULK_PACKET = 101
    ISO_PACKET = 102
    INTERRUPT_PACKET = 103
    BUFFERED_BULK_PACKET = 104


class Status(enum.IntEnum):
    SUCCESS = 0
    CANCELLED = 1
    INVAL = 2
    IOERROR = 3
    STALL = 4
    TIMEOUT = 5
    BABBLE = 6


class Capability(enum.IntEnum):
    BULK_STREAMS = 0
    CONNECT_DEVICE_VERSION = 1
    FILTER = 2
    DEVICE_DISCONNECT_ACK = 3
    EP_INFO_MAX_PACKET_SIZE = 4
    IDS_64BIT = 5
    BULK_LENGTH_32BIT = 6
    BULK_RECEIVING = 7


OUR_CAPS: Final = (
    Capability.CONNECT_DEVICE_VERSION,
    Capability.EP_INFO_MAX_PACKET_SIZE,
    Capability.IDS_64BIT,
    Capability.BULK_LENGTH_32BIT,
)

_SPEED_FULL: Final = 1
_SPEED_HIGH: Final = 2
_TYPE_CONTROL: Final = 0
_TYPE_INVALID: Final = 255
_CONTROL_HEADER: Final = struct.Struct("<BBBBHHH")  # ep, request, type, status, value, index, len
_BULK_HEADER: Final = struct.Struct("<BBHIH")  # ep, status, length, stream, length_high
_BULK_HEADER_16: Final = struct.Struct("<BBHI")
_INTERRUPT_HEADER: Final = struct.Struct("<BBH")  # ep, status, length
_MAX_PACKET: Final = 256 * 1024 * 1024


def _ep_index(address: int) -> int:
    return ((address & 0x80) >> 3) | (address & 0x0F)


@dataclass(slots=True)
class _Endpoint:
    address: int
    type: int  # 0 control, 1 iso, 2 bulk, 3 interrupt
    interval: int
    interface: int
    max_packet_size: int


@dataclass(slots=True)
class DeviceInfo:
    """What usbredir needs to know about a device, read from its descriptors."""

    device_class: int
    device_subclass: int
    device_protocol: int
    vendor_id: int
    product_id: int
    device_version: int
    max_packet_size0: int
    configuration: int
    interfaces: list[tuple[int, int, int, int]] = field(default_factory=list)
    endpoints: list[_Endpoint] = field(default_factory=list)

    @property
    def high_speed(self) -> bool:
        """A high-speed device: some bulk endpoint has 512-byte packets."""
        return any(e.type == 2 and e.max_packet_size >= 512 for e in self.endpoints)


def parse_descriptors(descriptors: bytes) -> DeviceInfo:
    """Device + configuration descriptors (sysfs layout) -> :class:`DeviceInfo`."""
    if len(descriptors) < 18 or descriptors[1] != 1:
        raise ValueError("descriptors must start with an 18-byte device descriptor")
    (_, _, _, cls, sub, proto, mps0, vid, pid, bcd) = struct.unpack_from("<BBHBBBBHHH", descriptors)
    info = DeviceInfo(cls, sub, proto, vid, pid, bcd, mps0, 1)
    pos, interface = 18, 0
    while pos + 2 <= len(descriptors):
        length, kind = descriptors[pos], descriptors[pos + 1]
        if length < 2:
            break
        body = descriptors[pos : pos + length]
        if kind == 2 and length >= 6:
            info.configuration = body[5]
        elif kind == 4 and length >= 9:
            interface = body[2]
            if body[3] == 0:  # alternate setting 0 only
                info.interfaces.append((body[2], body[5], body[6], body[7]))
        elif kind == 5 and length >= 7:
            (size,) = struct.unpack_from("<H", body, 4)
            info.endpoints.append(_Endpoint(body[2], body[3] & 3, body[6], interface, size))
        pos += length
    return info


@dataclass(slots=True)
class _Pending:
    id: int
    endpoint: int
    size: int


class UsbredirDevice:
    """The usb-host end of one usbredir connection, serving ``function``.

    Feed received bytes to :meth:`receive_data`; send what :meth:`data_to_send` returns.
    Call :meth:`poll` when :meth:`next_deadline` passes and :meth:`pump` after changing the
    function from outside (fault injection). ``on_change`` is called when the device wants
    to be pumped without incoming bytes (the function's wakeup).
    """

    def __init__(self, function: UsbFunction, *, version: str = PROTOCOL_VERSION) -> None:
        self.function = function
        self.info = parse_descriptors(function.descriptors)
        self.on_change: Callable[[], None] | None = None
        self.peer_version: str | None = None
        self.peer_caps = 0
        self.counts: dict[str, int] = {}
        self._our_caps = sum(1 << c for c in OUR_CAPS)
        self._inbox = bytearray()
        self._outbox = bytearray()
        self._configuration = self.info.configuration
        self._bulk_in: dict[int, deque[_Pending]] = {}
        self._interrupt_started: set[int] = set()
        self._interrupt_id = 0
        self._connected_sent = False
        set_wakeup = getattr(function, "set_wakeup", None)
        if callable(set_wakeup):
            set_wakeup(self._wakeup)
        hello = version.encode()[:63].ljust(64, b"\0") + struct.pack("<I", self._our_caps)
        self._send(PacketType.HELLO, 0, hello)

    # -- capabilities and framing ------------------------------------------------------------

    def _both(self, cap: Capability) -> bool:
        return bool(self._our_caps & self.peer_caps & (1 << cap))

    @property
    def _header_struct(self) -> struct.Struct:
        if self.peer_version is not None and self._both(Capability.IDS_64BIT):
            return struct.Struct("<IIQ")
        return struct.Struct("<III")

    def _send(self, kind: int, packet_id: int, header: bytes, data: bytes = b"") -> None:
        self._outbox += self._header_struct.pack(kind, len(header) + len(data), packet_id)
        self._outbox += header
        self._outbox += data
        name = PacketType(kind).name.lower()
        self.counts[f"sent_{name}"] = self.counts.get(f"sent_{name}", 0) + 1

    def data_to_send(self) -> bytes:
        """Everything queued for the peer (and forget it)."""
        out = bytes(self._outbox)
        self._outbox.clear()
        return out

    def receive_data(self, data: bytes) -> None:
        """Bytes from the peer: handle every complete packet. Raises :class:`UsbredirError`."""
        self._inbox += data
        while True:
            head = self._header_struct
            if len(self._inbox) < head.size:
                break
            kind, length, packet_id = head.unpack_from(self._inbox)
            if length > _MAX_PACKET:
                raise UsbredirError(f"packet of {length} bytes")
            if len(self._inbox) < head.size + length:
                break
            body = bytes(self._inbox[head.size : head.size + length])
            del self._inbox[: head.size + length]
            self._dispatch(kind, packet_id, body)
        self.pump()

    # -- time ---------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`poll` has work (the function's next deadline)."""
        return self.function.next_deadline()

    def poll(self) -> None:
        """Advance the function's timed work, then answer whatever became ready."""
        self.function.poll()
        self.pump()

    def _wakeup(self) -> None:
        if self.on_change is not None:
            self.on_change()

    # -- outgoing device description -------------------------------------------------------

    def _send_device(self) -> None:
        info = self.info
        count = len(info.interfaces)
        numbers = [0] * 32
        classes = [0] * 32
        subclasses = [0] * 32
        protocols = [0] * 32
        for i, (number, cls, sub, proto) in enumerate(info.interfaces[:32]):
            numbers[i], classes[i], subclasses[i], protocols[i] = number, cls, sub, proto
        self._send(
            PacketType.INTERFACE_INFO,
            0,
            struct.pack("<I", count) + bytes(numbers + classes + subclasses + protocols),
        )
        types = [_TYPE_INVALID] * 32
        intervals = [0] * 32
        interfaces = [0] * 32
        sizes = [0] * 32
        for address in (0x00, 0x80):
            types[_ep_index(address)] = _TYPE_CONTROL
            sizes[_ep_index(address)] = info.max_packet_size0
        for ep in info.endpoints:
            i = _ep_index(ep.address)
            types[i], intervals[i], interfaces[i] = ep.type, ep.interval, ep.interface
            sizes[i] = ep.max_packet_size
        ep_info = bytes(types + intervals + interfaces)
        if self._both(Capability.EP_INFO_MAX_PACKET_SIZE):
            ep_info += struct.pack("<32H", *sizes)
        self._send(PacketType.EP_INFO, 0, ep_info)
        if not self._connected_sent:
            self._connected_sent = True
            speed = _SPEED_HIGH if info.high_speed else _SPEED_FULL
            connect = struct.pack(
                "<BBBBHH",
                speed,
                info.device_class,
                info.device_subclass,
                info.device_protocol,
                info.vendor_id,
                info.product_id,
            )
            if self._both(Capability.CONNECT_DEVICE_VERSION):
                connect += struct.pack("<H", info.device_version)
            self._send(PacketType.DEVICE_CONNECT, 0, connect)

    def disconnect(self) -> None:
        """Queue a device_disconnect (the device goes away; the connection may stay)."""
        self._send(PacketType.DEVICE_DISCONNECT, 0, b"")
        self._connected_sent = False

    # -- incoming packets ---------------------------------------------------------------------

    def _dispatch(self, kind: int, packet_id: int, body: bytes) -> None:
        try:
            name = PacketType(kind).name.lower()
        except ValueError:
            raise UsbredirError(f"unknown packet type {kind}") from None
        self.counts[name] = self.counts.get(name, 0) + 1
        if self.peer_version is None and kind != PacketType.HELLO:
            raise UsbredirError(f"{name} before hello")
        handler = getattr(self, f"_on_{name}", None)
        if handler is None:
            _log.debug("usbredir: ignoring %s", name)
            return
        handler(packet_id, body)

    def _on_hello(self, packet_id: int, body: bytes) -> None:
        if self.peer_version is not None:
            raise UsbredirError("second hello")
        if len(body) < 64:
            raise UsbredirError("short hello")
        caps = body[64:]
        self.peer_caps = int.from_bytes(caps[:4], "little") if len(caps) >= 4 else 0
        self.peer_version = body[:64].split(b"\0", 1)[0].decode(errors="replace")
        _log.debug("usbredir peer %r caps %#x", self.peer_version, self.peer_caps)
        self._send_device()

    def _on_reset(self, packet_id: int, body: bytes) -> None:
        self._drop_pending(cancel=False)
        self._interrupt_started.clear()
        reset = getattr(self.function, "reset", None)
        if callable(reset):
            reset()

    def _on_set_configuration(self, packet_id: int, body: bytes) -> None:
        configuration = body[0] if body else 0
        self._drop_pending(cancel=True)
        self._interrupt_started.clear()
        result = self.function.control(
            ControlRequest(request_type=0x00, request=9, value=configuration, index=0)
        )
        ok = not isinstance(result, Stall) and configuration in (0, self.info.configuration)
        if ok:
            self._configuration = configuration
        status = Status.SUCCESS if ok else Status.STALL
        self._send(PacketType.CONFIGURATION_STATUS, packet_id, bytes((status, self._configuration)))
        if ok:
            self._send_device()

    def _on_get_configuration(self, packet_id: int, body: bytes) -> None:
        self._send(
            PacketType.CONFIGURATION_STATUS, packet_id, bytes((Status.SUCCESS, self._configuration))
        )

    def _on_set_alt_setting(self, packet_id: int, body: bytes) -> None:
        interface, alt = body[0], body[1]
        status = Status.SUCCESS if alt == 0 else Status.STALL
        self._send(PacketType.ALT_SETTING_STATUS, packet_id, bytes((status, interface, 0)))

    def _on_get_alt_setting(self, packet_id: int, body: bytes) -> None:
        self._send(PacketType.ALT_SETTING_STATUS, packet_id, bytes((Status.SUCCESS, body[0], 0)))

    def _on_start_interrupt_receiving(self, packet_id: int, body: bytes) -> None:
        endpoint = body[0]
        known = any(e.address == endpoint and e.type == 3 for e in self.info.endpoints)
        if known:
            self._interrupt_started.add(endpoint)
        status = Status.SUCCESS if known else Status.INVAL
        self._send(PacketType.INTERRUPT_RECEIVING_STATUS, packet_id, bytes((status, endpoint)))

    def _on_stop_interrupt_receiving(self, packet_id: int, body: bytes) -> None:
        endpoint = body[0]
        self._interrupt_started.discard(endpoint)
        self._send(
            PacketType.INTERRUPT_RECEIVING_STATUS, packet_id, bytes((Status.SUCCESS, endpoint))
        )

    def _on_cancel_data_packet(self, packet_id: int, body: bytes) -> None:
        for queue in self._bulk_in.values():
            for pending in queue:
                if pending.id == packet_id:
                    queue.remove(pending)
                    self._bulk_reply(pending, Status.CANCELLED, b"")
                    return
        # Already answered: nothing to do (the peer drops the late answer).

    def _on_control_packet(self, packet_id: int, body: bytes) -> None:
        endpoint, request, request_type, _, value, index, length = _CONTROL_HEADER.unpack_from(body)
        data = body[_CONTROL_HEADER.size :]
        is_in = bool(request_type & 0x80)
        try:
            result = self.function.control(
                ControlRequest(
                    request_type=request_type,
                    request=request,
                    value=value,
                    index=index,
                    length=length,
                    data=b"" if is_in else data,
                )
            )
        except Exception:
            _log.exception("usbredir: function.control failed")
            result = Stall()
        if isinstance(result, Stall):
            header = _CONTROL_HEADER.pack(
                endpoint, request, request_type, Status.STALL, value, index, 0
            )
            self._send(PacketType.CONTROL_PACKET, packet_id, header)
            return
        if is_in:
            reply = bytes(result[:length])
            header = _CONTROL_HEADER.pack(
                endpoint, request, request_type, Status.SUCCESS, value, index, len(reply)
            )
            self._send(PacketType.CONTROL_PACKET, packet_id, header, reply)
        else:
            header = _CONTROL_HEADER.pack(
                endpoint, request, request_type, Status.SUCCESS, value, index, len(data)
            )
            self._send(PacketType.CONTROL_PACKET, packet_id, header)

    def _bulk_header(self, endpoint: int, status: int, length: int) -> bytes:
        if self._both(Capability.BULK_LENGTH_32BIT):
            return _BULK_HEADER.pack(endpoint, status, length & 0xFFFF, 0, length >> 16)
        return _BULK_HEADER_16.pack(endpoint, status, length & 0xFFFF, 0)

    def _on_bulk_packet(self, packet_id: int, body: bytes) -> None:
        if self._both(Capability.BULK_LENGTH_32BIT):
            endpoint, _, low, _, high = _BULK_HEADER.unpack_from(body)
            data = body[_BULK_HEADER.size :]
        else:
            endpoint, _, low, _ = _BULK_HEADER_16.unpack_from(body)
            high = 0
            data = body[_BULK_HEADER_16.size :]
        length = (high << 16) | low
        if endpoint & 0x80:
            self._bulk_in.setdefault(endpoint, deque()).append(
                _Pending(packet_id, endpoint, length)
            )
            return  # answered by pump()
        try:
            result = self.function.bulk_out(endpoint, data)
        except Exception:
            _log.exception("usbredir: function.bulk_out failed")
            result = Stall()
        if isinstance(result, Stall):
            header = self._bulk_header(endpoint, Status.STALL, 0)
        else:
            header = self._bulk_header(endpoint, Status.SUCCESS, len(data))
        self._send(PacketType.BULK_PACKET, packet_id, header)

    def _on_interrupt_packet(self, packet_id: int, body: bytes) -> None:
        endpoint = body[0]
        _log.debug("usbredir: interrupt-OUT on %#04x ignored (no such endpoint)", endpoint)

    def _on_filter_filter(self, packet_id: int, body: bytes) -> None:
        return

    # -- answering IN transfers ---------------------------------------------------------------

    def _bulk_reply(self, pending: _Pending, status: int, data: bytes) -> None:
        header = self._bulk_header(pending.endpoint, status, len(data))
        self._send(PacketType.BULK_PACKET, pending.id, header, data)

    def _drop_pending(self, *, cancel: bool) -> None:
        for queue in self._bulk_in.values():
            while queue:
                pending = queue.popleft()
                if cancel:
                    self._bulk_reply(pending, Status.CANCELLED, b"")
        self._bulk_in.clear()

    def pump(self) -> None:
        """Answer every pending IN transfer the function can answer now."""
        function = self.function
        for endpoint, queue in self._bulk_in.items():
            while queue:
                head = queue[0]
                try:
                    result = function.bulk_in(endpoint, head.size)
                except Exception:
                    _log.exception("usbredir: function.bulk_in failed")
                    result = Stall()
                if result is None:
                    break
                queue.popleft()
                if isinstance(result, Stall):
                    self._bulk_reply(head, Status.STALL, b"")
                else:
                    self._bulk_reply(head, Status.SUCCESS, bytes(result[: head.size]))
        for endpoint in sorted(self._interrupt_started):
            size = next(
                (e.max_packet_size for e in self.info.endpoints if e.address == endpoint), 64
            )
            while endpoint in self._interrupt_started:
                result = function.interrupt_in(endpoint, size)
                if result is None:
                    break
                self._interrupt_id += 1
                if isinstance(result, Stall):
                    self._interrupt_started.discard(endpoint)
                    self._send(
                        PacketType.INTERRUPT_RECEIVING_STATUS,
                        self._interrupt_id,
                        bytes((Status.STALL, endpoint)),
                    )
                    break
                data = bytes(result)
                header = _INTERRUPT_HEADER.pack(endpoint, Status.SUCCESS, len(data))
                self._send(PacketType.INTERRUPT_PACKET, self._interrupt_id, header, data)

    @property
    def pending_in(self) -> int:
        """Bulk-IN transfers the peer is waiting for."""
        return sum(len(q) for q in self._bulk_in.values())
