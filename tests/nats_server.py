"""A real nats-server on 127.0.0.1 for the tests: started on a free port, stopped after."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

BINARY = "nats-server"


@dataclass
class RunningNats:
    """A nats-server process the test controls (restartable on the same port)."""

    port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    extra: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        args = [BINARY, "-a", "127.0.0.1", "-p", str(self.port), *self.extra]
        log = open(self.workdir / "nats.log", "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 15
        while True:  # bounded: until it accepts a connection, at most 15 s
            if self.process.poll() is not None:
                text = (self.workdir / "nats.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"nats-server exited: {text}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    if s.recv(4).startswith(b"INFO"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("nats-server did not start within 15 s")
            time.sleep(0.02)

    def kill(self) -> None:
        """``kill -9``: no goodbye to the clients."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require_nats() -> str:
    """The binary's path; in CI a missing server fails, elsewhere the test skips."""
    path = shutil.which(BINARY)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{BINARY} is not installed (apt install nats-server)")
        pytest.skip(f"{BINARY} is not installed")
    return path


@contextmanager
def running_nats(workdir: Path, *extra: str) -> Iterator[RunningNats]:
    require_nats()
    server = RunningNats(free_port(), workdir, extra=extra)
    server.start()
    try:
        yield server
    finally:
        server.stop()
