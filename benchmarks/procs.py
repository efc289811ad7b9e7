"""Subprocesses: CPU pinning, a JSON-lines request/response channel, guaranteed cleanup.

Every child is a fresh interpreter (``python -m benchmarks.<module>``) that pins itself
with ``os.sched_setaffinity`` before importing anything heavy, and exits when its stdin
closes, so nothing outlives the run even if the parent is killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

__all__ = [
    "ChildError",
    "ChildProcess",
    "available_cpus",
    "cpu_busy",
    "cpu_ticks",
    "pin_self",
    "process_ticks",
    "raise_fd_limit",
    "serve_lines",
]

_KILL_GRACE = 5.0  # seconds between terminate() and kill()


class ChildError(RuntimeError):
    """A child failed to answer in time, died, or sent garbage."""


def available_cpus() -> list[int]:
    """CPUs this process may run on (all of them where affinity is not supported)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def pin_self(cpu: int | None) -> bool:
    """Pin the calling process to ``cpu``; False where the OS does not allow it.

    Every thread of the process: on Linux the affinity of pid 0 is the calling thread's
    only, and a client may already run a thread of its own (aiotmc.sync's and the
    @aiotmc backend's event loop), which would otherwise wake up on another CPU.
    """
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return False
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError:
        return False
    try:
        threads = [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:
        threads = []
    for tid in threads:
        try:
            os.sched_setaffinity(tid, {cpu})
        except OSError:
            pass  # ended meanwhile
    return True


def _cpu_ticks() -> dict[int, tuple[int, int]]:
    """(busy, total) jiffies per CPU from /proc/stat (empty where unavailable)."""
    out: dict[int, tuple[int, int]] = {}
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            values = [int(f) for f in fields[:8]]
            idle = values[3] + values[4]  # idle + iowait
            out[int(name[3:])] = (sum(values) - idle, sum(values))
    return out


def cpu_ticks(cpu: int) -> tuple[int, int]:
    """(busy, total) jiffies of one CPU so far; (0, 0) where unavailable."""
    return _cpu_ticks().get(cpu, (0, 0))


def process_ticks(pid: int | None) -> int:
    """User + system jiffies used so far by process ``pid`` (0 if unknown)."""
    if pid is None:
        return 0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0
    return int(fields[11]) + int(fields[12])


def process_seconds(pid: int | None) -> float:
    """:func:`process_ticks` in seconds: CPU used so far by process ``pid``, all its
    threads, ended ones included (0 if unknown)."""
    return process_ticks(pid) / os.sysconf("SC_CLK_TCK")


def cpu_busy(interval: float = 0.5) -> dict[int, float]:
    """Fraction of each CPU used by anything during the next ``interval`` seconds."""
    before = _cpu_ticks()
    time.sleep(interval)
    after = _cpu_ticks()
    busy: dict[int, float] = {}
    for cpu, (b1, t1) in after.items():
        b0, t0 = before.get(cpu, (b1, t1))
        busy[cpu] = (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0
    return busy


def raise_fd_limit(wanted: int = 16384) -> int:
    """Raise the soft open-files limit towards ``wanted`` (N=1000 sockets per side)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def stop_process(proc: subprocess.Popen[Any], grace: float) -> None:
    """Stop a child that exits on EOF: close stdin, then terminate, then kill; reap it."""
    with contextlib.suppress(OSError):
        if proc.stdin is not None:
            proc.stdin.close()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


class ChildProcess:
    """A ``python -m <module>`` child speaking one JSON object per line on stdin/stdout.

    stderr goes to ``log`` (a file), never to a pipe that could fill up and block.
    """

    def __init__(
        self,
        name: str,
        module: str,
        args: list[str],
        *,
        log: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.module = module
        self.args = args
        self.log_path = log
        self.extra_env = dict(env or {})  #: added to the child's environment
        self._log: IO[bytes] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._buffer = b""

    @property
    def alive(self) -> bool:
        """True while the child runs."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The child's process id (``None`` before start)."""
        return None if self._proc is None else self._proc.pid

    def start(self, *, timeout: float) -> dict[str, Any]:
        """Start the child and return its first line (its "ready" message)."""
        self.launch()
        return self.receive(timeout=timeout)

    def launch(self) -> None:
        """Start the child without waiting for it (:meth:`receive` its ready line)."""
        self.stop()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
        env.update(self.extra_env)
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", self.module, *self.args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=root,
            env=env,
        )
        self._buffer = b""

    def send(self, message: dict[str, Any]) -> None:
        """Write one request line."""
        proc = self._require()
        assert proc.stdin is not None
        try:
            proc.stdin.write(json.dumps(message).encode() + b"\n")
            proc.stdin.flush()
        except OSError as exc:
            raise ChildError(f"{self.name}: cannot write: {exc}{self._tail()}") from exc

    def receive(self, *, timeout: float) -> dict[str, Any]:
        """Read one response line, or raise :class:`ChildError` after ``timeout`` seconds."""
        proc = self._require()
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ChildError(f"{self.name}: no answer within {timeout:.0f} s")
                if not sel.select(min(left, 1.0)):
                    continue
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    code = proc.wait(timeout=_KILL_GRACE)
                    raise ChildError(f"{self.name}: exited with code {code}{self._tail()}")
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            message = json.loads(line)
        except ValueError as exc:
            raise ChildError(f"{self.name}: bad line {line[:200]!r}") from exc
        if not isinstance(message, dict):
            raise ChildError(f"{self.name}: bad message {message!r}")
        return message

    def request(self, message: dict[str, Any], *, timeout: float) -> dict[str, Any]:
        """Send one request and wait for its answer."""
        self.send(message)
        return self.receive(timeout=timeout)

    def close_stdin(self) -> None:
        """Ask the child to exit (it stops at EOF); :meth:`stop` then reaps it."""
        if self._proc is not None and self._proc.stdin is not None:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()

    def stop(self) -> None:
        """Close stdin (the child exits on EOF), then terminate, then kill; always reaps."""
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc, _KILL_GRACE)
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """Kill at once (a trial that overran its time limit)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        self.stop()

    def _require(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise ChildError(f"{self.name}: not running")
        return self._proc

    def _tail(self) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        lines = text.strip().splitlines()[-5:]
        return ("\n    " + "\n    ".join(lines)) if lines else ""


def serve_lines() -> tuple[IO[str], IO[str]]:
    """In a child: take over stdin/stdout for the line protocol.

    Returns (requests, responses). File descriptor 1 is redirected to stderr afterwards,
    so a stray ``print`` in a library cannot corrupt the protocol.
    """
    out_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    responses = os.fdopen(out_fd, "w", buffering=1, encoding="utf-8")
    return sys.stdin, responses
