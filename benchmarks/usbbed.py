"""The umockdev device process for the "USB via umockdev" figures.

Started through :mod:`testbeds.umockdev.host`, as ``tests/usb/conftest.py`` does:
``/usr/bin/python3 -m testbeds.umockdev --devices <json>`` with ``PYTHONPATH=<checkout>``
(the system Python has PyGObject and the UMockdev typelib); it prints ``READY <json>`` with
the testbed root. The client workers then run with ``LD_PRELOAD=libumockdev-preload.so.0``,
``UMOCKDEV_DIR=<root>`` and ``AIOTMC_LIBUSB=system`` (see :meth:`UmockdevBed.client_env`).

:meth:`UmockdevBed.stop` always kills the device process and removes the testbed
directory, also when the process died or never became ready.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Final

from testbeds.umockdev import host

from .procs import stop_process

__all__ = [
    "DEVICE_PYTHON",
    "SERIAL",
    "UmockdevBed",
    "UmockdevMissing",
    "resource_name",
    "umockdev_problem",
]

DEVICE_PYTHON: Final = host.DEVICE_PYTHON
SERIAL: Final = "BENCH1"
VID, PID = 0x0957, 0x1796  #: the default ids of testbeds.umockdev.factories:usbtmc
DEVICES: Final = [
    {
        "factory": "testbeds.umockdev.factories:usbtmc",
        "config": {"model": "scope", "serial": SERIAL},
    }
]
_GRACE = 5.0


class UmockdevMissing(RuntimeError):
    """The device process found no UMockdev/PyGObject (it exits with status 2)."""


def umockdev_problem() -> str | None:
    """Why the umockdev figures cannot run here (``None`` when they can)."""
    # The gi/UMockdev typelib check happens when the device process starts (exit status 2).
    return host.umockdev_problem(probe_typelib=False)


def resource_name(device: dict[str, Any]) -> str:
    """The VISA name of an emulated device (an entry of ``READY``'s ``devices``)."""
    vid, pid = device.get("vid", VID), device.get("pid", PID)
    return f"USB0::0x{vid:04X}::0x{pid:04X}::{device.get('serial') or SERIAL}::INSTR"


class UmockdevBed:
    """One running device process with one emulated USBTMC scope."""

    def __init__(self, *, log: Path, cpu: int | None = None) -> None:
        self.log_path = log
        self.cpu = cpu
        self.root: str | None = None
        self._tmp: str | None = None
        self.info: dict[str, Any] = {}
        self._log: IO[bytes] | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def alive(self) -> bool:
        """True while the device process runs."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, *, timeout: float = 60.0) -> dict[str, Any]:
        """Start the device process and wait for its ``READY`` line (raises on failure)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        # The testbed directory goes into a directory of ours, so it is removed even if
        # the device process dies before telling us where it is.
        self._tmp = tempfile.mkdtemp(prefix="aiotmc-bench-umockdev-")
        self._proc = subprocess.Popen(
            host.device_command(DEVICES),
            cwd=host.CHECKOUT,
            env=host.device_env(TMPDIR=self._tmp),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        if self.cpu is not None and hasattr(os, "sched_setaffinity"):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(self._proc.pid, {self.cpu})
        line = self._readline(timeout)
        info = host.parse_ready(line)
        if info is None:
            proc = self._proc
            self.stop()
            if proc.returncode == 2:
                raise UmockdevMissing(f"no UMockdev for {DEVICE_PYTHON}; see {self.log_path}")
            raise RuntimeError(
                f"umockdev device process did not start ({line[:200]!r}); see {self.log_path}"
            )
        self.info = info
        self.root = str(info["root"])
        return self.info

    def _readline(self, timeout: float) -> bytes:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        data = b""
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in data:
                left = deadline - time.monotonic()
                if left <= 0:
                    return data
                if not sel.select(min(left, 1.0)):
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    return data
                data += chunk
        return data.partition(b"\n")[0]

    def client_env(self) -> dict[str, str]:
        """Environment additions for a client process that talks to the emulated device."""
        if self.root is None:
            raise RuntimeError("the umockdev device process is not running")
        return host.client_env(self.info)

    def stop(self) -> None:
        """Stop the device process (EOF, then SIGTERM, then SIGKILL) and remove the testbed."""
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc, _GRACE)
        if self._log is not None:
            self._log.close()
            self._log = None
        for directory in (self.root, self._tmp):
            if directory is not None:
                shutil.rmtree(directory, ignore_errors=True)
        self.root = self._tmp = None
