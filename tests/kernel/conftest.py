"""Kernel tier: print the guest's timings and the side-by-side figure after the run."""

from __future__ import annotations

import json
from typing import Any

import pytest

from .harness import RESULTS

_ran: list[bool] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    if item.nodeid.startswith("tests/kernel/test_kernel_tier.py"):
        _ran.append(True)
    yield


def pytest_terminal_summary(terminalreporter: Any) -> None:
    figures, summary = RESULTS / "figures.json", RESULTS / "summary.json"
    if not _ran or not summary.is_file():
        return
    terminalreporter.section("kernel tier (QEMU guest)")
    timing = RESULTS / "timing.json"
    if timing.is_file():
        terminalreporter.write_line(f"timing: {timing.read_text().strip()}")
    terminalreporter.write_line(f"guest: {summary.read_text().strip()}")
    if figures.is_file():
        data = json.loads(figures.read_text())
        side = data.pop("side_by_side_10MB", None)
        if side:
            terminalreporter.write_line(
                f"10 MB block: /dev/usbtmc0 {side['kernel_usbtmc_MBps']} MB/s, aiotmc "
                f"thread {side['aiotmc_thread_MBps']} MB/s, pollfd "
                f"{side['aiotmc_pollfd_MBps']} MB/s -> aiotmc/kernel time ratio "
                f"{side['ratio_aiotmc_over_kernel_time']}"
            )
        terminalreporter.write_line(f"other figures: {json.dumps(data)}")
    terminalreporter.write_line(f"junit + logs: {RESULTS}")
