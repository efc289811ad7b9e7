"""The device side of USBTMC's wire format, for every emulated USBTMC/USB488 device.

What a USBTMC function looks like on the bus, apart from what it does: the endpoint
layout, the descriptors (device, configuration, interface class 0xFE/0x03, endpoints,
strings), the bmTransferAttributes of DEV_DEP_MSG_IN, the 4-byte alignment of bulk
transfers, and :class:`ResponseCursor`, which cuts a response message (one or more
buffers, never copied) into the payloads of successive DEV_DEP_MSG_IN transfers. The
bulk headers themselves are :func:`~aiotmc.protocol.usbtmc.pack_header` /
:func:`~aiotmc.protocol.usbtmc.unpack_header`, shared with the host side.

:class:`~aiotmc.sim.usbtmc_device.UsbtmcFunction` is built on it; every bus adapter
(:class:`~aiotmc.sim.fake_port.FakeUsbPort`, and the umockdev and usbredir test beds)
drives that one function. Stdlib only: it also runs under the system Python.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from .._buffers import byte_views
from .._types import BytesLike

__all__ = [
    "BULK_IN",
    "BULK_OUT",
    "EOM",
    "INTERRUPT_IN",
    "INTERRUPT_PACKET",
    "TERM_CHAR",
    "ResponseCursor",
    "alignment_padding",
    "string_descriptor",
    "usbtmc_descriptors",
]

BULK_OUT: Final = 0x01
BULK_IN: Final = 0x82
INTERRUPT_IN: Final = 0x83
INTERRUPT_PACKET: Final = 8  #: wMaxPacketSize of interrupt-IN (USB488 notifications)
EOM: Final = 0x01  #: DEV_DEP_MSG_IN bmTransferAttributes: the message ends here
TERM_CHAR: Final = 0x02  #: DEV_DEP_MSG_IN bmTransferAttributes: ended on TermChar
_LANGUAGE_EN_US: Final = 0x0409


def alignment_padding(size: int) -> int:
    """Bytes of padding after a ``size``-byte payload (bulk transfers are 4-byte aligned)."""
    return -size % 4


def usbtmc_descriptors(
    *, vid: int, pid: int, max_packet_size: int, usb488: bool, interrupt: bool
) -> bytes:
    """Device descriptor followed by the full configuration descriptor of a USBTMC function.

    One interface (0), class 0xFE subclass 0x03, protocol 1 (USB488) or 0; bulk-OUT 0x01
    and bulk-IN 0x82 of ``max_packet_size`` bytes; interrupt-IN 0x83 if ``interrupt``.
    Strings: 1 manufacturer, 2 product, 3 serial number.
    """
    endpoints = [
        struct.pack("<BBBBHB", 7, 5, BULK_OUT, 2, max_packet_size, 0),
        struct.pack("<BBBBHB", 7, 5, BULK_IN, 2, max_packet_size, 0),
    ]
    if interrupt:
        interval = 4 if max_packet_size == 512 else 1  # HS: 2**(4-1) microframes = 1 ms
        endpoints.append(struct.pack("<BBBBHB", 7, 5, INTERRUPT_IN, 3, INTERRUPT_PACKET, interval))
    protocol = 1 if usb488 else 0
    interface = struct.pack("<9B", 9, 4, 0, 0, len(endpoints), 0xFE, 0x03, protocol, 0)
    total = 9 + len(interface) + sum(len(e) for e in endpoints)
    config = struct.pack("<BBHBBBBB", 9, 2, total, 1, 1, 0, 0x80, 50)
    # USB 2.0, class per interface, EP0 64 bytes, bcdDevice 1.00, strings 1-3, 1 configuration
    device = struct.pack(
        "<BBHBBBBHHHBBBB", 18, 1, 0x0200, 0, 0, 0, 64, vid, pid, 0x0100, 1, 2, 3, 1
    )
    return device + config + interface + b"".join(endpoints)


def string_descriptor(index: int, strings: Mapping[int, str]) -> bytes | None:
    """String descriptor ``index`` (0: the language list, en-US), or None if there is none."""
    if index == 0:
        return bytes((4, 3)) + _LANGUAGE_EN_US.to_bytes(2, "little")
    text = strings.get(index)
    if text is None:
        return None
    encoded = text.encode("utf-16-le")[:252]
    return bytes((2 + len(encoded), 3)) + encoded


@dataclass(slots=True)
class ResponseCursor:
    """A response message being sent: ``parts`` (views, never copied) and how far it got."""

    parts: list[memoryview]
    total: int
    offset: int = 0  # bytes handed out so far
    index: int = 0  # cursor: part index and offset inside it
    inner: int = 0

    @classmethod
    def of(cls, parts: list[BytesLike]) -> ResponseCursor:
        views = byte_views(parts)
        return cls(views, sum(len(v) for v in views))

    @property
    def remaining(self) -> int:
        return self.total - self.offset

    def restart(self) -> None:
        """Back to the first byte (a device that restarts the message on a new request)."""
        self.offset = self.index = self.inner = 0

    def peek(self, size: int) -> bytes:
        """Up to ``size`` bytes from the cursor, without moving it."""
        out = bytearray()
        index, inner = self.index, self.inner
        while len(out) < size and index < len(self.parts):
            part = self.parts[index]
            take = min(size - len(out), len(part) - inner)
            out += part[inner : inner + take]
            index, inner = index + 1, 0
        return bytes(out)

    def find(self, byte: int, limit: int) -> int:
        """Offset (from the cursor) of the first ``byte`` within ``limit`` bytes, or -1."""
        seen = 0
        index, inner = self.index, self.inner
        while seen < limit and index < len(self.parts):
            part = self.parts[index]
            end = min(len(part), inner + limit - seen)
            found = bytes(part[inner:end]).find(byte)
            if found >= 0:
                return seen + found
            seen += end - inner
            index, inner = index + 1, 0
        return -1

    def take(self, size: int) -> list[memoryview]:
        """The next ``size`` bytes (at most :attr:`remaining`) as views; moves the cursor."""
        pieces: list[memoryview] = []
        while size:
            part = self.parts[self.index]
            n = min(size, len(part) - self.inner)
            pieces.append(part[self.inner : self.inner + n])
            size -= n
            self.offset += n
            self.inner += n
            if self.inner == len(part):
                self.index, self.inner = self.index + 1, 0
        return pieces
