"""``aiotmc list``: the attached USBTMC instruments and the simulated models."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from .._exceptions import InvalidResourceName
from ..resources import UsbInstr
from ._catalog import SIM_MODELS
from ._errors import describe
from ._runtime import Options, run_async

if TYPE_CHECKING:
    from .._usb.discovery import UsbResourceInfo


def cmd_list(args: argparse.Namespace, options: Options) -> int:
    async def run() -> list[tuple[str, str]]:
        return await _usb_instruments()

    usb = run_async(options, run)
    rows = list(usb)
    rows += [
        (f"SIM::{model}", f"simulated {what} (in-process)") for model, what in SIM_MODELS.items()
    ]
    width = max(len(name) for name, _ in rows)
    for name, what in rows:
        print(f"{name:<{width}}  {what}")
    return 0


async def _usb_instruments() -> list[tuple[str, str]]:
    """``(resource, description)`` for attached USBTMC instruments; notes problems on stderr."""
    import anyio

    try:
        from .._usb.discovery import list_usbtmc_devices
    except ImportError as exc:  # the "usb" extra (libusb1) is not installed
        print(f"aiotmc: note: USB discovery unavailable ({exc})", file=sys.stderr)
        return []
    try:
        found = await anyio.to_thread.run_sync(list_usbtmc_devices, abandon_on_cancel=True)
    except Exception as exc:  # no libusb, no permission to enumerate...
        print(f"aiotmc: note: cannot list USB instruments ({describe(exc)})", file=sys.stderr)
        return []
    if not found:
        print("aiotmc: note: no USB instruments found", file=sys.stderr)
    rows = []
    for info in found:
        words = [w for w in (info.manufacturer, info.product) if w] or ["USBTMC instrument"]
        if info.usb488:
            words.append("(USB488)")
        if not info.accessible:
            words.append("(no access: check the udev rules / driver)")
        rows.append((_usb_name(info), " ".join(words)))
    return rows


def _usb_name(info: UsbResourceInfo) -> str:
    """The canonical name (serial left out when the device has none: an aiotmc extension)."""
    try:
        return str(
            UsbInstr(
                vid=info.vid,
                pid=info.pid,
                serial=info.serial or None,
                interface=info.interface or None,
            )
        )
    except InvalidResourceName:  # e.g. a serial number with spaces
        return info.visa_name
