"""The state of a link: :class:`Link` (its device, the program message being received,
the response being read as an :class:`Output`, and the wait for that response), and
:class:`ReadResult`, a device_read's results before encoding."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, NamedTuple

import anyio

from ..._buffers import byte_views
from ..._types import BytesLike
from ...protocol.vxi11 import ErrorCode
from ..device import SimDevice
from ..gpib_bus import GpibBus
from ..rpc_server import RpcConnection

__all__ = ["MIN_WAIT", "Link", "Output", "ReadResult"]

MIN_WAIT: Final = 0.0005  # never spin on a device deadline already past


class Output:
    """A response being read: its parts (not joined: block payloads are not copied) and
    how far it has been read."""

    __slots__ = ("_index", "_offset", "parts", "read", "size")

    def __init__(self, parts: list[BytesLike]) -> None:
        if len(parts) == 1:  # the usual case
            self.parts = [memoryview(parts[0]).cast("B")] if len(parts[0]) else []
        else:
            self.parts = byte_views(parts)
        self.size = sum(len(p) for p in self.parts)
        self.read = 0  # bytes read so far
        self._index = 0  # part holding byte ``read``
        self._offset = 0  # into that part

    def find(self, byte: int, limit: int) -> int:
        """Bytes up to and including the first ``byte`` within ``limit`` bytes from
        ``read``; -1 when there is none."""
        seen = 0
        index, offset = self._index, self._offset
        while index < len(self.parts) and seen < limit:
            part = self.parts[index]
            span = min(len(part) - offset, limit - seen)
            found = part[offset : offset + span].tobytes().find(bytes([byte]))
            if found >= 0:
                return seen + found + 1
            seen += span
            index, offset = index + 1, 0
        return -1

    def take(self, count: int) -> list[memoryview]:
        """The next ``count`` bytes (at most what is left), as views of the parts."""
        out = []
        while count and self._index < len(self.parts):
            part = self.parts[self._index]
            span = min(len(part) - self._offset, count)
            out.append(part[self._offset : self._offset + span])
            count -= span
            self.read += span
            self._offset += span
            if self._offset == len(part):
                self._index, self._offset = self._index + 1, 0
        return out


class ReadResult(NamedTuple):
    """device_read results before encoding: the data as views of the response."""

    error: int
    reason: int = 0
    pieces: tuple[memoryview, ...] = ()


@dataclass(eq=False)
class Link:
    lid: int
    name: str
    device: SimDevice
    input: bytearray = field(default_factory=bytearray)
    overflow: bool = False  # the current program message went over the limit: dropped
    output: Output | None = None  # the response being read
    aborted: anyio.Event | None = None  # set while a call can be aborted
    conn: RpcConnection | None = None  # the core connection that created it
    srq_handle: bytes | None = None  # device_enable_srq handle while enabled
    bus: GpibBus | None = None  # gateway mode: the bus the device is on

    def off_bus(self) -> bool:
        """True when the gateway cannot address the device: another device is CIC."""
        return self.bus is not None and self.bus.controller is not None

    def take_output(self) -> bool:
        """Move the device's next response, if it has one, to :attr:`output`."""
        parts = self.device.read_parts()
        if parts is None:
            return False
        self.output = Output(parts)
        return True

    async def poll_output(self, deadline: float, aborted: anyio.Event) -> int:
        """Wait until the device has a response (0), ``deadline`` passes or ``aborted``
        is set (the error code)."""
        device = self.device
        while True:
            if self.take_output():
                return 0
            now = anyio.current_time()
            if now >= deadline:
                return ErrorCode.IO_TIMEOUT
            due = device.next_deadline()
            wake = deadline if due is None else min(deadline, now + due - device.clock())
            with anyio.move_on_after(max(MIN_WAIT, wake - now)):
                await aborted.wait()
            if aborted.is_set():
                return ErrorCode.ABORT
