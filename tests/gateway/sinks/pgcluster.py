"""A private PostgreSQL cluster for tests: initdb in a tmp dir, postgres on 127.0.0.1.

PostgreSQL refuses to run as root: when the tests run as root the cluster runs as the
unprivileged ``nobody`` (its directory is handed to that user); as a normal user it runs
as that user. ``kill9`` kills the postmaster and every backend, like a crash (backends
call setsid, so they are found as the postmaster's children, not by process group);
``start`` again runs crash recovery on the same data and port.

The server runs with ``synchronous_commit = off`` on purpose: a sink that acknowledges a
batch must make it durable for its own session (the kill -9 test then shows it does).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

BINDIR = Path(os.environ.get("AIOTMC_PG_BINDIR", "/usr/lib/postgresql/15/bin"))
UNPRIVILEGED = "nobody"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_binary(path: Path) -> None:
    """Skip when ``path`` is missing, except in CI where that is a failure."""
    if not path.exists():
        message = f"{path} is not installed (apt-get install postgresql / victoria-metrics)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


class PgCluster:
    """One cluster; ``dsn`` reaches database ``postgres`` as superuser ``postgres``."""

    def __init__(self) -> None:
        require_binary(BINDIR / "postgres")
        self.root = Path(tempfile.mkdtemp(prefix="aiotmc-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.log = self.root / "postgres.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._paused: list[int] = []
        self.user = UNPRIVILEGED if os.geteuid() == 0 else None
        if self.user is not None:
            shutil.chown(self.root, self.user)
        self._run(
            [
                str(BINDIR / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "-N",
                "--no-instructions",
            ]
        )

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def _run(self, argv: list[str]) -> None:
        result = subprocess.run(
            argv, user=self.user, cwd=self.root, capture_output=True, timeout=60, check=False
        )
        if result.returncode:
            raise RuntimeError(f"{argv[0]} failed: {result.stderr.decode(errors='replace')}")

    def start(self, timeout: float = 30.0) -> None:
        """Start postgres and return once it accepts connections."""
        import psycopg

        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [str(BINDIR / "postgres"), "-D", str(self.data), "-p", str(self.port),
                 "-k", str(self.root), "-c", "listen_addresses=127.0.0.1",
                 "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "full_page_writes=off", "-c", "shared_buffers=16MB",
                 "-c", "max_connections=20"],
                user=self.user, cwd=self.root, stdin=subprocess.DEVNULL, stdout=log,
                stderr=log, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:  # readiness: the same probe as pg_ctl -w, bounded by the deadline
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {self.log.read_text(errors='replace')}")
            try:
                psycopg.connect(self.dsn, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _processes(self) -> list[int]:
        """The postmaster (stopped first, so that it forks no more) and its children.

        Backends call setsid(): they are not in the postmaster's process group."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)
        return [self.proc.pid, *_children(self.proc.pid)]

    def kill9(self) -> None:
        """SIGKILL the postmaster and all its backends at once (a crash)."""
        pids = self._processes()
        for pid in pids:
            _signal(pid, signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait(timeout=10)
        deadline = time.monotonic() + 10  # until none runs or holds shared memory
        while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.02)

    def pause(self) -> None:
        """SIGSTOP every process of the cluster: connections stay up, nothing answers."""
        self._paused = self._processes()
        for pid in self._paused:
            _signal(pid, signal.SIGSTOP)

    def resume(self) -> None:
        for pid in self._paused:
            _signal(pid, signal.SIGCONT)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            self.resume()
            proc.send_signal(signal.SIGINT)  # fast shutdown: the postmaster ends its backends
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc = proc
                self.kill9()
                self.proc = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _stat(pid: int | str) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()  # state, ppid, pgrp, ...


def _children(ppid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(entry.name)) and int(stat[1]) == ppid:
            found.append(int(entry.name))
    return found


def _running(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie does not: it holds no memory any more, and who
    reaps a reparented one is not ours to decide)."""
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")
