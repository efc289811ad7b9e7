"""Serial port discovery (what ``aiotmc list`` shows).

:func:`discover_ports` asks pyserial's ``serial.tools.list_ports`` when pyserial is
installed (every platform it supports), else reads Linux sysfs itself
(:func:`list_ports`). Either way a port comes with its USB VID:PID, serial number and
description when it is a USB adapter.

In sysfs, a tty is listed when it has a device behind it that is not a placeholder: USB serial
adapters (``ttyUSB*``, ``ttyACM*``: with VID:PID, serial number, manufacturer and product
read from the USB device's sysfs attributes), PCI/PNP/platform UARTs that report a real
port type. The legacy ``ttyS*`` placeholders of the 8250 driver (``type`` 0: no UART)
are skipped, as pyserial's ``list_ports`` does. Elsewhere nothing is listed yet.
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["SerialPort", "discover_ports", "list_ports", "pyserial_ports"]

_SYSFS = Path("/sys/class/tty")


class SerialPort:
    """One port found: its device path and what is known about it."""

    __slots__ = ("description", "device", "pid", "serial_number", "vid")

    def __init__(
        self,
        device: str,
        *,
        vid: int | None = None,
        pid: int | None = None,
        serial_number: str | None = None,
        description: str = "",
    ) -> None:
        self.device = device
        self.vid = vid
        self.pid = pid
        self.serial_number = serial_number
        self.description = description

    @property
    def resource(self) -> str:
        """Its VISA resource name, ``ASRL<path>::INSTR``."""
        return f"ASRL{self.device}::INSTR"

    def summary(self) -> str:
        """One line for ``aiotmc list``."""
        parts = [self.description or "serial port"]
        if self.vid is not None and self.pid is not None:
            parts.append(f"USB VID:PID {self.vid:04X}:{self.pid:04X}")
        if self.serial_number:
            parts.append(f"serial {self.serial_number}")
        return ", ".join(parts)


def list_ports(sysfs: Path = _SYSFS, dev: Path = Path("/dev")) -> list[SerialPort]:
    """The serial ports attached (Linux sysfs); an empty list elsewhere."""
    if not sys.platform.startswith("linux") or not sysfs.is_dir():
        return []
    found = []
    for entry in sorted(sysfs.iterdir()):
        device = entry / "device"
        if not device.exists():
            continue  # virtual terminals, ptys, consoles
        if entry.name.startswith("ttyS") and _read(entry / "type") in ("0", ""):
            continue  # an 8250 placeholder with no UART behind it
        usb = _usb_device(device.resolve())
        if usb is None:
            found.append(SerialPort(str(dev / entry.name), description=_driver(device)))
            continue
        found.append(
            SerialPort(
                str(dev / entry.name),
                vid=_hex(_read(usb / "idVendor")),
                pid=_hex(_read(usb / "idProduct")),
                serial_number=_read(usb / "serial") or None,
                description=" ".join(
                    p for p in (_read(usb / "manufacturer"), _read(usb / "product")) if p
                ),
            )
        )
    return found


def pyserial_ports() -> list[SerialPort] | None:
    """The ports pyserial's ``list_ports.comports()`` finds; None without pyserial."""
    try:
        from serial.tools import list_ports as pyserial_list  # type: ignore[import-untyped]
    except ImportError:
        return None
    found = []
    for info in sorted(pyserial_list.comports(), key=lambda port: str(port.device)):
        parts = [_known(info.manufacturer), _known(info.product)]
        description = " ".join(p for p in parts if p) or _known(info.description)
        found.append(
            SerialPort(
                str(info.device),
                vid=info.vid,
                pid=info.pid,
                serial_number=_known(info.serial_number) or None,
                description=description,
            )
        )
    return found


def discover_ports() -> list[SerialPort]:
    """The serial ports attached: through pyserial when installed, else sysfs."""
    found = pyserial_ports()
    return list_ports() if found is None else found


def _known(value: object) -> str:
    text = "" if value is None else str(value).strip()
    return "" if text.lower() == "n/a" else text


def _usb_device(path: Path) -> Path | None:
    """The USB device directory above an interface (the one with ``idVendor``)."""
    for parent in (path, *path.parents):
        if (parent / "idVendor").is_file():
            return parent
        if parent == parent.parent or parent.name == "devices":
            break
    return None


def _driver(device: Path) -> str:
    driver = device / "driver"
    name = driver.resolve().name if driver.exists() else ""
    return f"serial port ({name})" if name and name != "port" else "serial port"


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""


def _hex(text: str) -> int | None:
    try:
        return int(text, 16)
    except ValueError:
        return None
