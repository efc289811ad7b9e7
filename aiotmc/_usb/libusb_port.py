"""Libusb1Port: a claimed USBTMC interface over python-libusb1 async transfers.

Implements :class:`aiotmc._usb.port.UsbPort`. Every data and control request is an
asynchronous libusb transfer driven by the context's event driver on the loop; the few
unavoidable blocking calls (device list, open, claim, clear halt, release) run in a
worker thread, one at a time. Choosing, opening, claiming and giving the interface back
are in :mod:`.claim`; several bulk transfers in flight at once in :mod:`.pipeline`.

Close order (design 2.1 rule 8): abort in-flight transfers and wait until libusb gives
them back -> release the interface (reattach a kernel driver we detached) -> close the
handle -> stop the driver and close the context when the port owns it. A transfer that
libusb never gives back makes the port leak its handle and context on purpose.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from functools import partial
from types import TracebackType

import anyio
import anyio.lowlevel

from .._exceptions import (
    ConnectionLostError,
    SessionBrokenError,
    UnsupportedOperation,
    UsbTransferError,
)
from .._types import BytesLike
from ..protocol.events import ControlRequest
from .claim import ClaimedInterface, choose_device, claim_interface, leak, release
from .context import LibusbTransfer, UsbContext
from .descriptors import UsbtmcInterface
from .discovery import UsbResourceInfo, list_usbtmc_devices, visa_usb_name
from .errors import LibusbError, TransferStatus, error_from_status, map_usb_errors
from .pipeline import Prepare, run_pipelined
from .port import PIPELINE_DEPTH, InterfaceProperties
from .transfer import AsyncTransfer, Completion

__all__ = ["Libusb1Port", "open_usb_port"]

logger = logging.getLogger(__name__)


def _round_up(size: int, packet: int) -> int:
    size = max(size, 1)
    return -(-size // packet) * packet


class Libusb1Port(InterfaceProperties):
    """An opened, claimed USBTMC interface (async context manager).

    ``Libusb1Port(vid, pid, serial, interface)`` does no I/O; entering opens: it lists
    USBTMC devices (private libusb context, worker thread), picks the one matching
    VID/PID (and serial, and interface number if given), opens it on its own (or the
    given) :class:`UsbContext`, detaches a kernel driver if one is bound and claims the
    interface. Raises ``ResourceNotFoundError`` (no match), ``AmbiguousDeviceError``
    (several devices and no serial), ``PermissionDeniedError`` (with a udev hint),
    ``ResourceBusyError``, ``ConnectError``.
    """

    def __init__(
        self,
        vid: int,
        pid: int,
        serial: str | None = None,
        interface: int | None = None,
        *,
        driver: str = "auto",
        context: UsbContext | None = None,
        library: str | None = None,
        cancel_grace: float = 1.0,
    ) -> None:
        self._vid = vid
        self._pid = pid
        self._serial = serial
        self._interface_wanted = interface
        self._driver_kind = driver
        self._context = context
        self._owns_context = context is None
        self._library = library
        self._cancel_grace = cancel_grace
        self._stack: AsyncExitStack | None = None
        self._opened: ClaimedInterface | None = None
        self._transfers: dict[str, AsyncTransfer] = {}
        self._closing = False
        self._closed = False
        self.info: UsbResourceInfo | None = None
        self.resource: str = visa_usb_name(vid, pid, serial, interface or 0)

    # -- UsbPort properties ------------------------------------------------------------

    @property
    def _iface(self) -> UsbtmcInterface:
        if self._opened is None:
            raise anyio.ClosedResourceError if self._closed else RuntimeError("port not open")
        return self._opened.interface

    def _interface_info(self) -> UsbtmcInterface:
        return self._iface

    @property
    def driver_name(self) -> str:
        """The event driver in use: ``"thread"`` or ``"pollfd"``."""
        if self._context is None:
            raise RuntimeError("port not open")
        return self._context.driver.name

    def last_cancelled(self, endpoint: int) -> Completion | None:
        """Completion of the last transfer on ``endpoint`` (0 = control) we cancelled.

        Its ``actual_length`` tells how much moved before the cancel took effect.
        """
        for transfer in self._transfers.values():
            if transfer.endpoint == endpoint:
                return transfer.last_cancelled
        return None

    # -- opening -----------------------------------------------------------------------

    async def __aenter__(self) -> Libusb1Port:
        if self._opened is not None or self._closed:
            raise RuntimeError("a Libusb1Port can be entered once")
        stack = AsyncExitStack()
        try:
            if self._context is None:
                self._context = await stack.enter_async_context(
                    UsbContext(driver=self._driver_kind, library=self._library)
                )
            await self._open(self._context)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await stack.aclose()
            self._closed = True
            raise
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _open(self, context: UsbContext) -> None:
        infos = await anyio.to_thread.run_sync(
            partial(list_usbtmc_devices, vid=self._vid, pid=self._pid, library=self._library)
        )
        info = choose_device(infos, self._vid, self._pid, self._serial, self._interface_wanted)
        self.info = info
        self.resource = info.visa_name
        opened = await claim_interface(context, info, resource=self.resource)
        self._opened = opened
        handle, usbtmc = opened.handle, opened.interface
        driver = context.driver
        make = partial(AsyncTransfer, driver=driver, resource=self.resource)
        self._transfers = {
            "bulk_out": make(
                handle.transfer(add_zero_packet=True),
                name="bulk-OUT",
                endpoint=usbtmc.bulk_out,
                cancel_grace=self._cancel_grace,
            ),
            "bulk_in": make(
                handle.transfer(),
                name="bulk-IN",
                endpoint=usbtmc.bulk_in,
                cancel_grace=self._cancel_grace,
            ),
            "control": make(
                handle.transfer(), name="control", endpoint=0, cancel_grace=self._cancel_grace
            ),
        }
        # Extra transfers so that several bulk transfers can be in flight per endpoint.
        for index in range(1, PIPELINE_DEPTH):
            self._transfers[f"bulk_out.{index}"] = make(
                handle.transfer(add_zero_packet=True),
                name=f"bulk-OUT.{index}",
                endpoint=usbtmc.bulk_out,
                cancel_grace=self._cancel_grace,
            )
            self._transfers[f"bulk_in.{index}"] = make(
                handle.transfer(),
                name=f"bulk-IN.{index}",
                endpoint=usbtmc.bulk_in,
                cancel_grace=self._cancel_grace,
            )
        if usbtmc.interrupt_in is not None:
            self._transfers["interrupt_in"] = make(
                handle.transfer(),
                name="interrupt-IN",
                endpoint=usbtmc.interrupt_in,
                cancel_grace=self._cancel_grace,
            )
        logger.debug("opened %s (driver %s)", self.resource, driver.name)

    # -- transfers ---------------------------------------------------------------------

    def _transfer(self, role: str) -> AsyncTransfer:
        if self._closing or self._closed:
            raise anyio.ClosedResourceError
        transfer = self._transfers.get(role)
        if transfer is None:
            if self._opened is None:
                raise RuntimeError("port not open")
            raise UnsupportedOperation(f"{self.resource}: the interface has no {role} endpoint")
        if transfer.zombie:
            raise SessionBrokenError(
                "an earlier transfer could not be cancelled; reopen the device",
                resource=self.resource,
            )
        if transfer.in_flight:
            raise anyio.BusyResourceError(f"using {transfer.name}")
        return transfer

    def _pool(self, role: str) -> list[AsyncTransfer]:
        """All transfers of a bulk endpoint (none may be busy or a zombie)."""
        first = self._transfer(role)
        pool = [first]
        for index in range(1, PIPELINE_DEPTH):
            transfer = self._transfers.get(f"{role}.{index}")
            if transfer is None:
                break
            if transfer.zombie:
                raise SessionBrokenError(
                    "an earlier transfer could not be cancelled; reopen the device",
                    resource=self.resource,
                )
            if transfer.in_flight:
                raise anyio.BusyResourceError(f"using {transfer.name}")
            pool.append(transfer)
        return pool

    async def _run(
        self,
        transfer: AsyncTransfer,
        prepare: Prepare,
        endpoint: int,
        on_submitted: Callable[[], None] | None = None,
    ) -> Completion:
        handle = transfer.handle
        assert isinstance(handle, LibusbTransfer)
        prepare(handle)
        completion = await transfer.run(on_submitted)
        if completion.error is not None:
            raise UsbTransferError(
                f"reading the completed transfer failed: {completion.error!r}",
                resource=self.resource,
                endpoint=endpoint,
            ) from completion.error
        if completion.status == TransferStatus.CANCELLED and (self._closing or self._closed):
            raise anyio.ClosedResourceError
        error = error_from_status(completion.status, resource=self.resource, endpoint=endpoint)
        if error is not None:
            raise error
        return completion

    def _run_submitted(
        self,
        endpoint: int,
        transfer: AsyncTransfer,
        prepare: Prepare,
        on_submitted: Callable[[], None],
    ) -> Awaitable[Completion]:
        """:meth:`_run` in the argument order :func:`run_pipelined` calls it."""
        return self._run(transfer, prepare, endpoint, on_submitted)

    async def bulk_out(self, data: BytesLike) -> int:
        """Send one bulk transfer (a zero-length packet follows when it ends on a packet)."""
        transfer = self._transfer("bulk_out")
        endpoint = self._iface.bulk_out
        payload = bytearray(data)  # one copy, handed to libusb without another
        completion = await self._run(transfer, lambda t: t.set_bulk(endpoint, payload), endpoint)
        return completion.actual_length

    async def bulk_out_many(
        self, chunks: Sequence[BytesLike], on_sent: Callable[[int], None] | None = None
    ) -> int:
        """Send one bulk transfer per chunk (ZLP after each that ends on a packet).

        Up to ``PIPELINE_DEPTH`` transfers in flight at once; returns the bytes sent.
        """
        pool = self._pool("bulk_out")
        endpoint = self._iface.bulk_out
        payloads = [bytearray(chunk) for chunk in chunks]
        sent = 0

        def done(index: int, completion: Completion) -> None:
            nonlocal sent
            sent += completion.actual_length
            if on_sent is not None:
                on_sent(index)

        def prepare(payload: bytearray) -> Prepare:
            return lambda t: t.set_bulk(endpoint, payload)

        await run_pipelined(
            pool,
            [prepare(p) for p in payloads],
            [len(p) for p in payloads],
            partial(self._run_submitted, endpoint),
            done,
        )
        return sent

    async def bulk_in_into(self, views: Sequence[memoryview]) -> list[int]:
        """Receive one bulk transfer per view, up to ``PIPELINE_DEPTH`` in flight.

        Each view but the last must be a multiple of wMaxPacketSize. Returns the actual
        length of each in order; after a short transfer the rest report 0.
        """
        pool = self._pool("bulk_in")
        endpoint = self._iface.bulk_in
        mps = self._iface.max_packet_size
        lengths = [0] * len(views)
        for view in views[:-1]:
            if len(view) % mps:
                raise ValueError(f"bulk-IN views must be multiples of {mps} bytes")

        def done(index: int, completion: Completion) -> None:
            data = completion.data
            view = views[index]
            n = min(len(data), len(view))
            view[:n] = data[:n]
            lengths[index] = n

        def prepare(length: int) -> Prepare:
            return lambda t: t.set_bulk(endpoint, length)

        await run_pipelined(
            pool,
            [prepare(_round_up(len(v), mps)) for v in views],
            [len(v) for v in views],
            partial(self._run_submitted, endpoint),
            done,
        )
        return lengths

    async def bulk_in(self, size: int) -> bytes:
        """Receive one bulk transfer; ``size`` is rounded up to a multiple of wMaxPacketSize.

        Ends at a short or zero-length packet, or when the buffer is full.
        """
        transfer = self._transfer("bulk_in")
        endpoint = self._iface.bulk_in
        length = _round_up(size, self._iface.max_packet_size)
        completion = await self._run(transfer, lambda t: t.set_bulk(endpoint, length), endpoint)
        return completion.data

    async def interrupt_in(self, size: int) -> bytes:
        """Receive one interrupt-IN transfer (USB488 notifications)."""
        transfer = self._transfer("interrupt_in")
        endpoint = self._iface.interrupt_in
        assert endpoint is not None
        length = _round_up(size, self._iface.interrupt_max_packet_size or 8)
        completion = await self._run(
            transfer, lambda t: t.set_interrupt(endpoint, length), endpoint
        )
        return completion.data

    async def control(self, request: ControlRequest) -> bytes:
        """Run a control transfer; returns the data stage for IN requests, b"" for OUT."""
        transfer = self._transfer("control")
        payload: bytes | int = request.length if request.is_in else bytes(request.data)
        completion = await self._run(
            transfer,
            lambda t: t.set_control(
                request.request_type, request.request, request.value, request.index, payload
            ),
            0,
        )
        return completion.data if request.is_in else b""

    async def clear_halt(self, endpoint: int) -> None:
        """CLEAR_FEATURE(ENDPOINT_HALT) via libusb_clear_halt (worker thread)."""
        if self._closing or self._closed:
            raise anyio.ClosedResourceError
        opened = self._opened
        context = self._context
        assert opened is not None and context is not None
        with map_usb_errors("clear halt", resource=self.resource, endpoint=endpoint):
            await context.run_sync(partial(opened.handle.clear_halt, endpoint))

    async def reset(self) -> None:
        """USB port reset (``libusb_reset_device``, worker thread); claims are restored.

        Raises ``ConnectionLostError`` if the device re-enumerated (reopen it).
        """
        if self._closing or self._closed:
            raise anyio.ClosedResourceError
        opened = self._opened
        context = self._context
        assert opened is not None and context is not None
        try:
            with map_usb_errors("USB reset", resource=self.resource):
                await context.run_sync(opened.handle.reset)
        except UsbTransferError as exc:
            if exc.status == LibusbError.NOT_FOUND:
                raise ConnectionLostError(
                    "the device re-enumerated after the reset; reopen it", resource=self.resource
                ) from exc
            raise

    # -- closing -----------------------------------------------------------------------

    async def aclose(self) -> None:
        """Release the interface and close the device; idempotent, completes if cancelled."""
        if self._closing or self._closed:
            await anyio.lowlevel.checkpoint()
            return
        self._closing = True
        try:
            with anyio.CancelScope(shield=True):
                try:
                    await self._close_device()
                finally:
                    stack, self._stack = self._stack, None
                    if stack is not None:
                        await stack.aclose()
        finally:
            self._closed = True
            self._closing = False

    async def _close_device(self) -> None:
        opened, self._opened = self._opened, None
        context = self._context
        transfers = list(self._transfers.values())
        for transfer in transfers:
            await transfer.abort()
        leaked = any(transfer.zombie for transfer in transfers)
        if opened is not None and context is not None:
            if leaked:
                leak(context, opened, transfers, resource=self.resource)
            else:
                await release(context, opened, transfers, resource=self.resource)
        self._transfers = {}


def open_usb_port(
    vid: int,
    pid: int,
    serial: str | None = None,
    interface: int | None = None,
    *,
    driver: str = "auto",
    context: UsbContext | None = None,
) -> Libusb1Port:
    """Open the USBTMC interface of a device: ``async with open_usb_port(...) as port``.

    ``driver`` is ``"auto"``, ``"thread"`` or ``"pollfd"`` (see :mod:`.driver`); pass a
    shared ``context`` to open several devices on one libusb context. See
    :class:`Libusb1Port` for the errors raised on entry.
    """
    return Libusb1Port(vid, pid, serial, interface, driver=driver, context=context)
