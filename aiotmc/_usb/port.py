"""The USB seam: what the USBTMC transport needs from a USB device, as async calls.

Two implementations: :class:`aiotmc._usb.libusb_port.Libusb1Port` (python-libusb1 async
transfers) and the in-process ``aiotmc.sim.usb.FakeUsbPort`` that drives the emulated
instrument directly. ``aiotmc.transports.usbtmc`` only ever sees this Protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final, Protocol, runtime_checkable

from .._types import BytesLike
from ..protocol.events import ControlRequest

__all__ = ["PIPELINE_DEPTH", "InterfaceProperties", "PipelinedUsbPort", "UsbPort"]

#: How many bulk transfers per endpoint the ports keep in flight at once.
PIPELINE_DEPTH: Final = 4


@runtime_checkable
class UsbPort(Protocol):
    """An opened, claimed USBTMC interface.

    Errors: ``ConnectionLostError`` when the device is gone, ``UsbStallError`` on STALL,
    ``UsbTransferError`` otherwise. Cancelling a call cancels its transfer(s) and returns
    only once libusb has given the buffers back.
    """

    @property
    def interface_number(self) -> int: ...
    @property
    def bulk_in_endpoint(self) -> int: ...
    @property
    def bulk_out_endpoint(self) -> int: ...
    @property
    def interrupt_in_endpoint(self) -> int | None: ...
    @property
    def max_packet_size(self) -> int:
        """wMaxPacketSize of the bulk-IN endpoint."""
        ...

    async def bulk_out(self, data: BytesLike) -> int:
        """Write one bulk transfer (zero-length packet appended if it ends on a packet)."""
        ...

    async def bulk_in(self, size: int) -> bytes:
        """Read one bulk transfer of at most ``size`` bytes (a multiple of max_packet_size).

        Ends at a short or zero-length packet, or when ``size`` bytes arrived.
        """
        ...

    async def interrupt_in(self, size: int) -> bytes:
        """Read one interrupt-IN transfer."""
        ...

    async def control(self, request: ControlRequest) -> bytes:
        """Run a control transfer; returns the data stage for IN requests, b"" for OUT."""
        ...

    async def clear_halt(self, endpoint: int) -> None:
        """CLEAR_FEATURE(ENDPOINT_HALT) on ``endpoint``."""
        ...

    async def aclose(self) -> None:
        """Release the interface and close the device; idempotent."""
        ...


@runtime_checkable
class PipelinedUsbPort(UsbPort, Protocol):
    """A UsbPort that can keep several bulk transfers in flight on one endpoint."""

    async def bulk_in_into(self, views: Sequence[memoryview]) -> list[int]:
        """Read one bulk-IN transfer per view, up to ``PIPELINE_DEPTH`` in flight at once.

        Every view but the last must be a multiple of max_packet_size. Returns the
        actual length of each, in order. A short transfer ends the read: the later ones
        are cancelled and drained and report 0. Cancelling cancels and drains all of them
        (data already received is lost, as for :meth:`bulk_in`).
        """
        ...

    async def bulk_out_many(
        self, chunks: Sequence[BytesLike], on_sent: Callable[[int], None] | None = None
    ) -> int:
        """Write one bulk-OUT transfer per chunk, several in flight; the bytes sent.

        ``on_sent(index)`` is called as each transfer completes (not necessarily in order).
        """
        ...


class _InterfaceInfo(Protocol):
    """What a port knows about its claimed interface (either port's descriptor record)."""

    @property
    def number(self) -> int: ...
    @property
    def bulk_in(self) -> int: ...
    @property
    def bulk_out(self) -> int: ...
    @property
    def interrupt_in(self) -> int | None: ...
    @property
    def max_packet_size(self) -> int: ...
    @property
    def interrupt_max_packet_size(self) -> int: ...
    @property
    def usb488(self) -> bool: ...


class InterfaceProperties:
    """The endpoint properties of :class:`UsbPort`, read from ``_interface_info()``.

    Shared by the libusb port and the in-process fake so both describe an interface the
    same way; a port implements ``_interface_info`` (raising while it is not open).
    """

    def _interface_info(self) -> _InterfaceInfo:
        raise NotImplementedError

    @property
    def interface_number(self) -> int:
        """bInterfaceNumber of the USBTMC interface."""
        return self._interface_info().number

    @property
    def bulk_in_endpoint(self) -> int:
        """Address of the bulk-IN endpoint."""
        return self._interface_info().bulk_in

    @property
    def bulk_out_endpoint(self) -> int:
        """Address of the bulk-OUT endpoint."""
        return self._interface_info().bulk_out

    @property
    def interrupt_in_endpoint(self) -> int | None:
        """Address of the interrupt-IN endpoint (USB488), if any."""
        return self._interface_info().interrupt_in

    @property
    def max_packet_size(self) -> int:
        """wMaxPacketSize of the bulk-IN endpoint."""
        return self._interface_info().max_packet_size

    @property
    def interrupt_max_packet_size(self) -> int:
        """wMaxPacketSize of the interrupt-IN endpoint."""
        return self._interface_info().interrupt_max_packet_size

    @property
    def usb488(self) -> bool:
        """The interface declares the USB488 subclass protocol."""
        return self._interface_info().usb488
