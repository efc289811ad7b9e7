"""Fixtures for the hardening tests: the umockdev tier (reused from tests/usb) and a runner
for this directory's own client scenarios (``tests/hardening/umockdev_client.py``)."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest

from ..usb.conftest import UmockdevBed, umockdev  # noqa: F401  (fixture re-export)

ECHO_DEVICE = "tests.hardening.support:usb_factory"


def echo_usb_device(serial: str = "HARD1", **config: Any) -> dict[str, Any]:
    """A umockdev device spec: the self-identifying echo device behind USBTMC."""
    return {"factory": ECHO_DEVICE, "config": {"serial": serial, **config}}


def run_hardening_client(
    bed: UmockdevBed,
    scenario: str,
    *,
    backend: str,
    driver: str = "thread",
    timeout: float = 60.0,
    args: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Run one scenario of tests/hardening/umockdev_client.py under umockdev; its RESULT."""
    command = [
        sys.executable,
        "-X",
        "dev",
        "-m",
        "tests.hardening.umockdev_client",
        scenario,
        "--backend",
        backend,
        "--driver",
        driver,
        *args,
    ]
    done = bed.run_command(
        command, timeout=timeout, what=f"hardening client {scenario!r} ({backend}, {driver})"
    )
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[len("RESULT ") :])
            return result
    pytest.fail(f"hardening client {scenario!r} printed no RESULT:\n{done.stdout}", pytrace=False)
