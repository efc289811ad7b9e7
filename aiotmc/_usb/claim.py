"""Choosing, opening and claiming a USBTMC interface, and giving it back.

The libusb calls here block (device list, open, claim, release): the port runs them in
a worker thread through its :class:`~aiotmc._usb.context.UsbContext`. Giving back follows
design 2.1 rule 8: release the interface, reattach a kernel driver we detached, free the
transfers, close the handle (through the driver: it removes an event source), close the
device. A port whose transfers libusb never gave back leaks all of it instead (:func:`leak`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Final

import anyio

from .._exceptions import PermissionDeniedError, ResourceNotFoundError
from .context import LibusbDevice, LibusbHandle, LibusbTransfer, UsbContext
from .descriptors import UsbtmcInterface, find_usbtmc_interfaces
from .discovery import UsbResourceInfo, visa_usb_name
from .errors import AmbiguousDeviceError, map_usb_errors, udev_hint
from .transfer import AsyncTransfer

__all__ = ["ClaimedInterface", "choose_device", "claim_interface", "leak", "release"]

logger = logging.getLogger(__name__)

#: What leaked ports left behind (uncancellable transfers): kept alive forever on purpose.
LEAKED_HANDLES: Final[list[object]] = []


@dataclass(slots=True)
class ClaimedInterface:
    """An opened device with its USBTMC interface claimed."""

    device: LibusbDevice
    handle: LibusbHandle
    interface: UsbtmcInterface
    detached: bool = False  #: a kernel driver was detached (reattach it on release)


def choose_device(
    infos: Sequence[UsbResourceInfo],
    vid: int,
    pid: int,
    serial: str | None,
    interface: int | None,
) -> UsbResourceInfo:
    """The USBTMC interface to open among ``infos`` (devices listed with this VID/PID).

    Raises ``ResourceNotFoundError`` (no match), ``AmbiguousDeviceError`` (several
    devices and no serial) or ``PermissionDeniedError`` (serial numbers unreadable).
    """
    wanted = visa_usb_name(vid, pid, serial, interface or 0)
    candidates = [info for info in infos if interface is None or info.interface == interface]
    if serial is not None:
        unreadable = [info for info in candidates if not info.accessible]
        candidates = [info for info in candidates if info.serial == serial]
        if not candidates and unreadable:
            raise PermissionDeniedError(
                f"cannot read the serial number of {len(unreadable)} matching device(s); "
                + udev_hint(vid, pid),
                resource=wanted,
            )
    if not candidates:
        present = ", ".join(info.visa_name for info in infos) or "none"
        raise ResourceNotFoundError(
            f"no USBTMC device matches {wanted} (USBTMC devices with this VID/PID: {present})"
        )
    devices = {(info.bus, info.address) for info in candidates}
    if len(devices) > 1:
        names = ", ".join(sorted({info.visa_name for info in candidates}))
        raise AmbiguousDeviceError(
            f"{len(devices)} devices match {wanted}; give a serial number to choose: {names}"
        )
    return min(candidates, key=lambda info: info.interface)


async def claim_interface(
    context: UsbContext, info: UsbResourceInfo, *, resource: str
) -> ClaimedInterface:
    """Open the device ``info`` names on ``context`` and claim its interface.

    A kernel driver bound to the interface is detached first. Raises
    ``PermissionDeniedError`` (with a udev hint), ``ResourceBusyError``, ``ConnectError``.
    """
    if not info.accessible:
        raise PermissionDeniedError(
            "cannot open the device; " + udev_hint(info.vid, info.pid), resource=resource
        )
    device, handle, usbtmc = await context.run_sync(partial(_open_sync, context, info, resource))
    claimed = ClaimedInterface(device, handle, usbtmc)
    try:
        claimed.detached = await context.run_sync(partial(_claim_sync, claimed, info, resource))
    except BaseException:
        with anyio.CancelScope(shield=True):
            await context.driver.run_source_change(handle.close)
            device.close()
        raise
    return claimed


def _open_sync(
    context: UsbContext, info: UsbResourceInfo, resource: str
) -> tuple[LibusbDevice, LibusbHandle, UsbtmcInterface]:
    target: LibusbDevice | None = None
    for device in context.libusb.devices():
        if (
            target is None
            and (device.bus, device.address) == (info.bus, info.address)
            and (device.vid, device.pid) == (info.vid, info.pid)
        ):
            target = device
        else:
            device.close()
    if target is None:
        raise ResourceNotFoundError(f"{resource} disappeared while opening")
    try:
        usbtmc = next(
            i for i in find_usbtmc_interfaces(target.interfaces()) if i.number == info.interface
        )
        with map_usb_errors(
            "opening the device", resource=resource, opening=True, vid=info.vid, pid=info.pid
        ):
            handle = target.open()
    except BaseException:
        target.close()
        raise
    return target, handle, usbtmc


def _claim_sync(claimed: ClaimedInterface, info: UsbResourceInfo, resource: str) -> bool:
    handle, number = claimed.handle, claimed.interface.number
    with map_usb_errors(
        "claiming the interface", resource=resource, opening=True, vid=info.vid, pid=info.pid
    ):
        detached = False
        if not handle.set_auto_detach_kernel_driver(True) and handle.kernel_driver_active(number):
            handle.detach_kernel_driver(number)
            detached = True
        handle.claim_interface(number)
        if claimed.interface.alt_setting:
            handle.set_alt_setting(number, claimed.interface.alt_setting)
    return detached


async def release(
    context: UsbContext,
    claimed: ClaimedInterface,
    transfers: Sequence[AsyncTransfer],
    *,
    resource: str,
) -> None:
    """Give the interface back and close the device (``transfers`` are all finished)."""
    number = claimed.interface.number
    try:
        await context.run_sync(partial(claimed.handle.release_interface, number))
    except Exception:
        logger.debug("%s: release_interface failed", resource, exc_info=True)
    if claimed.detached:
        try:
            await context.run_sync(partial(claimed.handle.attach_kernel_driver, number))
        except Exception:
            logger.debug("%s: reattaching the kernel driver failed", resource, exc_info=True)
    for transfer in transfers:
        handle = transfer.handle
        if isinstance(handle, LibusbTransfer):
            handle.close()
    try:
        await context.driver.run_source_change(claimed.handle.close)
    finally:
        claimed.device.close()


def leak(
    context: UsbContext,
    claimed: ClaimedInterface,
    transfers: Sequence[AsyncTransfer],
    *,
    resource: str,
) -> None:
    """Keep handle, device and context alive forever: libusb still owns a transfer."""
    logger.error("%s: leaking the device handle (uncancellable transfer)", resource)
    LEAKED_HANDLES.append((claimed, list(transfers)))
    claimed.handle.leak()
    claimed.device.leak()
    context.leak()
