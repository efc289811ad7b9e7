"""USB488 sans-IO: status-byte tags, interrupt-IN demultiplexing, REN/GTL/LLO, device side."""

from __future__ import annotations

import pytest

from aiotmc import LocalProtocolError, RemoteProtocolError
from aiotmc.protocol.usb488 import (
    SrqNotification,
    StatusByteReply,
    StbTag,
    Usb488Request,
    VendorNotification,
    go_to_local_request,
    local_lockout_request,
    parse_interrupt,
    parse_read_status_byte,
    read_status_byte_request,
    ren_control_request,
    srq_notification,
    status_byte_notification,
)
from aiotmc.protocol.usbtmc import UsbtmcStatus, parse_status
from aiotmc.sim.usb_function import STALL
from aiotmc.sim.usbtmc_device import INTERRUPT_IN

from .test_usbtmc import Hang, Pair


def test_stb_tags_run_2_to_127_and_wrap() -> None:
    tags = StbTag()
    seen = [tags.next() for _ in range(300)]
    assert seen[:3] == [2, 3, 4]
    assert seen[125:128] == [127, 2, 3]
    assert min(seen) == 2 and max(seen) == 127
    assert tags.last == seen[-1]


def test_read_status_byte_request() -> None:
    request = read_status_byte_request(5, 1)
    assert (
        request.request_type,
        request.request,
        request.value,
        request.index,
        request.length,
    ) == (
        0xA1,
        Usb488Request.READ_STATUS_BYTE,
        5,
        1,
        3,
    )
    for tag in (0, 1, 128):
        with pytest.raises(LocalProtocolError):
            read_status_byte_request(tag, 0)


def test_parse_read_status_byte() -> None:
    reply = parse_read_status_byte(b"\x01\x05\x50")
    assert (reply.status, reply.tag, reply.status_byte) == (UsbtmcStatus.SUCCESS, 5, 0x50)
    busy = parse_read_status_byte(b"\x20")
    assert busy.status is UsbtmcStatus.INTERRUPT_IN_BUSY
    with pytest.raises(RemoteProtocolError):
        parse_read_status_byte(b"\x01\x05")


def test_remote_local_requests() -> None:
    on = ren_control_request(True, 0)
    off = ren_control_request(False, 0)
    assert (on.request, on.value, off.value, on.length) == (Usb488Request.REN_CONTROL, 1, 0, 1)
    assert go_to_local_request(2).request == Usb488Request.GO_TO_LOCAL
    assert local_lockout_request(2).index == 2


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x81\x40", SrqNotification(0x40)),
        (b"\x81\x00", SrqNotification(0)),
        (b"\x82\x10", StatusByteReply(2, 0x10)),
        (b"\xff\x61", StatusByteReply(127, 0x61)),
        (b"\x05\x01\x02", VendorNotification(b"\x05\x01\x02")),
    ],
)
def test_parse_interrupt(data: bytes, expected: object) -> None:
    assert parse_interrupt(data) == expected


@pytest.mark.parametrize("data", [b"", b"\x81", b"\x80\x00"])
def test_parse_interrupt_malformed(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_interrupt(data)


def test_notification_builders_round_trip() -> None:
    assert parse_interrupt(srq_notification(0x1C0)) == SrqNotification(0xC0)
    assert parse_interrupt(status_byte_notification(9, 0x50)) == StatusByteReply(9, 0x50)


def test_interrupt_stream_demultiplexes() -> None:
    stream = [srq_notification(0x40), status_byte_notification(3, 0x10), srq_notification(0x60)]
    notes = [parse_interrupt(packet) for packet in stream]
    assert [type(n) for n in notes] == [SrqNotification, StatusByteReply, SrqNotification]


# -- the device side ---------------------------------------------------------------------------


def test_read_status_byte_answers_on_interrupt_in() -> None:
    pair = Pair()
    pair.model.push_error(-100, "Command error")  # EAV
    reply = parse_read_status_byte(pair.control(read_status_byte_request(7, 0)))
    assert (reply.status, reply.tag, reply.status_byte) == (UsbtmcStatus.SUCCESS, 7, 0)
    packet = pair.function.interrupt_in(INTERRUPT_IN, 8)
    assert isinstance(packet, bytes)
    assert parse_interrupt(packet) == StatusByteReply(7, 0x04)
    assert pair.function.interrupt_in(INTERRUPT_IN, 8) is None


def test_read_status_byte_without_interrupt_endpoint() -> None:
    pair = Pair(interrupt_endpoint=False)
    pair.model.push_error(-100, "Command error")
    reply = parse_read_status_byte(pair.control(read_status_byte_request(7, 0)))
    assert reply.status_byte == 0x04
    assert pair.function.interrupt_in(INTERRUPT_IN, 8) is STALL


def test_model_service_request_becomes_an_srq_notification() -> None:
    pair = Pair()
    pair.write(b"*SRE 16\n")  # MAV requests service
    pair.write(b"*IDN?\n")
    packet = pair.function.interrupt_in(INTERRUPT_IN, 8)
    assert isinstance(packet, bytes)
    note = parse_interrupt(packet)
    assert isinstance(note, SrqNotification) and note.status & 0x50 == 0x50
    pair.read()


def test_srq_and_reply_interleave_in_order() -> None:
    pair = Pair()
    pair.function.inject_srq(0x41)
    pair.control(read_status_byte_request(2, 0))
    pair.function.inject_srq(0x42)
    packets = []
    while (packet := pair.function.interrupt_in(INTERRUPT_IN, 8)) is not None:
        assert isinstance(packet, bytes)
        packets.append(parse_interrupt(packet))
    assert packets == [SrqNotification(0x41), StatusByteReply(2, 0), SrqNotification(0x42)]


def test_remote_local_on_the_device() -> None:
    pair = Pair()
    assert parse_status(pair.control(ren_control_request(True, 0))) is UsbtmcStatus.SUCCESS
    assert parse_status(pair.control(local_lockout_request(0))) is UsbtmcStatus.SUCCESS
    assert pair.function.remote_enabled and pair.function.local_lockout
    pair.control(go_to_local_request(0))
    assert not pair.function.local_lockout
    pair.control(ren_control_request(False, 0))
    assert not pair.function.remote_enabled
    assert pair.query(b"*IDN?\n").startswith(b"aiotmc")


def test_plain_usbtmc_device_refuses_usb488_requests() -> None:
    pair = Pair(usb488=False, interrupt_endpoint=False)
    assert pair.function.control(read_status_byte_request(2, 0)) is STALL
    assert pair.function.control(ren_control_request(True, 0)) is STALL
    assert pair.function.bulk_out(0x01, pair.conn.trigger()) is STALL  # TRIGGER is USB488


def test_indicator_pulse() -> None:
    pair = Pair()
    assert parse_status(pair.control(pair.conn.indicator_pulse())) is UsbtmcStatus.SUCCESS
    assert pair.function.seen.indicator_pulses == 1


def test_trigger_starts_the_model_operation() -> None:
    pair = Pair()
    pair.out(pair.conn.trigger())
    assert pair.function.seen.triggers == 1
    with pytest.raises(Hang):
        pair.read()  # a trigger produces no response
