"""Fixtures for the hardening tests: the umockdev tier (reused from tests/usb) and a runner
for this directory's own client scenarios (``tests/hardening/umockdev_client.py``)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from ..usb.conftest import ROOT, UmockdevBed, umockdev  # noqa: F401  (fixture re-export)

ECHO_DEVICE = "tests.hardening.support:usb_factory"


def _text(output: str | bytes | None) -> str:
    if isinstance(output, bytes):
        return output.decode("utf-8", "replace")
    return output or ""


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
    try:
        done = subprocess.run(
            command,
            cwd=ROOT,
            env=bed.client_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"hardening client {scenario!r} timed out after {timeout} s\n"
            f"--- client stderr ---\n{_text(exc.stderr)}\n--- device log ---\n{bed.device_log()}",
            pytrace=False,
        )
    if done.returncode != 0:
        pytest.fail(
            f"hardening client {scenario!r} ({backend}, {driver}) exited with "
            f"{done.returncode}\n--- client stderr ---\n{done.stderr}\n"
            f"--- client stdout ---\n{done.stdout}\n--- device log ---\n{bed.device_log()}",
            pytrace=False,
        )
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[len("RESULT ") :])
            return result
    pytest.fail(f"hardening client {scenario!r} printed no RESULT:\n{done.stdout}", pytrace=False)
