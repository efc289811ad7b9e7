"""Every example runs, as a real subprocess, against the simulated instruments."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CASES = {
    "query_idn.py": (["--backend", "trio"], "manufacturer="),
    "query_idn_trio.py": ([], ","),
    "many_instruments.py": (["--count", "20"], "20 instruments"),
    "block_transfer.py": ([], "OK"),
    "usb_srq.py": (["--backend", "trio"], "operation complete (SRQ)"),
    "hislip_srq.py": (["--backend", "trio"], "operation complete (SRQ)"),
    "hislip_secure_pipeline.py": (["--backend", "trio"], "pipelined from 8 tasks"),
    "synchronized_acquisition.py": (["--backend", "trio", "--rows", "3"], "trigger skew"),
    "vxi11_query.py": (["--backend", "trio"], "SIM-DMM"),
    "serial_and_gpib.py": (["--backend", "trio"], "serial poll"),
    "bluesky_scan.py": (["--points", "3"], "exit_status=success events={'primary': 3}"),
}


def test_every_example_is_covered() -> None:
    present = {p.name for p in EXAMPLES.glob("*.py")}
    assert present == set(CASES), "add every new example to CASES"


@pytest.mark.parametrize("name", sorted(CASES))
def test_example_runs(name: str) -> None:
    args, expected = CASES[name]
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout
