"""The usbredir adapter without QEMU: a fake usb-guest peer speaking the wire format.

The peer here encodes packets the way QEMU's usbredirparser does (32-bit ids until both
hellos are exchanged, then 64-bit; 32-bit bulk lengths when both sides have the cap), so
these fast tests pin the framing that the kernel tier then exercises for real.
"""

from __future__ import annotations

import socket
import struct
import threading
from pathlib import Path

import pytest

from aiotmc.protocol.usbtmc import MsgID, pack_header
from aiotmc.sim.devices import create_device
from aiotmc.sim.usbtmc_device import UsbtmcFunction
from aiotmc.sim.usbtmc_framing import EOM, alignment_padding
from testbeds.usbredir import UsbredirDevice, UsbredirError, UsbredirRunner
from testbeds.usbredir.protocol import Capability, PacketType, Status

QEMU_CAPS = sum(
    1 << c
    for c in (
        Capability.CONNECT_DEVICE_VERSION,
        Capability.FILTER,
        Capability.DEVICE_DISCONNECT_ACK,
        Capability.EP_INFO_MAX_PACKET_SIZE,
        Capability.IDS_64BIT,
        Capability.BULK_LENGTH_32BIT,
        Capability.BULK_RECEIVING,
    )
)


class Guest:
    """The usb-guest end (what QEMU's usb-redir does), decoding what the device sends."""

    def __init__(self, device: UsbredirDevice, caps: int = QEMU_CAPS) -> None:
        self.device = device
        self.caps = caps
        self.wide = False  # 64-bit ids once both hellos are through
        self.inbox = b""
        self.later: list[tuple[int, int, bytes]] = []
        hello = self.packets()
        assert [p[0] for p in hello] == [PacketType.HELLO]
        self.device_caps = struct.unpack_from("<I", hello[0][2], 64)[0]
        self.send(PacketType.HELLO, 0, b"qemu usb-redir guest".ljust(64, b"\0"), caps)
        self.wide = bool(caps & self.device_caps & (1 << Capability.IDS_64BIT))

    def send(self, kind: int, packet_id: int, header: bytes, data: bytes | int = b"") -> None:
        if isinstance(data, int):
            data = struct.pack("<I", data)
        head = struct.pack(
            "<IIQ" if self.wide else "<III", kind, len(header) + len(data), packet_id
        )
        self.device.receive_data(head + header + data)

    def packets(self) -> list[tuple[int, int, bytes]]:
        self.inbox += self.device.data_to_send()
        out = []
        while True:
            fmt = "<IIQ" if self.wide else "<III"
            size = struct.calcsize(fmt)
            if len(self.inbox) < size:
                return out
            kind, length, packet_id = struct.unpack_from(fmt, self.inbox)
            out.append((kind, packet_id, self.inbox[size : size + length]))
            self.inbox = self.inbox[size + length :]

    def control(self, request_type: int, request: int, value: int, index: int, length: int):
        endpoint = request_type & 0x80
        header = struct.pack("<BBBBHHH", endpoint, request, request_type, 0, value, index, length)
        self.send(PacketType.CONTROL_PACKET, 7, header)
        (kind, packet_id, body), *self.later = self.packets()
        assert (kind, packet_id) == (PacketType.CONTROL_PACKET, 7)
        status, reply_length = body[3], struct.unpack_from("<H", body, 8)[0]
        data = body[10:]
        assert len(data) == (reply_length if endpoint else 0)
        return status, data

    def bulk(self, endpoint: int, packet_id: int, data: bytes = b"", length: int = 0) -> None:
        size = len(data) if not endpoint & 0x80 else length
        header = struct.pack("<BBHIH", endpoint, 0, size & 0xFFFF, 0, size >> 16)
        self.send(PacketType.BULK_PACKET, packet_id, header, data)


def tmc_out(tag: int, message: bytes) -> bytes:
    header = pack_header(MsgID.DEV_DEP_MSG_OUT, tag, len(message), EOM)
    return header + message + b"\0" * alignment_padding(len(message))


