"""What a harness needs to run the umockdev test bed: the one place that knows how.

The device process (:mod:`.server`) runs under the system Python, which has PyGObject and
the UMockdev typelib, with the checkout on ``PYTHONPATH``; clients run with umockdev's
preload library and the test bed's directory in their environment. The USB tests
(``tests/usb/conftest.py``) and the benchmarks (``benchmarks/usbbed.py``) start it
through these functions. Stdlib only; nothing here runs inside the device process.
"""

from __future__ import annotations

import ctypes.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

__all__ = [
    "CHECKOUT",
    "CONTROL_ENV",
    "DEVICE_PYTHON",
    "INFO_ENV",
    "client_env",
    "device_command",
    "device_env",
    "parse_ready",
    "umockdev_problem",
]

CHECKOUT: Final = Path(__file__).resolve().parents[2]
"""The checkout that holds ``aiotmc/`` and ``testbeds/`` (the device process's PYTHONPATH)."""

DEVICE_PYTHON: Final = os.environ.get("AIOTMC_UMOCKDEV_PYTHON", "/usr/bin/python3")
"""The Python that runs the device process: one with PyGObject and the UMockdev typelib."""

CONTROL_ENV: Final = "AIOTMC_UMOCKDEV_CONTROL"
"""Client environment variable: the path of the device process's control socket."""

INFO_ENV: Final = "AIOTMC_UMOCKDEV_INFO"
"""Client environment variable: the ``READY`` JSON (root, control, pid, devices)."""

_READY: Final = "READY "


def umockdev_problem(*, probe_typelib: bool = True) -> str | None:
    """Why the test bed cannot run here, or None.

    ``probe_typelib`` also starts :data:`DEVICE_PYTHON` once to import UMockdev (else the
    device process reports a missing typelib itself, by exiting with status 2).
    """
    if not sys.platform.startswith("linux"):
        return "umockdev is Linux only"
    if shutil.which(DEVICE_PYTHON) is None:
        return f"{DEVICE_PYTHON} (the system Python with PyGObject) not found"
    if ctypes.util.find_library("umockdev-preload") is None:
        return "libumockdev-preload not found (apt install umockdev)"
    if ctypes.util.find_library("usb-1.0") is None:
        return "system libusb-1.0 not found (apt install libusb-1.0-0)"
    if probe_typelib:
        probe = subprocess.run(
            [
                DEVICE_PYTHON,
                "-c",
                "import gi; gi.require_version('UMockdev', '1.0'); "
                "from gi.repository import UMockdev",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if probe.returncode:
            return (
                "UMockdev GObject introspection missing for the system Python "
                f"(apt install gir1.2-umockdev-1.0 python3-gi): {probe.stderr.strip()[-300:]}"
            )
    try:
        import usb1  # noqa: F401
    except ImportError:
        return "python-libusb1 is not installed in this environment"
    return None


def device_command(devices: list[dict[str, Any]]) -> list[str]:
    """The device process's command line for ``devices`` (``{"factory", "config"}`` specs)."""
    return [DEVICE_PYTHON, "-m", "testbeds.umockdev", "--devices", json.dumps(devices)]


def device_env(**extra: str) -> dict[str, str]:
    """The device process's environment: this one, the checkout on PYTHONPATH, no preload."""
    env = {**os.environ, "PYTHONPATH": str(CHECKOUT), "PYTHONDONTWRITEBYTECODE": "1", **extra}
    env.pop("LD_PRELOAD", None)
    env.pop("UMOCKDEV_DIR", None)
    return env


def parse_ready(line: str | bytes) -> dict[str, Any] | None:
    """The JSON of the device process's ``READY <json>`` line, or None for any other line."""
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    if not text.startswith(_READY):
        return None
    info: dict[str, Any] = json.loads(text[len(_READY) :])
    return info


def client_env(info: Mapping[str, Any]) -> dict[str, str]:
    """Environment *additions* for a client of the test bed described by ``info`` (READY).

    umockdev's preload library (before any other preload), the test bed's root, the system
    libusb (the netlink-only libusb-package build misses umockdev's devices), and for the
    test clients the control socket (:data:`CONTROL_ENV`) and ``info`` (:data:`INFO_ENV`).
    """
    preload = " ".join(filter(None, ["libumockdev-preload.so.0", os.environ.get("LD_PRELOAD")]))
    return {
        "LD_PRELOAD": preload,
        "UMOCKDEV_DIR": str(info["root"]),
        "AIOTMC_LIBUSB": "system",
        CONTROL_ENV: str(info["control"]),
        INFO_ENV: json.dumps(info),
    }
