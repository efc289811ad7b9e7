"""The device side of USBTMC's wire format: descriptors, strings, padding, response cursor."""

from __future__ import annotations

import struct

import pytest

from aiotmc.sim.usbtmc_framing import (
    BULK_IN,
    BULK_OUT,
    INTERRUPT_IN,
    INTERRUPT_PACKET,
    ResponseCursor,
    alignment_padding,
    string_descriptor,
    usbtmc_descriptors,
)


def split(descriptors: bytes) -> list[bytes]:
    """The descriptors one by one (each starts with its bLength)."""
    out, pos = [], 0
    while pos < len(descriptors):
        out.append(descriptors[pos : pos + descriptors[pos]])
        pos += descriptors[pos]
    assert pos == len(descriptors)
    return out


@pytest.mark.parametrize(("usb488", "interrupt"), [(True, True), (False, False), (True, False)])
@pytest.mark.parametrize("max_packet_size", [64, 512])
def test_descriptors(usb488: bool, interrupt: bool, max_packet_size: int) -> None:
    raw = usbtmc_descriptors(
        vid=0x1234, pid=0xABCD, max_packet_size=max_packet_size, usb488=usb488, interrupt=interrupt
    )
    device, config, interface, *endpoints = split(raw)
    assert struct.unpack_from("<BBHBBBBHH", device) == (18, 1, 0x0200, 0, 0, 0, 64, 0x1234, 0xABCD)
    assert struct.unpack_from("<BBH", config) == (9, 2, len(raw) - 18)  # wTotalLength
    assert tuple(interface[4:8]) == (len(endpoints), 0xFE, 0x03, 1 if usb488 else 0)
    layout = [(e[2], e[3], struct.unpack_from("<H", e, 4)[0]) for e in endpoints]
    expected = [(BULK_OUT, 2, max_packet_size), (BULK_IN, 2, max_packet_size)]
    if interrupt:
        expected.append((INTERRUPT_IN, 3, INTERRUPT_PACKET))
    assert layout == expected


def test_string_descriptors() -> None:
    strings = {1: "Maker", 3: "X" * 200}
    assert string_descriptor(0, strings) == b"\x04\x03\x09\x04"  # en-US
    assert string_descriptor(1, strings) == b"\x0c\x03" + "Maker".encode("utf-16-le")
    assert string_descriptor(2, strings) is None
    long = string_descriptor(3, strings)
    assert long is not None and len(long) == long[0] == 254  # bLength is one byte


def test_alignment_padding() -> None:
    assert [alignment_padding(n) for n in range(6)] == [0, 3, 2, 1, 0, 3]


def test_response_cursor_cuts_across_parts_without_copying() -> None:
    first, second = bytearray(b"abc\n"), b"defgh\n"
    cursor = ResponseCursor.of([first, b"", second])
    assert (cursor.total, cursor.remaining) == (10, 10)
    assert cursor.peek(6) == b"abc\nde" and cursor.remaining == 10
    assert cursor.find(ord("\n"), 10) == 3
    pieces = cursor.take(5)
    assert [bytes(p) for p in pieces] == [b"abc\n", b"d"]
    assert pieces[0].obj is first  # views of the caller's buffers
    assert cursor.find(ord("\n"), 4) == -1  # beyond the limit
    assert cursor.find(ord("\n"), 5) == 4
    assert [bytes(p) for p in cursor.take(5)] == [b"efgh\n"]
    assert cursor.remaining == 0 and cursor.peek(1) == b""
    cursor.restart()
    assert cursor.remaining == 10 and cursor.peek(3) == b"abc"
