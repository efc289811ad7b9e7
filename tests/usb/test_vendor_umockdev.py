"""Vendor-specific messages and class/vendor control transfers over real libusb (umockdev)."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest

from .conftest import INSTRUMENT

pytestmark = pytest.mark.umockdev

CLIENT = [sys.executable, "-X", "dev", "-m", "tests.usb.vendor_client"]


@pytest.mark.parametrize("driver", ["thread", "pollfd"])
def test_vendor_operations_libusb(umockdev: Any, anyio_backend: str, driver: str) -> None:
    bed = umockdev([{"factory": INSTRUMENT, "config": {"model": "dmm", "serial": "DMM1"}}])
    done = bed.run_process(
        [*CLIENT, "--backend", anyio_backend, "--driver", driver],
        timeout=60,
        what=f"vendor operations over libusb ({anyio_backend}, {driver})",
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stdout
    result = json.loads(lines[-1][len("RESULT ") :])
    assert result["recoveries"] == 1  # the cancelled vendor read, and nothing else
