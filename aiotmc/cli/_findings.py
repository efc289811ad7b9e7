"""What ``aiotmc info`` finds about this machine: event loops, and on Linux the USBTMC
devices attached with whether this user may open them (like ``pyvisa-info``).

Read from sysfs and ``/dev/bus/usb`` only: no libusb call, so it works without the ``usb``
extra and never disturbs an instrument in use.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path

__all__ = ["event_loops", "usb_findings"]

SYS_USB = Path("/sys/bus/usb/devices")
DEV_USB = Path("/dev/bus/usb")


def event_loops() -> list[str]:
    """One line per event loop aiotmc can run on, and whether it is installed."""
    lines = ["asyncio: available"]
    for name, extra in (("trio", "trio"), ("uvloop", "bench")):
        found = importlib.util.find_spec(name) is not None
        lines.append(f"{name}: {'available' if found else f'not installed (aiotmc[{extra}])'}")
    return lines


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return ""


def _can_open(node: Path) -> bool:
    return os.access(node, os.R_OK | os.W_OK)


def usb_findings(
    sys_root: Path = SYS_USB,
    dev_root: Path = DEV_USB,
    can_open: Callable[[Path], bool] = _can_open,
) -> list[str]:
    """One line per USBTMC interface attached: vendor:product, the device node and
    whether this user can read and write it, and the kernel driver bound to it."""
    if not sys.platform.startswith("linux"):
        return ["USB permission checks are made on Linux only"]
    if not sys_root.is_dir():
        return [f"no {sys_root}: cannot look for USB devices"]
    lines = []
    for iface in sorted(sys_root.glob("*:*")):
        if _read(iface / "bInterfaceClass") != "fe" or _read(iface / "bInterfaceSubClass") != "03":
            continue
        device = sys_root / iface.name.split(":", 1)[0]
        vid, pid = _read(device / "idVendor"), _read(device / "idProduct")
        bus, dev = _read(device / "busnum"), _read(device / "devnum")
        if not (bus.isdigit() and dev.isdigit()):
            continue
        node = dev_root / f"{int(bus):03d}" / f"{int(dev):03d}"
        if not node.exists():
            access = f"{node} missing"
        elif can_open(node):
            access = f"{node} read/write OK"
        else:
            access = f"no read/write access to {node}: add a udev rule (docs/usb.md, Permissions)"
        driver_link = iface / "driver"
        driver = driver_link.resolve().name if driver_link.exists() else ""
        bound = (
            f"; kernel driver {driver} bound (detached while opened by aiotmc)" if driver else ""
        )
        lines.append(f"USB {vid}:{pid} interface {iface.name}: {access}{bound}")
    return lines or ["no USBTMC interface attached"]
