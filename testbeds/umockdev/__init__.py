"""Emulated USB devices under umockdev: real libusb in a client talks to a ``UsbFunction``.

The device side (:mod:`.server`, :mod:`.device`) runs under the system Python, which has
PyGObject and the UMockdev typelib, and needs nothing but the stdlib and
:mod:`aiotmc.sim`. It answers the usbdevfs ioctls libusb's Linux backend issues
(SUBMITURB, REAPURBNDELAY, DISCARDURB, CLAIMINTERFACE, ...) by driving a
:class:`~aiotmc.sim.usb_function.UsbFunction`. A client process started with
``LD_PRELOAD=libumockdev-preload.so.0 UMOCKDEV_DIR=<root>`` and the udev-based system
libusb then sees the device as if it were plugged in.

The harness side: :mod:`.host` (availability, the device process's command line and
environment, a client's environment) and :mod:`.control` (a client's end of the control
socket, under anyio).

Limits: the emulated device node is a regular file, so ``poll`` always reports it ready
and ``epoll`` refuses it: libusb's event handling never blocks on it (aiotmc's drivers
bound the resulting spin). umockdev does not tell the device side when a client dies
(it is polled).
"""

from __future__ import annotations

__all__: list[str] = []
