"""The device side of a USB link, as the USB emulators drive it (stdlib only, no I/O).

A *USB function* is what sits behind the bus: descriptors, a control endpoint and the
bulk/interrupt endpoints. ``aiotmc.sim.usbtmc_device.UsbtmcFunction`` implements it for a
USBTMC/USB488 instrument; bus adapters drive it:

* ``aiotmc.sim.fake_port.FakeUsbPort``: in-process, implements ``aiotmc._usb.port.UsbPort``.
* the test beds of aiotmc's checkout (``testbeds/``, not installed): ``testbeds.umockdev``
  answers the Linux usbdevfs ioctls under umockdev, below real libusb; ``testbeds.usbredir``
  plugs the function into QEMU's ``usb-redir`` device, in front of a real kernel.

Everything here is synchronous and time is injected: an adapter asks ``next_deadline()``
and calls ``poll()`` when it passes, so the same model runs under anyio, under a GLib main
loop in the umockdev process, or in a plain test.
"""

from __future__ import annotations

from typing import Final, Protocol, runtime_checkable

from ..protocol.events import ControlRequest

__all__ = ["STALL", "Stall", "UsbFunction"]


class Stall:
    """Sentinel type: the endpoint answers with STALL (halt)."""

    _instance: Stall | None = None

    def __new__(cls) -> Stall:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "STALL"


STALL: Final = Stall()


@runtime_checkable
class UsbFunction(Protocol):
    """A USB device function, driven one transaction-level call at a time."""

    @property
    def descriptors(self) -> bytes:
        """Device descriptor followed by the full configuration descriptor (sysfs layout)."""
        ...

    @property
    def connected(self) -> bool:
        """False once the emulated device has been unplugged (fault injection)."""
        ...

    def control(self, request: ControlRequest) -> bytes | Stall:
        """Handle a control transfer: data stage for IN (at most ``request.length``), else b""."""
        ...

    def bulk_out(self, endpoint: int, data: bytes) -> Stall | None:
        """Accept one bulk-OUT transfer."""
        ...

    def bulk_in(self, endpoint: int, size: int) -> bytes | Stall | None:
        """What one bulk-IN URB of ``size`` bytes receives now, ``None`` if nothing yet (NAK).

        Returns at most ``size`` bytes: fewer (a short packet, possibly b"" for a ZLP) ends
        the transfer; exactly ``size`` fills the URB.
        """
        ...

    def interrupt_in(self, endpoint: int, size: int) -> bytes | Stall | None:
        """What one interrupt-IN URB receives now, ``None`` if nothing is pending."""
        ...

    def clear_halt(self, endpoint: int) -> None:
        """CLEAR_FEATURE(ENDPOINT_HALT) arrived for ``endpoint``."""
        ...

    def next_deadline(self) -> float | None:
        """Clock time at which ``poll()`` has something to do (delayed answer), or None."""
        ...

    def poll(self) -> None:
        """Advance time-based work (latency expired, operation complete, SRQ due)."""
        ...
