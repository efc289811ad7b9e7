"""A minimal USBTMC/USB488 ``UsbFunction`` for the USB tests (stdlib only).

It stands in for ``aiotmc.sim.usbtmc_device.UsbtmcFunction`` where the tests need a
device whose behaviour they fully control (and it runs under the system Python in the
umockdev process). Commands: ``*IDN?``, ``BLOCK? <n>`` (an IEEE 488.2 block of n
bytes), ``DELAY <s>`` (answer latency), ``*STB?``; anything else ending in ``?`` answers
``0``. READ_STATUS_BYTE answers on interrupt-IN; :meth:`request_service` queues an SRQ.
"""

from __future__ import annotations

import struct
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from aiotmc.protocol.events import ControlRequest
from aiotmc.sim.usb_function import STALL, Stall

BULK_OUT = 0x01
BULK_IN = 0x82
INTERRUPT_IN = 0x83

SUCCESS = 0x01
FAILED = 0x80


def _string_descriptor(text: str) -> bytes:
    raw = text.encode("utf-16-le")
    return bytes([2 + len(raw), 3]) + raw


class StubUsbtmcFunction:
    """USBTMC (USB488) device with one bulk-OUT, one bulk-IN and one interrupt-IN."""

    def __init__(
        self,
        *,
        vid: int = 0x0957,
        pid: int = 0x1796,
        serial: str = "MY123",
        manufacturer: str = "Aiotmc",
        product: str = "Stub USBTMC",
        max_packet_size: int = 512,
        interrupt_endpoint: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.vid = vid
        self.pid = pid
        self.serial = serial
        self._strings = {1: manufacturer, 2: product, 3: serial}
        self.max_packet_size = max_packet_size
        self.interrupt_endpoint = interrupt_endpoint
        self.clock = clock
        self.connected = True
        self.stb = 0
        self.delay = 0.0
        self._message = bytearray()
        self._output = bytearray()
        self._ready_at = 0.0
        self._request: tuple[int, int] | None = None  # (bTag, TransferSize)
        self._current_tag = 0
        self._interrupts: deque[bytes] = deque()
        self.log: list[str] = []

    # -- descriptors --------------------------------------------------------------------

    @property
    def descriptors(self) -> bytes:
        device = struct.pack(
            "<BBHBBBBHHHBBBB", 18, 1, 0x0200, 0, 0, 0, 64, self.vid, self.pid, 0x0100, 1, 2, 3, 1
        )
        endpoints = [
            struct.pack("<BBBBHB", 7, 5, BULK_OUT, 2, self.max_packet_size, 0),
            struct.pack("<BBBBHB", 7, 5, BULK_IN, 2, self.max_packet_size, 0),
        ]
        if self.interrupt_endpoint:
            endpoints.append(struct.pack("<BBBBHB", 7, 5, INTERRUPT_IN, 3, 8, 4))
        interface = struct.pack("<BBBBBBBBB", 9, 4, 0, 0, len(endpoints), 0xFE, 0x03, 0x01, 0)
        body = interface + b"".join(endpoints)
        config = struct.pack("<BBHBBBBB", 9, 2, 9 + len(body), 1, 1, 0, 0x80, 50)
        return device + config + body

    # -- control ------------------------------------------------------------------------

    def control(self, request: ControlRequest) -> bytes | Stall:
        rt, req, value = request.request_type, request.request, request.value
        self.log.append(f"control {rt:02x} {req} {value}")
        if rt == 0x80 and req == 6:  # GET_DESCRIPTOR
            kind, index = value >> 8, value & 0xFF
            if kind == 1:
                return self.descriptors[:18][: request.length]
            if kind == 2:
                return self.descriptors[18:][: request.length]
            if kind == 3:
                if index == 0:
                    return bytes([4, 3, 0x09, 0x04])[: request.length]
                text = self._strings.get(index)
                return STALL if text is None else _string_descriptor(text)[: request.length]
            return STALL
        if rt & 0x60 == 0:  # other standard requests (SET_CONFIGURATION, ...)
            return b""
        if rt == 0xA1 and req == 7:  # GET_CAPABILITIES
            return bytes(
                [SUCCESS, 0, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x01, 0x07, 0x0F] + [0] * 8
            )[: request.length]
        if rt == 0xA1 and req == 128:  # READ_STATUS_BYTE
            tag = value & 0x7F
            if self.interrupt_endpoint:
                self._interrupts.append(bytes([0x80 | tag, self.stb]))
                return bytes([SUCCESS, tag, 0])[: request.length]
            return bytes([SUCCESS, tag, self.stb])[: request.length]
        if rt == 0xA2 and req == 3:  # INITIATE_ABORT_BULK_IN
            self._request = None
            self._output.clear()
            return bytes([SUCCESS, self._current_tag])[: request.length]
        if rt == 0xA2 and req == 4:  # CHECK_ABORT_BULK_IN_STATUS
            return bytes([SUCCESS, 0, 0, 0, 0, 0, 0, 0])[: request.length]
        if rt == 0xA2 and req == 1:  # INITIATE_ABORT_BULK_OUT
            self._message.clear()
            return bytes([SUCCESS, self._current_tag])[: request.length]
        if rt == 0xA2 and req == 2:  # CHECK_ABORT_BULK_OUT_STATUS
            return bytes([SUCCESS, 0, 0, 0, 0, 0, 0, 0])[: request.length]
        if rt == 0xA1 and req == 5:  # INITIATE_CLEAR
            self._message.clear()
            self._output.clear()
            self._request = None
            return bytes([SUCCESS])[: request.length]
        if rt == 0xA1 and req == 6:  # CHECK_CLEAR_STATUS
            return bytes([SUCCESS, 0])[: request.length]
        return STALL

    # -- bulk ---------------------------------------------------------------------------

    def bulk_out(self, endpoint: int, data: bytes) -> Stall | None:
        if len(data) < 12:
            return STALL
        msg_id, tag = data[0], data[1]
        self._current_tag = tag
        if msg_id == 1:  # DEV_DEP_MSG_OUT
            size = struct.unpack_from("<I", data, 4)[0]
            self._message += data[12 : 12 + size]
            if data[8] & 1:
                self._execute(bytes(self._message))
                self._message.clear()
        elif msg_id == 2:  # REQUEST_DEV_DEP_MSG_IN
            self._request = (tag, struct.unpack_from("<I", data, 4)[0])
        return None

    def _execute(self, message: bytes) -> None:
        command = message.strip().decode("ascii", "replace")
        self.log.append(f"command {command}")
        head, _, arg = command.partition(" ")
        head = head.upper()
        if head == "*IDN?":
            answer = f"{self._strings[1]},{self._strings[2]},{self.serial},1.0\n".encode()
        elif head == "BLOCK?":
            size = int(arg)
            payload = (bytes(range(256)) * (size // 256 + 1))[:size]
            digits = str(size)
            answer = f"#{len(digits)}{digits}".encode() + payload + b"\n"
        elif head == "DELAY":
            self.delay = float(arg)
            return
        elif head == "*STB?":
            answer = f"{self.stb}\n".encode()
        elif head.endswith("?"):
            answer = b"0\n"
        else:
            return
        self._output += answer
        self._ready_at = self.clock() + self.delay

    def bulk_in(self, endpoint: int, size: int) -> bytes | Stall | None:
        if self._request is None or not self._output or self.clock() < self._ready_at:
            return None
        tag, wanted = self._request
        room = max(0, min(wanted, size - 12))
        chunk = bytes(self._output[:room])
        del self._output[:room]
        eom = not self._output
        self._request = None
        header = struct.pack("<BBBBIB3x", 2, tag, ~tag & 0xFF, 0, len(chunk), 1 if eom else 0)
        transfer = header + chunk
        transfer += b"\0" * (-len(transfer) % 4)
        return transfer[:size]

    def interrupt_in(self, endpoint: int, size: int) -> bytes | Stall | None:
        if not self._interrupts:
            return None
        return self._interrupts.popleft()[:size]

    def clear_halt(self, endpoint: int) -> None:
        self.log.append(f"clear_halt {endpoint:02x}")

    def next_deadline(self) -> float | None:
        if self._request is not None and self._output and self._ready_at > self.clock():
            return self._ready_at
        return None

    def poll(self) -> None:
        return None

    # -- test hooks ---------------------------------------------------------------------

    def request_service(self, stb: int = 0x40) -> None:
        """Queue an SRQ notification (bNotify1 0x81, status byte)."""
        self.stb = stb
        self._interrupts.append(bytes([0x81, stb]))


def create(config: dict[str, Any]) -> StubUsbtmcFunction:
    """Factory for ``python3 -m aiotmc.sim.umockdev --factory tests.usb.usbtmc_stub:create``."""
    return StubUsbtmcFunction(**config)
