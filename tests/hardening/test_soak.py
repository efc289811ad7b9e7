"""The soak script (scripts/soak.py) for ~10 s per event loop: 50 simulated instruments
(25 over loopback TCP with polled SRQs, 25 SIM:: in-process), concurrent query rounds and
service requests. No exchange may fail, and nothing may grow after the warm-up: the same
file descriptors, tasks and threads, and RSS within a few MB.

Both backends run at once, each in its own subprocess (a clean interpreter: pytest's own
allocations do not blur the RSS numbers). ``AIOTMC_SOAK_SECONDS`` sets the duration.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SECONDS = float(os.environ.get("AIOTMC_SOAK_SECONDS", "10"))
RSS_LIMIT = 4 * 1024 * 1024


def test_soak_50_instruments_both_backends() -> None:
    runs = {
        backend: subprocess.Popen(
            [
                sys.executable,
                "scripts/soak.py",
                "--duration",
                str(SECONDS),
                "--warmup",
                str(min(3.0, SECONDS / 3)),
                "--backend",
                backend,
                "--json",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for backend in ("asyncio", "trio")
    }
    reports: dict[str, dict[str, Any]] = {}
    for backend, process in runs.items():
        try:
            stdout, stderr = process.communicate(timeout=SECONDS + 40)
        except subprocess.TimeoutExpired:
            for other in runs.values():
                other.kill()
            raise AssertionError(f"soak ({backend}) did not finish in {SECONDS + 40} s") from None
        lines = [line for line in stdout.splitlines() if line.startswith("SOAK ")]
        assert lines, f"soak ({backend}) printed no report (exit {process.returncode}):\n{stderr}"
        reports[backend] = json.loads(lines[-1][len("SOAK ") :])
    for backend, report in reports.items():
        print(backend, json.dumps(report))
        start, end = report["start"], report["end"]
        assert report["errors"] == 0, (backend, report["first_errors"])
        assert report["instruments"] == 50
        assert report["queries"] > 1000 and report["srqs"] > 50, report
        assert end["fds"] == start["fds"], (backend, start, end)
        assert end["tasks"] == start["tasks"], (backend, start, end)
        assert end["threads"] <= start["threads"], (backend, start, end)
        assert report["rss_growth"] < RSS_LIMIT, (backend, report["rss_growth"])
