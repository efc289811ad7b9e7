"""One GPIB instrument on a local controller card through linux-gpib (``libgpib.so.0``).

Every library call runs in a worker thread (:mod:`._worker`): the event loop never
blocks, on asyncio and trio alike. Messages end with EOI both ways: ``send_message``
writes with EOI on the last byte (``ibeot``), ``receive_message`` reads until the END
status. Each library wait is bounded by the operation's deadline (``ibtmo`` set to the
smallest timeout code that covers it, at most 0.5 s: longer waits are loops of such
slices, so that an abandoned call ends within one).
``read_stb`` is ``ibrsp`` (serial poll), ``clear`` ``ibclr``, ``trigger`` ``ibtrg``,
``control_ren`` ``ibloc`` (go to local) and, on the board, ``ibsre`` (REN).

Service requests: while :attr:`LinuxGpibTransport.srq` has a subscriber, a background
task waits for the device's request on a second descriptor (``ibwait`` for RQS, which
needs the board's automatic serial polling, linux-gpib's default), reads its status byte
(``ibrsp``) and publishes it.

After a cancellation or a timeout part-way, the next operation first sends a device clear
(``ibclr``), so an answer left in the instrument never reaches a later exchange.
"""

from __future__ import annotations

import ctypes
import logging
import math
from collections.abc import Callable, Sequence
from typing import Final, TypeVar

import anyio

from ..._background import BackgroundTask, spawn
from ..._exceptions import (
    ConnectionLostError,
    LocalProtocolError,
    ReadTimeout,
    RemoteProtocolError,
    WriteTimeout,
)
from ..._types import BytesLike, RenMode
from ...protocol.ieee4882 import block_payload_view
from ...srq import SrqBroadcaster
from .._srq_on_demand import OnDemandRequests
from ..base import Capabilities, TransportInfo
from ._device import Device, error_for
from ._library import GpibLibrary, IbErr, IbSta, timeout_code
from ._worker import Call

__all__ = ["LinuxGpibTransport"]

T = TypeVar("T")

_log = logging.getLogger("aiotmc.linux_gpib")

_CAPABILITIES: Final = Capabilities(
    srq=True, read_stb=True, device_clear=True, trigger=True, remote_local=True
)
_CHUNK: Final = 64 * 1024
_SRQ_WAIT: Final = 0.3  # one ibwait on the SRQ descriptor (bounds how long close waits)
_ERR, _TIMO, _END, _RQS = int(IbSta.ERR), int(IbSta.TIMO), int(IbSta.END), int(IbSta.RQS)


