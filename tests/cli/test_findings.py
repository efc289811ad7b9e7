"""``aiotmc info``'s findings: event loops, USBTMC devices and permissions (fake sysfs)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from aiotmc.cli import main
from aiotmc.cli._findings import event_loops, usb_findings

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sysfs")


def fake_device(sys_root: Path, dev_root: Path, name: str, *, bus: int, dev: int) -> Path:
    device = sys_root / name
    device.mkdir(parents=True)
    for key, value in {"idVendor": "0957", "idProduct": "1796", "busnum": str(bus)}.items():
        (device / key).write_text(value + "\n")
    (device / "devnum").write_text(f"{dev}\n")
    iface = sys_root / f"{name}:1.0"
    iface.mkdir()
    (iface / "bInterfaceClass").write_text("fe\n")
    (iface / "bInterfaceSubClass").write_text("03\n")
    node = dev_root / f"{bus:03d}" / f"{dev:03d}"
    node.parent.mkdir(parents=True, exist_ok=True)
    node.write_bytes(b"")
    return node


@linux_only
def test_usb_findings(tmp_path: Path) -> None:
    sys_root, dev_root = tmp_path / "sys", tmp_path / "dev"
    sys_root.mkdir()
    assert usb_findings(sys_root, dev_root) == ["no USBTMC interface attached"]
    fake_device(sys_root, dev_root, "1-1", bus=1, dev=4)
    drivers = tmp_path / "drivers" / "usbtmc"
    drivers.mkdir(parents=True)
    (sys_root / "1-1:1.0" / "driver").symlink_to(drivers)
    other = sys_root / "1-2:1.0"  # not USBTMC: ignored
    other.mkdir()
    (other / "bInterfaceClass").write_text("09\n")
    (line,) = usb_findings(sys_root, dev_root)
    assert line.startswith("USB 0957:1796 interface 1-1:1.0: ")
    assert "001/004 read/write OK" in line and "kernel driver usbtmc bound" in line


@linux_only
def test_usb_findings_without_access(tmp_path: Path) -> None:
    fake_device(tmp_path / "sys", tmp_path / "dev", "2-1", bus=2, dev=7)
    # the real check is os.access, which root always passes: the test decides instead
    (line,) = usb_findings(tmp_path / "sys", tmp_path / "dev", can_open=lambda path: False)
    assert "no read/write access" in line and "udev rule" in line


def test_event_loops_and_info(capsys: pytest.CaptureFixture[str]) -> None:
    assert event_loops()[0] == "asyncio: available"
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "event loops:" in out and "USB devices and permissions:" in out