def tmc_request(tag: int, size: int) -> bytes:
    return pack_header(MsgID.REQUEST_DEV_DEP_MSG_IN, tag, size)


@pytest.fixture
def function() -> UsbtmcFunction:
    return UsbtmcFunction(create_device("dmm"), serial="P1")


def connected(function: UsbtmcFunction, caps: int = QEMU_CAPS) -> Guest:
    guest = Guest(UsbredirDevice(function), caps)
    kinds = [p[0] for p in guest.packets()]
    assert kinds == [PacketType.INTERFACE_INFO, PacketType.EP_INFO, PacketType.DEVICE_CONNECT]
    return guest


def test_handshake_describes_the_device(function: UsbtmcFunction) -> None:
    guest = Guest(UsbredirDevice(function))
    assert guest.device_caps & (1 << Capability.IDS_64BIT)
    packets = {kind: body for kind, _, body in guest.packets()}
    interfaces = packets[PacketType.INTERFACE_INFO]
    assert len(interfaces) == 4 + 4 * 32
    assert struct.unpack_from("<I", interfaces)[0] == 1
    assert (interfaces[4 + 32], interfaces[4 + 64], interfaces[4 + 96]) == (0xFE, 0x03, 0x01)
    ep_info = packets[PacketType.EP_INFO]
    assert len(ep_info) == 32 * 3 + 32 * 2  # with max_packet_size, without max_streams
    types = ep_info[:32]
    assert (types[0x00], types[0x10], types[0x01], types[0x12], types[0x13]) == (0, 0, 2, 2, 3)
    sizes = struct.unpack_from("<32H", ep_info, 96)
    assert (sizes[0x01], sizes[0x12], sizes[0x13]) == (512, 512, 8)
    speed, _, _, _, vid, pid, bcd = struct.unpack("<BBBBHHH", packets[PacketType.DEVICE_CONNECT])
    assert (speed, vid, pid, bcd) == (2, 0x0957, 0x1796, 0x0100)


def test_old_peer_gets_32bit_ids_and_16bit_bulk_lengths(function: UsbtmcFunction) -> None:
    guest = connected(function, caps=1 << Capability.CONNECT_DEVICE_VERSION)
    assert not guest.wide
    header = struct.pack("<BBHI", 0x01, 0, 0, 0)
    message = tmc_out(1, b"*IDN?\n")
    header = struct.pack("<BBHI", 0x01, 0, len(message), 0)
    guest.send(PacketType.BULK_PACKET, 3, header, message)
    ((kind, packet_id, body),) = guest.packets()
    assert (kind, packet_id, len(body)) == (PacketType.BULK_PACKET, 3, 8)
    assert body[1] == Status.SUCCESS and struct.unpack_from("<H", body, 2)[0] == len(message)


def test_control_transfers(function: UsbtmcFunction) -> None:
    guest = connected(function)
    status, data = guest.control(0x80, 6, 0x0100, 0, 64)
    assert status == Status.SUCCESS and len(data) == 18 and data[:2] == b"\x12\x01"
    status, data = guest.control(0xA1, 7, 0, 0, 0x18)  # USBTMC GET_CAPABILITIES
    assert status == Status.SUCCESS and data[0] == 1
    status, data = guest.control(0xA1, 99, 0, 0, 1)
    assert status == Status.STALL and data == b""


