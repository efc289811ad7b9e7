"""The close matrix (``tests/lifecycle_cases.py``) over real libusb, through umockdev.

One client process per backend and libusb event driver runs every mode against an
emulated DMM opened with ``aiotmc.open("USB0::...::INSTR")``: open and close in the same
task, in different tasks, close inside ``fail_after``, inside an already-cancelled scope,
while another task waits for an answer, and the notebook pattern.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest

from ..lifecycle_cases import MODES
from .conftest import INSTRUMENT

pytestmark = pytest.mark.umockdev


@pytest.mark.parametrize("driver", ["thread", "pollfd"])
def test_close_matrix_libusb(umockdev: Any, anyio_backend: str, driver: str) -> None:
    bed = umockdev([{"factory": INSTRUMENT, "config": {"model": "dmm", "serial": "DMM1"}}])
    command = [sys.executable, "-X", "dev", "-m", "tests.usb.lifecycle_client"]
    done = bed.run_process(
        [*command, "--backend", anyio_backend, "--driver", driver],
        timeout=120,
        what=f"close matrix over libusb ({anyio_backend}, {driver})",
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stdout
    tally = json.loads(lines[-1][len("RESULT ") :])
    print(f"close matrix over libusb ({anyio_backend}, {driver}): {tally}")
    assert tally["cells"] == len(MODES)
    assert tally["escaped_cancellations"] == 0
    assert tally["runtime_errors"] == 0
    assert sum(tally["cut_short"].values()) == 1  # the mid-exchange query ended
