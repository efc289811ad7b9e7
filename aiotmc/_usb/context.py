"""Typed, snake_case facades over python-libusb1, and the async :class:`UsbContext`.

python-libusb1 is untyped and camelCase; everything else in aiotmc sees only these
wrappers. Calls here are synchronous: the ones that block (open, claim, string
descriptors, device list, clear halt, close with the thread driver) are run by the
callers through ``UsbContext.run_sync`` (a worker thread, one at a time).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from types import TracebackType
from typing import Any, TypeVar

import anyio

from .descriptors import EndpointDescriptor, InterfaceDescriptor
from .driver import open_event_driver
from .driver_api import EventDriver, PollfdAdded, PollfdRemoved
from .errors import LibusbError, map_usb_errors, usb_error_code
from .library import load_libusb, usb1_module
from .transfer import Completion

__all__ = [
    "LibusbContext",
    "LibusbDevice",
    "LibusbHandle",
    "LibusbTransfer",
    "UsbContext",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")


def _disarm(obj: Any) -> None:
    """Stop python-libusb1 from running ``obj``'s finalizers at interpreter exit.

    For objects leaked on purpose (a transfer libusb never gave back): closing them at
    exit would spin ``handleEvents`` forever waiting for that transfer.
    """
    finalizers = list(getattr(obj, "_finalizer_dict", {}).values())
    own = getattr(obj, "_USBContext__close", None)
    if own is not None:
        finalizers.append(own)
    for finalizer in finalizers:
        if hasattr(finalizer, "atexit"):
            finalizer.atexit = False


class LibusbTransfer:
    """One ``usb1.USBTransfer`` (implements ``transfer.TransferHandle``)."""

    def __init__(self, transfer: Any) -> None:
        self._transfer = transfer
        self._is_in = False
        self._callback: Callable[[], None] | None = None

    def set_callback(self, callback: Callable[[], None]) -> None:
        self._callback = callback

    def _wrapped(self, _transfer: Any) -> None:
        callback = self._callback
        if callback is not None:
            callback()

    def set_bulk(self, endpoint: int, data_or_length: bytes | bytearray | int) -> None:
        """Prepare a bulk transfer: bytes to send (OUT) or a length to receive (IN)."""
        self._is_in = bool(endpoint & 0x80)
        self._transfer.setBulk(endpoint, data_or_length, callback=self._wrapped, timeout=0)

    def set_interrupt(self, endpoint: int, data_or_length: bytes | bytearray | int) -> None:
        self._is_in = bool(endpoint & 0x80)
        self._transfer.setInterrupt(endpoint, data_or_length, callback=self._wrapped, timeout=0)

    def set_control(
        self,
        request_type: int,
        request: int,
        value: int,
        index: int,
        data_or_length: bytes | int,
    ) -> None:
        self._is_in = bool(request_type & 0x80)
        self._transfer.setControl(
            request_type,
            request,
            value,
            index,
            data_or_length,
            callback=self._wrapped,
            timeout=0,
        )

    def submit(self) -> None:
        self._transfer.submit()

    def cancel(self) -> None:
        self._transfer.cancel()

    def snapshot(self) -> Completion:
        transfer = self._transfer
        status = int(transfer.getStatus())
        length = int(transfer.getActualLength())
        data = bytes(transfer.getBuffer()[:length]) if self._is_in and length > 0 else b""
        return Completion(status, length, data)

    def is_submitted(self) -> bool:
        return bool(self._transfer.isSubmitted())

    def close(self) -> None:
        """Free the transfer (only when it is not in flight)."""
        if not self.is_submitted():
            self._transfer.close()


class LibusbHandle:
    """An open ``usb1.USBDeviceHandle``."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def claim_interface(self, number: int) -> None:
        self._handle.claimInterface(number)

    def release_interface(self, number: int) -> None:
        self._handle.releaseInterface(number)

    def set_alt_setting(self, number: int, alt_setting: int) -> None:
        self._handle.setInterfaceAltSetting(number, alt_setting)

    def set_auto_detach_kernel_driver(self, enable: bool) -> bool:
        """True when libusb will detach/reattach kernel drivers around claims."""
        try:
            self._handle.setAutoDetachKernelDriver(enable)
        except Exception as exc:
            if usb_error_code(exc) == LibusbError.NOT_SUPPORTED:
                return False
            raise
        return True

    def kernel_driver_active(self, number: int) -> bool:
        try:
            return bool(self._handle.kernelDriverActive(number))
        except Exception as exc:
            if usb_error_code(exc) in (LibusbError.NOT_SUPPORTED, LibusbError.NOT_FOUND):
                return False
            raise

    def detach_kernel_driver(self, number: int) -> None:
        self._handle.detachKernelDriver(number)

    def attach_kernel_driver(self, number: int) -> None:
        self._handle.attachKernelDriver(number)

    def clear_halt(self, endpoint: int) -> None:
        self._handle.clearHalt(endpoint)

    def reset(self) -> None:
        self._handle.resetDevice()

    def string(self, index: int) -> str | None:
        """String descriptor ``index`` in the first language (None for index 0)."""
        if not index:
            return None
        value = self._handle.getASCIIStringDescriptor(index, errors="replace")
        return None if value is None else str(value)

    def transfer(self, *, add_zero_packet: bool = False) -> LibusbTransfer:
        return LibusbTransfer(self._handle.getTransfer(add_zero_packet=add_zero_packet))

    def close(self) -> None:
        self._handle.close()

    def leak(self) -> None:
        """Keep forever, never finalize (see :func:`_disarm`)."""
        _disarm(self._handle)


