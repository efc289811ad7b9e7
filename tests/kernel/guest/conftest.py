"""Fixtures of the guest suite (runs only inside the kernel-tier VM).

The files here are named ``kt_*.py`` so the host's normal pytest run does not collect
them; ``tests/kernel/guest_main.py`` runs them in the guest with ``python_files=kt_*.py``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .link import HostLink

RESULTS = Path(os.environ.get("AIOTMC_KT_RESULTS", "/tmp"))


@pytest.fixture(scope="session")
def host() -> Iterator[HostLink]:
    if not os.environ.get("AIOTMC_KERNEL_GUEST"):
        pytest.skip("runs only inside the kernel-tier guest")
    link = HostLink()
    link.request("hello")
    yield link
    link.close()


@pytest.fixture
def plugged(host: HostLink) -> Iterator[HostLink]:
    """A fresh device per test (plugged by the test, unplugged afterwards)."""
    yield host
    host.unplug()


def record(name: str, value: Any) -> None:
    """Append a measurement to results/figures.json (the host prints them)."""
    path = RESULTS / "figures.json"
    figures = json.loads(path.read_text()) if path.is_file() else {}
    figures[name] = value
    path.write_text(json.dumps(figures, indent=1) + "\n")
