"""Every transport module imports on an interpreter without the POSIX-only modules (as on
Windows), except the termios backend itself; the registry then reports every kind, and
the Prologix/serial openers are there to be used through pyserial."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = r"""
import json, sys
import asyncio, anyio, selectors, socket, ssl, subprocess  # before the platform is faked
for name in ("termios", "fcntl", "tty", "pty", "grp", "pwd", "resource"):
    sys.modules[name] = None
sys.platform = "win32"
import importlib, pkgutil
import aiotmc.transports
failed = {}
for info in pkgutil.walk_packages(aiotmc.transports.__path__, "aiotmc.transports."):
    try:
        importlib.import_module(info.name)
    except ImportError as exc:
        failed[info.name] = str(exc)
from aiotmc.registry import registry
status = {s.kind: s.available for s in registry.status()}
print(json.dumps({"failed": failed, "kinds": registry.kinds(), "status": status}))
"""


def test_transports_import_without_posix_modules() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert set(report["failed"]) == {"aiotmc.transports.serial._posix"}, report["failed"]
    assert {"asrl", "prologix-asrl", "prologix-tcpip", "gpib", "tcpip-socket"} <= set(
        report["kinds"]
    )
    assert report["status"]["prologix-asrl"] is True
