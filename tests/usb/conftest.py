"""Fixtures for the USB tests, and the umockdev tier's harness.

umockdev tier: the ``umockdev`` fixture starts the device process
(``/usr/bin/python3 -m testbeds.umockdev``, which has PyGObject) with the requested
emulated devices, then runs a client scenario from ``tests/usb/umockdev_client.py`` (or,
with ``run_process``, any program: the CLI, an example) in a *subprocess* of this
interpreter started with ``LD_PRELOAD=libumockdev-preload.so.0`` and
``UMOCKDEV_DIR=<testbed>`` (the preload has to be there from process start, so the
client cannot run inside pytest). A failing scenario fails the test with the client's
traceback and the device process's log in the message.

Without umockdev these tests are skipped with the reason, except when ``CI=true``: then
they fail, because CI must run this tier.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEVICE_PYTHON = os.environ.get("AIOTMC_UMOCKDEV_PYTHON", "/usr/bin/python3")
STUB = "tests.usb.usbtmc_stub:create"
INSTRUMENT = "testbeds.umockdev.factories:usbtmc"

_availability: str | None = None
_checked = False


def _umockdev_problem() -> str | None:
    """Why the umockdev tier cannot run here, or None."""
    global _availability, _checked
    if _checked:
        return _availability
    _checked = True
    problem = None
    if not sys.platform.startswith("linux"):
        problem = "umockdev is Linux only"
    elif shutil.which(DEVICE_PYTHON) is None:
        problem = f"{DEVICE_PYTHON} (the system Python with PyGObject) not found"
    elif ctypes.util.find_library("umockdev-preload") is None:
        problem = "libumockdev-preload not found (apt install umockdev)"
    elif ctypes.util.find_library("usb-1.0") is None:
        problem = "system libusb-1.0 not found (apt install libusb-1.0-0)"
    else:
        probe = subprocess.run(
            [
                DEVICE_PYTHON,
                "-c",
                "import gi; gi.require_version('UMockdev', '1.0'); "
                "from gi.repository import UMockdev",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if probe.returncode:
            problem = (
                "UMockdev GObject introspection missing for the system Python "
                f"(apt install gir1.2-umockdev-1.0 python3-gi): {probe.stderr.strip()[-300:]}"
            )
        else:
            try:
                import usb1  # noqa: F401
            except ImportError:
                problem = "python-libusb1 is not installed in this environment"
    _availability = problem
    return problem


def require_umockdev() -> None:
    """Skip (or, with CI=true, fail) when the umockdev tier cannot run."""
    problem = _umockdev_problem()
    if problem is None:
        return
    message = f"umockdev tier unavailable: {problem}"
    if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
        pytest.fail(message + " (CI=true: this tier must run in CI)", pytrace=False)
    pytest.skip(message)


def _text(output: str | bytes | None) -> str:
    """What a timed-out subprocess wrote (TimeoutExpired holds bytes even in text mode)."""
    if isinstance(output, bytes):
        return output.decode("utf-8", "replace")
    return output or ""


@dataclass
class ClientResult:
    returncode: int
    stdout: str
    stderr: str
    result: dict[str, Any]


class UmockdevBed:
    """A running device process (one testbed, one or more emulated devices)."""

    def __init__(self, devices: list[dict[str, Any]], log: IO[str]) -> None:
        self._log = log
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
        self.process = subprocess.Popen(
            [DEVICE_PYTHON, "-m", "testbeds.umockdev", "--devices", json.dumps(devices)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            bufsize=1,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"umockdev device process did not start:\n{self.device_log()}")
        self.info: dict[str, Any] = json.loads(line[len("READY ") :])
        self.root: str = self.info["root"]

    def command(self, line: str) -> Any:
        """Send a control command over stdin; return its result or raise."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        reply = json.loads(self.process.stdout.readline())
        if not reply["ok"]:
            raise RuntimeError(reply["error"])
        return reply.get("result")

    def device_log(self) -> str:
        self._log.flush()
        with open(self._log.name) as f:
            return f.read()

    def client_env(self) -> dict[str, str]:
        preload = " ".join(filter(None, ["libumockdev-preload.so.0", os.environ.get("LD_PRELOAD")]))
        return {
            **os.environ,
            "LD_PRELOAD": preload,
            "UMOCKDEV_DIR": self.root,
            "AIOTMC_LIBUSB": "system",  # the netlink-only libusb-package build misses umockdev
            "AIOTMC_UMOCKDEV_CONTROL": self.info["control"],
            "AIOTMC_UMOCKDEV_INFO": json.dumps(self.info),
            "PYTHONPATH": str(ROOT),
        }

    def run_client(
        self, scenario: str, *, backend: str, driver: str, timeout: float = 50.0
    ) -> ClientResult:
        """Run one client scenario; fail the test (readably) if it fails."""
        command = [
            sys.executable,
            "-X",
            "dev",
            "-m",
            "tests.usb.umockdev_client",
            scenario,
            "--backend",
            backend,
            "--driver",
            driver,
        ]
        done = self.run_command(
            command, timeout=timeout, what=f"umockdev client {scenario!r} ({backend}, {driver})"
        )
        result: dict[str, Any] = {}
        for line in done.stdout.splitlines():
            if line.startswith("RESULT "):
                result = json.loads(line[len("RESULT ") :])
        return ClientResult(done.returncode, done.stdout, done.stderr, result)

    def run_process(
        self, command: list[str], *, timeout: float = 30.0, what: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run any program in the client environment (the CLI, an example)."""
        what = what or " ".join(command[1:] if command[0] == sys.executable else command)
        return self.run_command(command, timeout=timeout, what=f"{what!r} under umockdev")

    def run_command(
        self, command: list[str], *, timeout: float, what: str
    ) -> subprocess.CompletedProcess[str]:
        """Run ``command`` in the client environment; fail the test readably (its output
        and the device log) when it exits non-zero or times out."""
        try:
            done = subprocess.run(
                command,
                cwd=ROOT,
                env=self.client_env(),
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(
                f"{what} timed out after {timeout} s\n"
                f"--- stderr ---\n{_text(exc.stderr)}\n"
                f"--- device log ---\n{self.device_log()}",
                pytrace=False,
            )
        if done.returncode != 0:
            pytest.fail(
                f"{what} failed with exit code {done.returncode}\n"
                f"--- stderr ---\n{done.stderr}\n--- stdout ---\n{done.stdout}\n"
                f"--- device log ---\n{self.device_log()}",
                pytrace=False,
            )
        return done

    def stop(self) -> int | None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                assert self.process.stdin is not None
                self.process.stdin.close()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        return self.process.returncode


@pytest.fixture
def umockdev() -> Iterator[Any]:
    """``bed = umockdev([{"factory": ..., "config": {...}}, ...])`` starts a testbed."""
    require_umockdev()
    beds: list[UmockdevBed] = []
    with tempfile.NamedTemporaryFile("w+", prefix="aiotmc-umockdev-", suffix=".log") as log:

        def start(devices: list[dict[str, Any]]) -> UmockdevBed:
            bed = UmockdevBed(devices, log)
            beds.append(bed)
            return bed

        yield start
        for bed in beds:
            code = bed.stop()
            if code not in (0, None):
                pytest.fail(
                    f"umockdev device process exited with {code}\n{bed.device_log()}",
                    pytrace=False,
                )