def test_bulk_out_then_queued_bulk_in_and_cancel(function: UsbtmcFunction) -> None:
    guest = connected(function)
    guest.bulk(0x82, 20, length=512)  # an IN before any data: stays pending
    assert guest.packets() == []
    guest.bulk(0x01, 21, tmc_out(1, b"*IDN?\n"))
    guest.bulk(0x01, 22, tmc_request(2, 4096))
    replies = guest.packets()
    assert [(k, i) for k, i, _ in replies] == [(PacketType.BULK_PACKET, 21)] * 1 + [
        (PacketType.BULK_PACKET, 22),
        (PacketType.BULK_PACKET, 20),
    ]
    body = replies[2][2]
    endpoint, status, low, _, high = struct.unpack_from("<BBHIH", body)
    data = body[10:]
    assert (endpoint, status) == (0x82, Status.SUCCESS) and len(data) == (high << 16) | low
    assert data[0] == 2 and data[1] == 2 and b"aiotmc" in data
    guest.bulk(0x82, 23, length=512)
    guest.send(PacketType.CANCEL_DATA_PACKET, 23, b"")
    ((kind, packet_id, body),) = guest.packets()
    assert (kind, packet_id, body[1]) == (PacketType.BULK_PACKET, 23, Status.CANCELLED)
    guest.send(PacketType.CANCEL_DATA_PACKET, 23, b"")  # already answered: ignored
    assert guest.packets() == []


def test_interrupt_receiving_carries_srq_and_read_status_byte(function: UsbtmcFunction) -> None:
    guest = connected(function)
    guest.send(PacketType.START_INTERRUPT_RECEIVING, 5, b"\x83")
    ((kind, packet_id, body),) = guest.packets()
    assert (kind, packet_id, body) == (PacketType.INTERRUPT_RECEIVING_STATUS, 5, b"\x00\x83")
    function.inject_srq(0x51)
    guest.device.pump()
    ((kind, _, body),) = guest.packets()
    assert kind == PacketType.INTERRUPT_PACKET and body == b"\x83\x00\x02\x00\x81\x51"
    status, data = guest.control(0xA1, 128, 5, 0, 3)  # READ_STATUS_BYTE, bTag 5
    assert status == Status.SUCCESS and data[:2] == b"\x01\x05"
    ((kind, _, body),) = guest.later
    assert kind == PacketType.INTERRUPT_PACKET and body[4] == 0x85


def test_configuration_and_alt_settings(function: UsbtmcFunction) -> None:
    guest = connected(function)
    guest.send(PacketType.SET_CONFIGURATION, 9, b"\x01")
    kinds = [(k, i, b) for k, i, b in guest.packets()]
    assert kinds[0] == (PacketType.CONFIGURATION_STATUS, 9, b"\x00\x01")
    assert [k for k, _, _ in kinds[1:]] == [PacketType.INTERFACE_INFO, PacketType.EP_INFO]
    guest.send(PacketType.GET_CONFIGURATION, 10, b"")
    assert guest.packets() == [(PacketType.CONFIGURATION_STATUS, 10, b"\x00\x01")]
    guest.send(PacketType.SET_ALT_SETTING, 11, b"\x00\x01")
    assert guest.packets() == [(PacketType.ALT_SETTING_STATUS, 11, b"\x04\x00\x00")]
    guest.send(PacketType.RESET, 0, b"")
    assert guest.packets() == []


def test_protocol_errors(function: UsbtmcFunction) -> None:
    device = UsbredirDevice(function)
    with pytest.raises(UsbredirError, match="before hello"):
        device.receive_data(struct.pack("<III", PacketType.RESET, 0, 0))
    guest = connected(UsbtmcFunction(create_device("dmm")))
    with pytest.raises(UsbredirError, match="unknown packet type"):
        guest.send(77, 0, b"")


def test_runner_plug_and_unplug(tmp_path: Path, function: UsbtmcFunction) -> None:
    """connect = plug (our hello arrives), close = unplug (the peer sees EOF)."""
    path = str(tmp_path / "ur.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    server.settimeout(10)
    runner = UsbredirRunner()
    try:
        accepted: list[socket.socket] = []
        thread = threading.Thread(target=lambda: accepted.append(server.accept()[0]))
        thread.start()
        runner.plug(function, path)
        thread.join(10)
        (peer,) = accepted
        peer.settimeout(10)
        hello = peer.recv(12 + 68)
        assert struct.unpack_from("<III", hello) == (PacketType.HELLO, 68, 0)
        assert runner.device() is not None
        assert runner.unplug()
        assert runner.device() is None
        while peer.recv(4096):
            pass
        peer.close()
    finally:
        runner.close()
        server.close()
