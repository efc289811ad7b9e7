"""A private VictoriaMetrics for tests: the Debian ``victoria-metrics`` binary on
127.0.0.1, a free port and a tmp storage dir, read back through its export API.

Started with ``-dedup.minScrapeInterval=1ms`` (one sample per series and millisecond: a
replayed reading overwrites itself, as in InfluxDB) and a long retention (readings keep
their acquisition time).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from .pgcluster import free_port, require_binary

BINARY = Path(shutil.which("victoria-metrics") or "/usr/bin/victoria-metrics")


class VictoriaMetrics:
    def __init__(self) -> None:
        require_binary(BINARY)
        self.root = Path(tempfile.mkdtemp(prefix="aiotmc-vm-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        with open(self.root / "vm.log", "ab") as log:
            self.proc = subprocess.Popen(
                [str(BINARY), f"-storageDataPath={self.root / 'data'}",
                 f"-httpListenAddr=127.0.0.1:{self.port}", "-retentionPeriod=100y",
                 "-dedup.minScrapeInterval=1ms", "-search.latencyOffset=0s",
                 "-search.disableCache", "-loggerLevel=ERROR", "-memory.allowedPercent=5"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:  # readiness probe, bounded by the deadline
            if self.proc.poll() is not None:
                raise RuntimeError((self.root / "vm.log").read_text(errors="replace"))
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.05)

    def stop(self) -> None:
        """A clean stop (SIGINT): VictoriaMetrics flushes what it buffers in memory."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def export(self, selector: str, start: float, end: float) -> list[dict[str, Any]]:
        """The raw samples of every series matching ``selector`` (JSON lines)."""
        data = urllib.parse.urlencode(
            {"match[]": selector, "start": f"{start:.3f}", "end": f"{end:.3f}"}
        ).encode()
        with urllib.request.urlopen(f"{self.url}/api/v1/export", data, timeout=10) as response:
            body = response.read().decode()
        return [json.loads(line) for line in body.splitlines() if line.strip()]

    def wait_for_samples(
        self, selector: str, start: float, end: float, count: int, timeout: float = 15.0
    ) -> list[dict[str, Any]]:
        """Export until ``count`` samples are found. Ingested rows become searchable once
        VictoriaMetrics flushes its in-memory buffers (seconds later for new series), so
        each attempt first asks for that flush (``/internal/force_flush``)."""
        deadline = time.monotonic() + timeout
        while True:
            with urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=10):
                pass
            series = self.export(selector, start, end)
            found = sum(len(s["values"]) for s in series)
            if found >= count or time.monotonic() > deadline:
                return series
            time.sleep(0.1)
