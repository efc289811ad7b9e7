"""``python -m benchmarks.gateway`` at a tiny size: the harness runs end to end (it asserts
nothing about performance, which depends on the machine and its load). With MQTT (the
default); the comparison with the users' script is smoke-tested in tests/test_benchmarks.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_gateway_benchmark_runs_at_a_tiny_size(tmp_path: Path) -> None:
    output = tmp_path / "gateway.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.gateway",
            "--instruments",
            "3",
            "--rate",
            "20",
            "--duration",
            "0.5",
            "--json",
            str(output),
            "--no-compare",  # tests/test_benchmarks.py runs the users' script
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(output.read_text())
    assert figures["instruments"] == 3 and figures["offered_per_s"] == 60
    assert figures["acquired_per_s"] > 0 and figures["stored_per_s"] > 0
    assert figures["gateway_cores"] >= 0 and figures["exit_status"] == 0
    assert figures["cpu_us_per_reading"] >= 0 and "CPU per reading" in proc.stdout
    assert figures["mqtt"] is True and figures["mqtt_per_s"] >= 0 and figures["script"] is None
    assert "gateway CPU" in proc.stdout and "readings/s" in proc.stdout
