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
import functools
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import pytest

from testbeds.umockdev.host import (
    CHECKOUT,
    client_env,
    device_command,
    device_env,
    parse_ready,
    umockdev_problem,
)

ROOT = CHECKOUT
STUB = "tests.usb.usbtmc_stub:create"
INSTRUMENT = "testbeds.umockdev.factories:usbtmc"


@functools.cache
def _umockdev_problem() -> str | None:
    """Why the umockdev tier cannot run here, or None (checked once per session)."""
    return umockdev_problem()


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
        self.process = subprocess.Popen(
            device_command(devices),
            cwd=ROOT,
            env=device_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            bufsize=1,
        )
        assert self.process.stdout is not None
        info = parse_ready(self.process.stdout.readline())
        if info is None:
            self.stop()
            raise RuntimeError(f"umockdev device process did not start:\n{self.device_log()}")
        self.info: dict[str, Any] = info
        self.root: str = info["root"]

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
        return {**os.environ, **client_env(self.info), "PYTHONPATH": str(ROOT)}

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
