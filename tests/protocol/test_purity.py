"""aiotmc.protocol is sans-IO: importing it must not import any I/O or event-loop module.

Runs in a fresh interpreter, since this test process has anyio and friends loaded already.
Every module under aiotmc/protocol/ is imported (subpackages such as usbtmc/ included),
including ones added later.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import aiotmc.protocol

FORBIDDEN = ["anyio", "socket", "usb1", "asyncio", "trio", "selectors", "libusb_package"]

PROBE = """
import importlib, json, pkgutil, sys
import aiotmc.protocol, aiotmc.protocol.scpi, aiotmc.protocol.ieee4882
names = sorted(
    info.name for info in pkgutil.walk_packages(aiotmc.protocol.__path__, "aiotmc.protocol.")
)
for name in names:
    importlib.import_module(name)
forbidden = json.loads(sys.argv[1])
loaded = sorted(
    m for m in sys.modules if any(m == f or m.startswith(f + ".") for f in forbidden)
)
print(json.dumps({"modules": names, "loaded": loaded}))
"""


def test_protocol_package_imports_no_io_modules() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(FORBIDDEN)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    # The probe saw every module that exists on disk now (usbtmc/_wire.py etc. included).
    root = Path(aiotmc.protocol.__file__).parent
    on_disk = sorted(
        ".".join(("aiotmc.protocol", *path.relative_to(root).with_suffix("").parts)).removesuffix(
            ".__init__"
        )
        for path in root.rglob("*.py")
        if path.parent != root or path.stem != "__init__"
    )
    assert report["modules"] == on_disk
    assert "aiotmc.protocol.scpi" in report["modules"]
    assert "aiotmc.protocol.usbtmc._connection" in report["modules"]
    assert report["loaded"] == [], (
        f"sans-IO modules pulled in {report['loaded']}; if the package root aiotmc/__init__.py "
        "stopped being lazy, that is the cause"
    )


def test_forbidden_list_is_what_the_probe_checks() -> None:
    """Guard against a vacuous probe: it does detect a forbidden import."""
    probe = PROBE.replace("import aiotmc.protocol,", "import socket, aiotmc.protocol,")
    result = subprocess.run(
        [sys.executable, "-c", probe, json.dumps(FORBIDDEN)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "socket" in json.loads(result.stdout)["loaded"]
