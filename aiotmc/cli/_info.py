"""``aiotmc info``: versions, event loops and every transport, with why one cannot work."""

from __future__ import annotations

import argparse
import platform
import sys
from importlib import metadata

from .._version import __version__
from ..registry import registry
from ._findings import event_loops, usb_findings
from ._runtime import Options

_PACKAGES = ("anyio", "trio", "libusb1", "libusb-package", "numpy", "uvloop")


def cmd_info(args: argparse.Namespace, options: Options) -> int:
    print(f"aiotmc {__version__} on Python {platform.python_version()} ({sys.platform})")
    for package in _PACKAGES:
        try:
            version = metadata.version(package)
        except metadata.PackageNotFoundError:
            version = "not installed"
        print(f"  {package:<15} {version}")
    print("event loops:")
    for line in event_loops():
        print(f"  {line}")
    print("transports:")
    rows = registry.status()
    width = max(len(row.kind) for row in rows)
    for row in rows:
        state = "available" if row.available else f"unavailable: {row.reason}"
        origin = "" if row.origin == "built-in" else f" [{row.origin}]"
        print(f"  {row.kind:<{width}}  {row.summary}{origin}: {state}")
    print("USB devices and permissions:")
    for line in usb_findings():
        print(f"  {line}")
    return 0
