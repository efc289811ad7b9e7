"""The cancellation storm engine is the conformance kit's (``aiotmc.testing.storm``);
this module keeps the names the hardening tests and the umockdev client import, and the
iteration count knob."""

from __future__ import annotations

import os

from aiotmc.testing.device import block_payload
from aiotmc.testing.storm import Opener, Operation, Storm, StormReport, Style


def iterations(default: int) -> int:
    """``AIOTMC_STORM_ITERATIONS`` scales every storm (the default is the CI size)."""
    value = os.environ.get("AIOTMC_STORM_ITERATIONS")
    return max(1, int(value)) if value else default


__all__ = ["Opener", "Operation", "Storm", "StormReport", "Style", "block_payload", "iterations"]