class LibusbDevice:
    """A ``usb1.USBDevice`` from a device list (descriptors cached by the OS)."""

    def __init__(self, device: Any) -> None:
        self._device = device
        self.vid: int = int(device.getVendorID())
        self.pid: int = int(device.getProductID())
        self.bus: int = int(device.getBusNumber())
        self.address: int = int(device.getDeviceAddress())
        try:
            self.port_numbers: tuple[int, ...] = tuple(device.getPortNumberList() or ())
        except Exception:
            self.port_numbers = ()
        descriptor = device.device_descriptor
        self.manufacturer_index: int = int(descriptor.iManufacturer)
        self.product_index: int = int(descriptor.iProduct)
        self.serial_index: int = int(descriptor.iSerialNumber)

    def interfaces(self) -> list[InterfaceDescriptor]:
        """Every interface/alternate setting of every configuration."""
        result = []
        for setting in self._device.iterSettings():
            endpoints = tuple(
                EndpointDescriptor(
                    address=int(ep.getAddress()),
                    attributes=int(ep.getAttributes()),
                    max_packet_size=int(ep.getMaxPacketSize()),
                )
                for ep in setting
            )
            result.append(
                InterfaceDescriptor(
                    number=int(setting.getNumber()),
                    alt_setting=int(setting.getAlternateSetting()),
                    interface_class=int(setting.getClass()),
                    interface_subclass=int(setting.getSubClass()),
                    interface_protocol=int(setting.getProtocol()),
                    endpoints=endpoints,
                )
            )
        return result

    def open(self) -> LibusbHandle:
        return LibusbHandle(self._device.open())

    def close(self) -> None:
        """Drop the device reference (closes handles opened from it)."""
        self._device.close()

    def leak(self) -> None:
        """Keep forever, never finalize (see :func:`_disarm`)."""
        _disarm(self._device)


