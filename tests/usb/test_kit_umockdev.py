"""The conformance kit through real libusb + python-libusb1 below umockdev.

The device process serves :func:`aiotmc.testing.device.usb_function` (the kit's
self-identifying device behind USBTMC/USB488); ``tests/testing/kit_client.py`` runs
``check_transport`` over ``aiotmc.open_transport("USB0::...")`` in a client subprocess,
on both backends and both event drivers.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest

from aiotmc.testing.device import USB_FACTORY

pytestmark = pytest.mark.umockdev

RESOURCE = "USB0::0x0957::0x1796::KIT1::INSTR"


@pytest.mark.parametrize("driver", ["thread", "pollfd"])
def test_conformance_kit(umockdev: Any, anyio_backend: str, driver: str) -> None:
    bed = umockdev([{"factory": USB_FACTORY, "config": {"serial": "KIT1"}}])
    command = [sys.executable, "-X", "dev", "-m", "tests.testing.kit_client", RESOURCE]
    command += ["--backend", anyio_backend, "--driver", driver]
    done = bed.run_process(command, timeout=300, what=f"conformance kit ({driver})")
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stdout
    report = json.loads(lines[-1][len("RESULT ") :])
    print({name: {k: v for k, v in stats.items() if v} for name, stats in report.items()})
    assert report["cancellation"]["cancelled"] > 20, report["cancellation"]
    assert "status" in report and "close" in report