class LinuxGpibTransport:
    """A :class:`~aiotmc.transports.base.MessageTransport` to one address on a card."""

    def __init__(
        self,
        lib: GpibLibrary,
        ud: int,
        *,
        board: int,
        primary: int,
        secondary: int | None,
        resource: str,
    ) -> None:
        self._lib = lib
        self._device = Device(lib, ud, resource)
        self._board = board
        self._address = (primary, secondary)
        self._busy = False
        self._closed = False
        self._srq = OnDemandRequests(resource, self._want_srq)
        self._srq_task: BackgroundTask | None = None
        self._srq_device: Device | None = None
        self._info = TransportInfo(
            resource=resource,
            kind="linux-gpib",
            capabilities=_CAPABILITIES,
            details={
                "library": lib.path,
                "board": str(board),
                "gpib_address": str(primary) + ("" if secondary is None else f",{secondary}"),
            },
        )

    @classmethod
    async def open(
        cls,
        lib: GpibLibrary,
        *,
        board: int,
        primary: int,
        secondary: int | None = None,
        resource: str,
        timeout: float | None = 10.0,
    ) -> LinuxGpibTransport:
        """``ibdev`` on ``board`` (in a worker thread)."""
        ud = await _ibdev(lib, board, primary, secondary, resource, timeout)
        return cls(lib, ud, board=board, primary=primary, secondary=secondary, resource=resource)

    # -- facts -----------------------------------------------------------------------------

    @property
    def info(self) -> TransportInfo:
        """Static facts about the link."""
        return self._info

    @property
    def srq(self) -> SrqBroadcaster:
        """Service requests of this instrument (waited for while subscribed)."""
        return self._srq

    @property
    def abandoned_calls(self) -> int:
        """Library calls whose caller was cancelled (they ran to their own timeout)."""
        return self._device.worker.abandoned_calls

    # -- messages --------------------------------------------------------------------------

    async def send_message(
        self, parts: Sequence[BytesLike], *, end: bool = True, deadline: float = math.inf
    ) -> None:
        """Write the parts as one message, EOI on its last byte unless ``end`` is False."""
        data = b"".join(bytes(part) for part in parts)
        await self._run(lambda call: self._write(call, data, end), deadline, reading=False)

    async def receive_message(self, *, max_size: int, deadline: float = math.inf) -> bytes:
        """Read one message (until END)."""
        return await self._run(lambda call: self._read(call, max_size), deadline)

    async def exchange(self, message: bytes, *, max_size: int, deadline: float = math.inf) -> bytes:
        """Write ``message`` and read its response, in one worker call."""

        def both(call: Call) -> bytes:
            self._write(call, message, True)
            return self._read(call, max_size)

        return await self._run(both, deadline)

    async def receive_block(
        self, into: memoryview | None = None, *, max_size: int, deadline: float = math.inf
    ) -> memoryview:
        """Read a block response message and return its payload."""
        message = await self.receive_message(max_size=max_size + 64, deadline=deadline)
        payload = block_payload_view(memoryview(message), max_size=max_size)
        if into is None:
            return memoryview(bytearray(payload))
        if len(into) < len(payload):
            raise LocalProtocolError(
                f"block of {len(payload)} bytes does not fit the {len(into)}-byte buffer"
            )
        into[: len(payload)] = payload
        return into[: len(payload)]

    # -- bus operations --------------------------------------------------------------------

    async def read_stb(self, *, deadline: float = math.inf) -> int:
        """Serial poll (``ibrsp``)."""
        return await self._run(lambda call: _serial_poll(self._device, call), deadline)

    async def clear(self, *, deadline: float = math.inf) -> None:
        """Selected device clear (``ibclr``)."""
        await self._run(self._device.clear, deadline, reading=False)

    async def trigger(self, *, deadline: float = math.inf) -> None:
        """Group execute trigger to this instrument (``ibtrg``)."""

        def trigger(call: Call) -> None:
            self._device.sliced(call, "ibtrg", lambda: self._lib.ibtrg(self._device.ud))

        await self._run(trigger, deadline, reading=False)

    async def control_ren(self, mode: RenMode | int, *, deadline: float = math.inf) -> None:
        """Go to local (``ibloc``) for the DEASSERT/GTL modes; the ASSERT modes address
        the instrument (linux-gpib asserts REN when it is system controller)."""
        mode = RenMode(mode)
        if mode not in (RenMode.DEASSERT, RenMode.DEASSERT_GTL, RenMode.ADDRESS_GTL):
            await self._run(lambda call: None, deadline, reading=False)
            return

        def local(call: Call) -> None:
            self._device.sliced(call, "ibloc", lambda: self._lib.ibloc(self._device.ud))

        await self._run(local, deadline, reading=False)

    async def aclose(self) -> None:
        """Take the descriptors offline (``ibonl 0``); idempotent."""
        if self._closed:
            await anyio.lowlevel.checkpoint()
            return
        self._closed = True
        self._srq.close()
        task, self._srq_task = self._srq_task, None
        with anyio.CancelScope(shield=True):
            if task is not None:
                await task.stop(timeout=_SRQ_WAIT * 4)
            devices = [d for d in (self._device, self._srq_device) if d is not None]
            for device in devices:
                try:
                    await device.worker.run(_offline(device), anyio.current_time() + 5)
                except Exception as exc:  # the descriptor is gone either way
                    _log.debug("%s: ibonl failed: %s", device.name, exc)

    # -- internals ---------------------------------------------------------------------------

    async def _run(
        self, function: Callable[[Call], T], deadline: float, *, reading: bool = True
    ) -> T:
        if self._busy:
            raise anyio.BusyResourceError("another task is using this transport")
        if self._closed:
            raise anyio.ClosedResourceError
        self._busy = True
        worker = self._device.worker
        try:
            return await worker.run(function, deadline, clear=self._device.clear, reading=reading)
        except (ReadTimeout, WriteTimeout, ConnectionLostError):
            worker.uncleared = True
            raise
        finally:
            self._busy = False

    def _write(self, call: Call, data: bytes, end: bool) -> None:
        device = self._device
        lib = self._lib
        if not end:
            lib.ibeot(device.ud, 0)
            device.check("ibeot", reading=False)
        buffer = ctypes.create_string_buffer(data, len(data))
        sent = 0
        try:
            while sent < len(data):  # bounded: by the deadline, one slice at a time
                device.timeout(call)
                lib.ibwrt(device.ud, ctypes.byref(buffer, sent), len(data) - sent)
                sta, err, count = lib.status()
                if sta & _ERR:
                    if err != IbErr.EABO or not call.go_on:
                        raise error_for(device.name, "ibwrt", err, count, False)
                    sent += max(0, min(count, len(data) - sent))  # a slice ran out
                    continue
                sent += count if count > 0 else len(data) - sent
        finally:
            if not end:
                lib.ibeot(device.ud, 1)

    def _read(self, call: Call, max_size: int) -> bytes:
        device = self._device
        lib = self._lib
        buffer = ctypes.create_string_buffer(_CHUNK)
        message = bytearray()
        overflow = False
        while True:
            device.timeout(call)
            lib.ibrd(device.ud, buffer, _CHUNK)
            sta, err, count = lib.status()
            if not overflow and 0 < count <= _CHUNK:
                message += buffer.raw[:count]  # also what a timed-out slice read
                if len(message) > max_size:
                    overflow = True
                    message.clear()
            if sta & _ERR:
                if err != IbErr.EABO or not call.go_on:
                    raise error_for(device.name, "ibrd", err, count, True)
                continue  # a slice ran out: go on reading
            if sta & _END:
                break
        if overflow:
            raise RemoteProtocolError(f"response exceeds max_size={max_size} bytes")
        return bytes(message)

    def _want_srq(self) -> None:
        if self._closed or (self._srq_task is not None and not self._srq_task.done):
            return
        self._srq_task = spawn(self._watch_srq, name=f"linux-gpib SRQ {self._info.resource}")

    async def _watch_srq(self) -> None:
        if self._srq_device is None:
            board, (primary, secondary) = self._board, self._address
            ud = await _ibdev(self._lib, board, primary, secondary, self._info.resource, 10.0)
            self._srq_device = Device(self._lib, ud, self._info.resource)
        device = self._srq_device
        while self._srq.subscriber_count:
            deadline = anyio.current_time() + _SRQ_WAIT
            stb = await device.worker.run(lambda call: _wait_rqs(device, call), deadline)
            if stb is not None and stb & 0x40:
                self._srq.publish(stb)


