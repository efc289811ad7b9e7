"""FakeUsbPort: an in-process :class:`~aiotmc._usb.port.UsbPort` that drives a UsbFunction.

Use it to run the real :class:`~aiotmc.transports.usbtmc.UsbtmcTransport` (framing,
aborts, interrupt reader) against an emulated instrument without libusb::

    function = UsbtmcFunction(create_device("dmm"))
    async with open_usbtmc_transport(FakeUsbPort(function), resource=...) as transport:
        ...

Semantics follow a host controller: a NAK (``None`` from the function) waits, without
polling, until the function's next deadline passes or something changes (another call,
an SRQ, a disconnect); a STALL raises :class:`~aiotmc.UsbStallError`; an unplugged
function raises :class:`~aiotmc.ConnectionLostError`. A cancelled call consumed nothing.

For tests: :attr:`FakeUsbPort.requests` records every control request (clear_halt as a
standard CLEAR_FEATURE request), :meth:`FakeUsbPort.hold` parks the next call of an
operation until released, so a test can cancel exactly there without sleeping.
"""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar, runtime_checkable

import anyio
from anyio.lowlevel import checkpoint

from .._exceptions import ConnectionLostError, ResourceNotFoundError, UsbStallError
from .._types import BytesLike
from .._usb.port import PIPELINE_DEPTH, InterfaceProperties
from ..protocol.events import ControlRequest
from ..protocol.usbtmc import clear_feature_endpoint_halt_request
from .usb_function import Stall, UsbFunction

__all__ = ["FakeUsbPort", "Hold", "Operation"]

T = TypeVar("T")
Operation = Literal["bulk_out", "bulk_in", "interrupt_in", "control"]


@runtime_checkable
class _Wakeable(Protocol):
    def set_wakeup(self, callback: Callable[[], None] | None) -> None: ...


