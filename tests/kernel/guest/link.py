"""Guest side of the control channel: ask the host to plug, unplug and poke devices.

The host's :class:`~tests.kernel.harness.DeviceHub` answers JSON lines on the
virtio-serial port ``aiotmc.ctl`` (``AIOTMC_KT_CONTROL`` names its /dev node). After a
plug, :meth:`HostLink.plug` waits until the guest kernel has enumerated the device and
returns its sysfs view (:class:`UsbDevice`).
"""

from __future__ import annotations

import itertools
import json
import os
import select
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SYS_USB = Path("/sys/bus/usb/devices")
VID, PID = 0x0957, 0x1796
_serials = itertools.count(1)


@dataclass(frozen=True)
class UsbDevice:
    """An enumerated device as sysfs shows it."""

    serial: str
    sysfs: Path
    busnum: int
    devnum: int

    @property
    def interface(self) -> Path:
        return self.sysfs / f"{self.sysfs.name}:1.0"

    def driver(self) -> str | None:
        link = self.interface / "driver"
        return os.path.basename(os.readlink(link)) if link.is_symlink() else None

    def usbtmc_node(self) -> str | None:
        misc = self.interface / "usbmisc"
        names = sorted(p.name for p in misc.glob("usbtmc*")) if misc.is_dir() else []
        return f"/dev/{names[0]}" if names else None

    def present(self) -> bool:
        return (self.sysfs / "serial").is_file()


def find_device(serial: str) -> UsbDevice | None:
    for entry in SYS_USB.glob("*"):
        if ":" in entry.name:
            continue
        try:
            if (entry / "serial").read_text().strip() != serial:
                continue
            busnum = int((entry / "busnum").read_text())
            devnum = int((entry / "devnum").read_text())
        except OSError:
            continue
        return UsbDevice(serial, entry.resolve(), busnum, devnum)
    return None


def kernel_messages(last: int = 40) -> str:
    """The tail of the kernel log (/dev/kmsg, non-blocking)."""
    lines: list[str] = []
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        return f"(no /dev/kmsg: {exc})"
    try:
        while True:
            try:
                record = os.read(fd, 8192).decode(errors="replace")
            except BlockingIOError:
                break
            except OSError:
                continue  # EPIPE: overwritten records
            head, _, text = record.partition(";")
            text = text.split("\n", 1)[0]  # drop the SUBSYSTEM=/DEVICE= continuation lines
            stamp = head.split(",")[2] if head.count(",") >= 2 else "?"
            lines.append(f"[{int(stamp) / 1e6:10.3f}] {text.rstrip()}" if stamp.isdigit() else text)
    finally:
        os.close(fd)
    return "\n".join(lines[-last:])


def diagnostics() -> str:
    """What the guest knows about USB right now (for failure messages)."""
    parts = [
        "modules: "
        + " ".join(line.split()[0] for line in Path("/proc/modules").read_text().splitlines())
    ]
    for entry in sorted(SYS_USB.glob("*")):
        driver = entry / "driver"
        bound = os.path.basename(os.readlink(driver)) if driver.is_symlink() else "-"
        parts.append(f"{entry.name}: driver={bound}")
    parts.append("kernel log:\n" + kernel_messages())
    return "\n".join(parts)


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}\n{diagnostics()}")
        time.sleep(0.02)


class HostLink:
    """JSON-line requests to the host over the virtio-serial port (thread-safe)."""

    def __init__(self, path: str | None = None) -> None:
        path = path or os.environ.get("AIOTMC_KT_CONTROL", "")
        if not path:
            raise RuntimeError("AIOTMC_KT_CONTROL is not set: not inside the kernel-tier guest")
        self._fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        self._lock = threading.Lock()
        self._buffer = b""
        self.current: UsbDevice | None = None

    def request(self, op: str, timeout: float = 20.0, **fields: Any) -> Any:
        with self._lock:
            os.write(self._fd, json.dumps({"op": op, **fields}).encode() + b"\n")
            deadline = time.monotonic() + timeout
            while b"\n" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self._fd], [], [], left)[0]:
                    raise TimeoutError(f"host did not answer {op!r} within {timeout} s")
                self._buffer += os.read(self._fd, 65536)
            line, _, self._buffer = self._buffer.partition(b"\n")
        reply = json.loads(line)
        if not reply["ok"]:
            raise RuntimeError(f"host request {op!r} failed: {reply['error']}")
        return reply.get("result")

    def plug(
        self,
        model: str = "dmm",
        *,
        driver: str | None = "usbtmc",
        timeout: float = 20.0,
        **options: Any,
    ) -> UsbDevice:
        """Plug a fresh instrument; wait until enumerated (and ``driver`` bound, if given)."""
        self.unplug()
        serial = options.pop("serial", None) or f"KT{next(_serials):04d}"
        self.request("plug", model=model, options={"serial": serial, **options})
        device: UsbDevice = wait_for(lambda: find_device(serial), timeout, f"device {serial}")
        if driver is not None:
            wait_for(lambda: device.driver() == driver, timeout, f"{driver} bound to {serial}")
            if driver == "usbtmc":
                wait_for(
                    lambda: (n := device.usbtmc_node()) and os.path.exists(n),
                    timeout,
                    "the usbtmc node",
                )
        self.current = device
        return device

    def unplug(self, *, wait: bool = True, timeout: float = 20.0) -> None:
        """Unplug (close the usbredir connection); wait until the kernel saw it go."""
        self.request("unplug")
        device, self.current = self.current, None
        if wait and device is not None:
            wait_for(lambda: not device.present(), timeout, f"{device.serial} to disappear")

    def call(self, method: str, *args: Any) -> Any:
        return self.request("call", method=method, args=list(args))

    def set(self, attr: str, value: Any) -> None:
        self.request("set", attr=attr, value=value)

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("stats")
        return result

    def close(self) -> None:
        os.close(self._fd)