def _offline(device: Device) -> Callable[[Call], None]:
    def close(call: Call) -> None:
        device.close()

    return close


def _serial_poll(device: Device, call: Call) -> int:
    spr = ctypes.create_string_buffer(1)
    device.sliced(call, "ibrsp", lambda: device.lib.ibrsp(device.ud, spr))
    return spr.raw[0]


def _wait_rqs(device: Device, call: Call) -> int | None:
    """One bounded ``ibwait`` for RQS; the status byte if the device requested service."""
    device.timeout(call)
    sta = device.lib.ibwait(device.ud, _RQS | _TIMO)
    if sta & _ERR:
        device.check("ibwait")
    if not sta & _RQS:
        return None
    return _serial_poll(device, call)


async def _ibdev(
    lib: GpibLibrary,
    board: int,
    primary: int,
    secondary: int | None,
    resource: str,
    timeout: float | None,
) -> int:
    sad = 0 if secondary is None else secondary + 96

    def open_device() -> int:
        ud = lib.ibdev(board, primary, sad, timeout_code(10.0), 1, 0)
        sta, err, cnt = lib.status()
        if ud < 0 or sta & _ERR:
            raise error_for(resource, "ibdev", err, cnt, True)
        return int(ud)

    with anyio.fail_after(timeout if timeout is not None else math.inf):
        return await anyio.to_thread.run_sync(open_device)
