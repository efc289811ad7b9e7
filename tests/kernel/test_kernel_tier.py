"""The kernel tier as seen from the normal pytest run: one VM boot, every guest test.

The session fixture ``kernel_guest`` boots the guest once (``tests/kernel/harness.py``);
the guest runs ``tests/kernel/guest/kt_*.py`` and writes junit XML, which comes back over
a 9p share. Each guest test *function* becomes one host test here (found by reading the
guest files, so collection never boots anything); it passes when every guest case of that
function (all backends, drivers, parameters) passed, and fails with the guest's own
failure text. Without QEMU/busybox/kernel this tier skips, except under ``CI=true``
(unless ``AIOTMC_KERNEL_TIER=0``), where it must run.
"""

from __future__ import annotations

import ast
import os
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

from .harness import RESULTS, GuestRun, boot_guest, ensure_kernel, tier_problem

GUEST_DIR = Path(__file__).with_name("guest")
BOOT_TIMEOUT = float(os.environ.get("AIOTMC_KERNEL_TIMEOUT", "300"))


def _guest_functions() -> list[str]:
    """``kt_module::test_name`` for every test function in the guest suite."""
    found = []
    for path in sorted(GUEST_DIR.glob("kt_*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith(
                "test_"
            ):
                found.append(f"{path.stem}::{node.name}")
    return found


@dataclass
class Case:
    module: str
    name: str
    outcome: str  # passed, failed, error, skipped
    text: str
    seconds: float


@dataclass
class GuestResults:
    run: GuestRun
    cases: list[Case]

    def report(self) -> str:
        """Guest output for failure messages: the tail of its log and console."""
        return (
            f"--- guest pytest log (tail) ---\n{self.run.text('guest.log')[-6000:]}\n"
            f"--- guest console (tail) ---\n{self.run.console[-3000:]}\n"
            f"--- qemu ---\n{self.run.text('qemu.log')[-2000:]}\n"
            f"--- host device log (tail) ---\n{self.run.text('host.log')[-2000:]}"
        )


def _parse_junit(path: Path) -> list[Case]:
    cases = []
    for element in ET.parse(path).getroot().iter("testcase"):
        outcome, text = "passed", ""
        for child in element:
            if child.tag in ("failure", "error", "skipped"):
                outcome = "failed" if child.tag == "failure" else child.tag
                text = (child.get("message") or "") + "\n" + (child.text or "")
                break
        module = (element.get("classname") or "").rsplit(".", 1)[-1]
        cases.append(
            Case(module, element.get("name", ""), outcome, text, float(element.get("time", 0)))
        )
    return cases


def _must_run() -> bool:
    ci = os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")
    return ci and os.environ.get("AIOTMC_KERNEL_TIER", "").strip() != "0"


@pytest.fixture(scope="session")
def kernel_guest() -> GuestResults:
    problem = tier_problem()
    if problem is None:
        try:
            ensure_kernel()
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            problem = f"cannot fetch the kernel: {exc}"
    if problem is not None:
        message = f"kernel tier unavailable: {problem}"
        if _must_run():
            pytest.fail(message + " (CI=true: this tier must run in CI)", pytrace=False)
        pytest.skip(message)
    run = boot_guest([], results=RESULTS, timeout=BOOT_TIMEOUT)
    cases = _parse_junit(run.junit) if run.junit.is_file() else []
    return GuestResults(run, cases)


@pytest.mark.slow
@pytest.mark.timeout(BOOT_TIMEOUT + 60)
def test_guest_suite_ran(kernel_guest: GuestResults) -> None:
    """The VM booted, the guest suite finished, every guest test function was seen."""
    run = kernel_guest.run
    if run.timed_out:
        pytest.fail(
            f"the guest timed out after {run.total_s:.0f} s\n" + kernel_guest.report(), False
        )
    if not kernel_guest.cases:
        pytest.fail(
            f"the guest produced no junit results (QEMU exit status {run.returncode})\n"
            + kernel_guest.report(),
            False,
        )
    seen = {f"{c.module}::{c.name.split('[')[0]}" for c in kernel_guest.cases}
    missing = sorted(set(_guest_functions()) - seen)
    if missing:
        pytest.fail(f"guest tests that did not run: {missing}\n" + kernel_guest.report(), False)


@pytest.mark.slow
@pytest.mark.timeout(BOOT_TIMEOUT + 60)
@pytest.mark.parametrize("function", _guest_functions())
def test_guest(kernel_guest: GuestResults, function: str) -> None:
    """One guest test function: all of its guest cases passed."""
    module, name = function.split("::")
    cases = [c for c in kernel_guest.cases if c.module == module and c.name.split("[")[0] == name]
    if not cases:
        pytest.fail(f"{function} did not run in the guest\n" + kernel_guest.report(), False)
    bad = [c for c in cases if c.outcome in ("failed", "error")]
    if bad:
        details = "\n\n".join(f"=== guest {c.name}: {c.outcome}\n{c.text}" for c in bad)
        pytest.fail(f"{len(bad)}/{len(cases)} guest cases failed\n{details}", pytrace=False)
    if all(c.outcome == "skipped" for c in cases):
        pytest.skip(f"skipped in the guest: {cases[0].text.strip()[:300]}")