@runtime_checkable
class _Resettable(Protocol):
    def reset(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _Interface:
    number: int
    bulk_in: int
    bulk_out: int
    interrupt_in: int | None
    max_packet_size: int
    interrupt_max_packet_size: int
    usb488: bool


def _find_usbtmc_interface(descriptors: bytes) -> _Interface:
    """The first interface of class 0xFE/0x03 in device + configuration descriptors."""
    pos = 0
    found: dict[str, int] = {}
    in_tmc = False
    number = protocol = 0
    while pos + 2 <= len(descriptors):
        length, kind = descriptors[pos], descriptors[pos + 1]
        if length < 2:
            break
        body = descriptors[pos : pos + length]
        if kind == 4:  # interface
            if found and in_tmc:
                break
            in_tmc = body[5] == 0xFE and body[6] == 0x03
            number, protocol = body[2], body[7]
        elif kind == 5 and in_tmc:  # endpoint
            address, attributes = body[2], body[3] & 3
            (size,) = struct.unpack_from("<H", body, 4)
            if attributes == 2:
                key = "bulk_in" if address & 0x80 else "bulk_out"
                found[key] = address
                if address & 0x80:
                    found["mps"] = size & 0x7FF
            elif attributes == 3 and address & 0x80:
                found["interrupt_in"] = address
                found["interrupt_mps"] = size & 0x7FF
        pos += length
    if "bulk_in" not in found or "bulk_out" not in found:
        raise ResourceNotFoundError("no USBTMC interface with bulk-IN and bulk-OUT endpoints")
    return _Interface(
        number=number,
        bulk_in=found["bulk_in"],
        bulk_out=found["bulk_out"],
        interrupt_in=found.get("interrupt_in"),
        max_packet_size=found["mps"],
        interrupt_max_packet_size=found.get("interrupt_mps", 8),
        usb488=protocol == 1,
    )


class Hold:
    """A parked call: the next ``operation`` call (after ``after`` others) waits here.

    ``reached`` is set when the call arrives; :meth:`release` lets it go on. A held
    ``bulk_out`` cancelled while parked first delivers ``deliver_on_cancel`` bytes (whole
    packets) to the function, as a host controller that had sent part of the transfer.
    """

    def __init__(self, operation: Operation, after: int, deliver_on_cancel: int) -> None:
        self.operation = operation
        self.after = after
        self.deliver_on_cancel = deliver_on_cancel
        self.reached = anyio.Event()
        self._released = anyio.Event()
        self.cancelled = False

    def release(self) -> None:
        """Let the parked call (and later ones) continue."""
        self._released.set()

    async def _park(self) -> None:
        self.reached.set()
        try:
            await self._released.wait()
        except BaseException:
            self.cancelled = True
            raise


class FakeUsbPort(InterfaceProperties):
    """An in-process UsbPort for a :class:`~aiotmc.sim.usb_function.UsbFunction`.

    ``clock`` must be the function's clock (default: ``function.clock`` or
    ``time.monotonic``). Endpoints and wMaxPacketSize come from the function's
    descriptors.
    """

    def __init__(self, function: UsbFunction, *, clock: Callable[[], float] | None = None) -> None:
        self.function = function
        default_clock: Callable[[], float] = getattr(function, "clock", time.monotonic)
        self._clock = clock or default_clock
        self._iface = _find_usbtmc_interface(function.descriptors)
        #: Every control request, in order (``clear_halt`` appears as CLEAR_FEATURE).
        self.requests: list[ControlRequest] = []
        #: How many calls each operation made (counted on entry).
        self.calls: dict[str, int] = {"bulk_out": 0, "bulk_in": 0, "interrupt_in": 0, "control": 0}
        self.resets = 0
        #: Bulk transfers outstanding now, and the most ever outstanding at once.
        self.in_flight: dict[str, int] = {"bulk_out": 0, "bulk_in": 0}
        self.peak_in_flight: dict[str, int] = {"bulk_out": 0, "bulk_in": 0}
        self._holds: list[Hold] = []
        # Waiters per side: bulk-IN, interrupt-IN. A function that reports its own
        # asynchronous changes (set_wakeup: SRQs, unplug) only changes the interrupt side
        # during control requests, so bulk traffic need not wake the interrupt reader.
        self._changed: dict[bool, anyio.Event | None] = {False: None, True: None}
        self._sleeps_until: dict[bool, float] = {False: math.inf, True: math.inf}
        self._busy: set[str] = set()
        self._closed = False
        self._self_reporting = isinstance(function, _Wakeable)
        if isinstance(function, _Wakeable):
            function.set_wakeup(self.notify)

    def _interface_info(self) -> _Interface:
        return self._iface

    # -- test hooks --------------------------------------------------------------------------

    def hold(self, operation: Operation, *, after: int = 0, deliver_on_cancel: int = 0) -> Hold:
        """Park the next ``operation`` call once ``after`` more calls have passed."""
        hold = Hold(operation, self.calls[operation] + after, deliver_on_cancel)
        self._holds.append(hold)
        return hold

    def notify(self) -> None:
        """Wake waiting calls: the function changed outside a port call."""
        self._wake(interrupt=True)

    def _wake(self, *, interrupt: bool) -> None:
        if not interrupt and self._self_reporting and self._changed[True] is not None:
            # Bulk traffic can still arm an earlier deadline (a triggered operation whose
            # completion raises an SRQ): the interrupt side must recompute its sleep.
            due = self.function.next_deadline()
            interrupt = due is not None and due < self._sleeps_until[True]
        sides = (False, True) if interrupt or not self._self_reporting else (False,)
        for side in sides:
            changed = self._changed[side]
            if changed is not None:
                self._changed[side] = None
                changed.set()

    # -- UsbPort operations --------------------------------------------------------------------

    async def bulk_out(self, data: BytesLike) -> int:
        """Deliver one bulk-OUT transfer."""
        return await self.bulk_out_many([data])

    async def bulk_out_many(
        self, chunks: Sequence[BytesLike], on_sent: Callable[[int], None] | None = None
    ) -> int:
        """Deliver one bulk-OUT transfer per chunk, in order, several "in flight"."""
        payloads = [c if isinstance(c, bytes) else bytes(c) for c in chunks]
        endpoint = self._iface.bulk_out
        await checkpoint()
        self._check()
        if "bulk_out" in self._busy:
            raise anyio.BusyResourceError("bulk_out already in progress")
        self._busy.add("bulk_out")
        sent = 0
        try:
            for index, payload in enumerate(payloads):
                self._outstanding("bulk_out", len(payloads) - index)
                hold = await self._enter("bulk_out", exclusive=False)
                if hold is not None:
                    try:
                        await hold._park()
                    except BaseException:
                        if hold.deliver_on_cancel:
                            mps = self._iface.max_packet_size
                            part = payload[: hold.deliver_on_cancel // mps * mps]
                            self.function.bulk_out(endpoint, part)
                            self._wake(interrupt=False)
                        raise
                self._check()
                result = self.function.bulk_out(endpoint, payload)
                self._wake(interrupt=False)
                if isinstance(result, Stall):
                    raise UsbStallError(
                        f"bulk-OUT endpoint {endpoint:#04x} stalled", endpoint=endpoint
                    )
                sent += len(payload)
                if on_sent is not None:
                    on_sent(index)
            return sent
        finally:
            self.in_flight["bulk_out"] = 0
            self._busy.discard("bulk_out")

    async def bulk_in(self, size: int) -> bytes:
        """Read one bulk-IN transfer of at most ``size`` bytes."""
        endpoint = self._iface.bulk_in
        if "bulk_in" not in self._busy:
            self._outstanding("bulk_in", 1)
        try:
            return await self._read(
                "bulk_in", endpoint, lambda: self.function.bulk_in(endpoint, size), interrupt=False
            )
        finally:
            if "bulk_in" not in self._busy:
                self.in_flight["bulk_in"] = 0

    async def bulk_in_into(self, views: Sequence[memoryview]) -> list[int]:
        """Read one bulk-IN transfer per view, in order, several "in flight".

        A short transfer ends the read (the rest report 0); a cancellation loses what
        the completed transfers had read, as with libusb.
        """
        endpoint = self._iface.bulk_in
        mps = self._iface.max_packet_size
        for view in views[:-1]:
            if len(view) % mps:
                raise ValueError(f"bulk-IN views must be multiples of {mps} bytes")
        await checkpoint()
        self._check()
        if "bulk_in" in self._busy:
            raise anyio.BusyResourceError("bulk_in already in progress")
        self._busy.add("bulk_in")
        lengths = [0] * len(views)
        try:
            for index, view in enumerate(views):
                self._outstanding("bulk_in", len(views) - index)
                size = len(view)
                data = await self._read(
                    "bulk_in",
                    endpoint,
                    lambda size=size: self.function.bulk_in(endpoint, size),  # type: ignore[misc]
                    interrupt=False,
                    exclusive=False,
                )
                n = min(len(data), size)
                view[:n] = data[:n]
                lengths[index] = n
                if n < size:
                    break
            return lengths
        finally:
            self.in_flight["bulk_in"] = 0
            self._busy.discard("bulk_in")

    def _outstanding(self, operation: str, left: int) -> None:
        count = min(left, PIPELINE_DEPTH)
        self.in_flight[operation] = count
        self.peak_in_flight[operation] = max(self.peak_in_flight[operation], count)

    async def interrupt_in(self, size: int) -> bytes:
        """Read one interrupt-IN transfer."""
        endpoint = self._iface.interrupt_in
        if endpoint is None:
            raise UsbStallError("the interface has no interrupt-IN endpoint")
        return await self._read(
            "interrupt_in",
            endpoint,
            lambda: self.function.interrupt_in(endpoint, size),
            interrupt=True,
        )

    async def control(self, request: ControlRequest) -> bytes:
        """Run a control transfer (recorded in :attr:`requests`)."""
        hold = await self._enter("control", exclusive=False)
        if hold is not None:
            await hold._park()
        self._check()
        self.requests.append(request)
        result = self.function.control(request)
        self.notify()
        if isinstance(result, Stall):
            raise UsbStallError(
                f"control request {request.request:#04x} stalled",
                endpoint=0,
            )
        return result if request.is_in else b""

    async def clear_halt(self, endpoint: int) -> None:
        """CLEAR_FEATURE(ENDPOINT_HALT) on ``endpoint``."""
        await checkpoint()
        self._check()
        self.requests.append(clear_feature_endpoint_halt_request(endpoint))
        self.function.clear_halt(endpoint)
        self.notify()

    async def reset(self) -> None:
        """USB port reset (the function's ``reset()`` if it has one)."""
        await checkpoint()
        self._check()
        self.resets += 1
        if isinstance(self.function, _Resettable):
            self.function.reset()
        self.notify()

    async def aclose(self) -> None:
        """Close the port; idempotent. Waiting calls raise ClosedResourceError."""
        self._closed = True
        self.notify()
        await checkpoint()

    # -- internals -----------------------------------------------------------------------------

    def _check(self) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        if not self.function.connected:
            raise ConnectionLostError("the USB device was disconnected")

    async def _enter(self, operation: Operation, *, exclusive: bool = True) -> Hold | None:
        await checkpoint()
        self._check()
        if exclusive:
            if operation in self._busy:
                raise anyio.BusyResourceError(f"{operation} already in progress")
            self._busy.add(operation)
        count = self.calls[operation]
        self.calls[operation] = count + 1
        for hold in self._holds:
            if hold.operation == operation and hold.after == count:
                self._holds.remove(hold)
                return hold
        return None

    async def _read(
        self,
        operation: Operation,
        endpoint: int,
        attempt: Callable[[], bytes | Stall | None],
        *,
        interrupt: bool,
        exclusive: bool = True,
    ) -> bytes:
        hold = await self._enter(operation, exclusive=exclusive)
        try:
            if hold is not None:
                await hold._park()
            while True:
                self._check()
                result = attempt()
                if isinstance(result, Stall):
                    raise UsbStallError(f"endpoint {endpoint:#04x} stalled", endpoint=endpoint)
                if result is not None:
                    self._wake(interrupt=False)
                    return result
                await self._wait_for_change(interrupt)
        finally:
            if exclusive:
                self._busy.discard(operation)

    async def _wait_for_change(self, interrupt: bool) -> None:
        """Sleep until the function's deadline or a change, then run its time-based work."""
        changed = self._changed[interrupt]
        if changed is None:
            changed = self._changed[interrupt] = anyio.Event()
        deadline = self.function.next_deadline()
        self._sleeps_until[interrupt] = math.inf if deadline is None else deadline
        if deadline is None:
            await changed.wait()
            return
        delay = deadline - self._clock()
        if delay > 0 and not math.isinf(delay):
            with anyio.move_on_after(delay):
                await changed.wait()
        else:
            await checkpoint()
        if self._clock() >= deadline:
            self.function.poll()
            self.notify()