class LibusbContext:
    """A ``usb1.USBContext`` (implements ``driver.EventContext``)."""

    def __init__(self, context: Any) -> None:
        self._context = context
        self._added: Any = None
        self._removed: Any = None

    @classmethod
    def create(cls, *, library: str | None = None) -> LibusbContext:
        """Load libusb (see :mod:`.library`) and initialise a context (blocking)."""
        load_libusb(library)
        usb1 = usb1_module()
        context = usb1.USBContext()
        with map_usb_errors("libusb_init", opening=True):
            context.open()
        return cls(context)

    # -- EventContext ------------------------------------------------------------------

    def handle_events_timeout(self, seconds: float) -> None:
        self._context.handleEventsTimeout(seconds)

    def interrupt_event_handler(self) -> bool:
        try:
            self._context.interruptEventHandler()
        except AttributeError:  # libusb < 1.0.21
            return False
        return True

    def supports_interrupt(self) -> bool:
        usb1 = usb1_module()
        library = getattr(usb1.libusb1, "libusb", None)
        return library is None or hasattr(library, "libusb_interrupt_event_handler")

    def get_pollfds(self) -> list[tuple[int, int]]:
        return [(int(fd), int(events)) for fd, events in self._context.getPollFDList()]

    def set_pollfd_notifiers(
        self, added: PollfdAdded | None, removed: PollfdRemoved | None
    ) -> None:
        # python-libusb1 keeps the ctypes thunks alive; keep the Python callables too.
        self._added = None if added is None else (lambda fd, events, _user: added(fd, events))
        self._removed = None if removed is None else (lambda fd, _user: removed(fd))
        self._context.setPollFDNotifiers(self._added, self._removed)

    def get_next_timeout(self) -> float | None:
        value = self._context.getNextTimeout()
        return None if value is None else float(value)

    # -- devices -----------------------------------------------------------------------

    def devices(self) -> list[LibusbDevice]:
        """The devices currently attached (blocking: run in a worker thread)."""
        result = []
        for device in self._context.getDeviceIterator(skip_on_error=True):
            try:
                result.append(LibusbDevice(device))
            except Exception:  # pragma: no cover - a device vanishing mid-listing
                logger.debug("skipping a device", exc_info=True)
        return result

    def close(self) -> None:
        self._context.close()

    def leak(self) -> None:
        """Keep forever, never exit libusb (see :func:`_disarm`)."""
        _disarm(self._context)


class UsbContext:
    """One libusb context plus its event driver (async context manager).

    Owned by an instrument/port or a group scope; never global. Blocking libusb calls
    go through :meth:`run_sync` (worker thread, CapacityLimiter(1)).
    """

    def __init__(self, *, driver: str = "auto", library: str | None = None) -> None:
        self._driver_kind = driver
        self._library = library
        self._libusb: LibusbContext | None = None
        self._driver: EventDriver | None = None
        self._driver_cm: Any = None
        self._leaked = False
        self.limiter = anyio.CapacityLimiter(1)

    @property
    def libusb(self) -> LibusbContext:
        if self._libusb is None:
            raise RuntimeError("UsbContext is not open")
        return self._libusb

    @property
    def driver(self) -> EventDriver:
        if self._driver is None:
            raise RuntimeError("UsbContext is not open")
        return self._driver

    async def run_sync(self, fn: Callable[[], T]) -> T:
        """Run a blocking libusb call in a worker thread (one at a time)."""
        return await anyio.to_thread.run_sync(fn, limiter=self.limiter)

    def leak(self) -> None:
        """Never close this context: a transfer on it could not be cancelled."""
        self._leaked = True

    async def __aenter__(self) -> UsbContext:
        self._libusb = await self.run_sync(partial(LibusbContext.create, library=self._library))
        try:
            self._driver_cm = open_event_driver(self._libusb, self._driver_kind)
            self._driver = await self._driver_cm.__aenter__()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.run_sync(self._libusb.close)
            self._libusb = None
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with anyio.CancelScope(shield=True):
            try:
                if self._driver_cm is not None:
                    driver_cm, self._driver_cm = self._driver_cm, None
                    await driver_cm.__aexit__(None, None, None)
            finally:
                self._driver = None
                libusb, self._libusb = self._libusb, None
                if libusb is not None:
                    if self._leaked:
                        logger.error("libusb context leaked on purpose (uncancellable transfer)")
                        libusb.leak()
                        _LEAKED.append(libusb)
                    else:
                        await self.run_sync(libusb.close)


_LEAKED: list[LibusbContext] = []
