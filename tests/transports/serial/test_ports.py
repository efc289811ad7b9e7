"""Serial port discovery from a fake sysfs tree."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from aiotmc.transports.serial import (
    discover_ports,
    list_ports,
    list_serial_resources,
)
from aiotmc.transports.serial._ports import pyserial_ports

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sysfs")


def _tree(root: Path) -> Path:
    """ttyUSB0 behind an FTDI adapter, ttyS0 a placeholder, ttyS1 a real UART, tty1 none."""
    devices = root / "devices"
    usb = devices / "pci0000:00" / "usb1" / "1-2"
    interface = usb / "1-2:1.0" / "ttyUSB0"
    interface.mkdir(parents=True)
    for name, value in {
        "idVendor": "0403",
        "idProduct": "6001",
        "serial": "A10K7ZQX",
        "manufacturer": "FTDI",
        "product": "FT232R USB UART",
    }.items():
        (usb / name).write_text(value + "\n")
    uart = devices / "platform" / "serial8250"
    uart.mkdir(parents=True)
    tty = root / "class" / "tty"
    for name, target, kind in (
        ("ttyUSB0", interface, None),
        ("ttyS0", uart, "0"),
        ("ttyS1", uart, "4"),
    ):
        (tty / name).mkdir(parents=True)
        (tty / name / "device").symlink_to(target)
        if kind is not None:
            (tty / name / "type").write_text(kind + "\n")
    (tty / "tty1").mkdir()
    return tty


def test_list_ports_reads_usb_attributes(tmp_path: Path) -> None:
    ports = list_ports(_tree(tmp_path), Path("/dev"))
    assert [p.device for p in ports] == ["/dev/ttyS1", "/dev/ttyUSB0"]
    usb = ports[1]
    assert (usb.vid, usb.pid, usb.serial_number) == (0x0403, 0x6001, "A10K7ZQX")
    assert usb.resource == "ASRL/dev/ttyUSB0::INSTR"
    assert usb.summary() == "FTDI FT232R USB UART, USB VID:PID 0403:6001, serial A10K7ZQX"


def test_missing_sysfs_lists_nothing(tmp_path: Path) -> None:
    assert list_ports(tmp_path / "absent") == []


async def test_serial_resources_of_this_machine() -> None:
    found = await list_serial_resources()
    assert [r.resource for r in found] == [p.resource for p in discover_ports()]
    assert all(r.resource.startswith("ASRL/dev/") and r.description for r in found)


def test_pyserial_and_sysfs_agree_on_this_machine() -> None:
    """pyserial's list_ports (when installed) finds the ports the sysfs reader finds."""
    pytest.importorskip("serial")
    by_pyserial = pyserial_ports()
    assert by_pyserial is not None
    assert {p.device for p in by_pyserial} == {p.device for p in list_ports()}


def test_pyserial_port_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    list_ports_module = pytest.importorskip("serial.tools.list_ports")
    from serial.tools.list_ports_common import ListPortInfo

    usb = ListPortInfo("/dev/ttyUSB3", skip_link_detection=True)
    usb.vid, usb.pid, usb.serial_number = 0x0403, 0x6001, "A10K7ZQX"
    usb.manufacturer, usb.product = "FTDI", "FT232R USB UART"
    plain = ListPortInfo("/dev/ttyS4", skip_link_detection=True)
    monkeypatch.setattr(list_ports_module, "comports", lambda: [usb, plain])
    ports = discover_ports()
    assert [p.resource for p in ports] == ["ASRL/dev/ttyS4::INSTR", "ASRL/dev/ttyUSB3::INSTR"]
    assert ports[0].summary() == "serial port"
    assert ports[1].summary() == "FTDI FT232R USB UART, USB VID:PID 0403:6001, serial A10K7ZQX"
