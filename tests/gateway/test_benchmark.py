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
    assert set(figures["mqtt_latency_ms"]) == {"samples", "median", "p99"}
    assert "MQTT latency" in proc.stdout
    assert figures["rig_cpus"] and 0.0 <= figures["rig_busy"] <= 1.0
    assert "rig CPUs" in proc.stdout


def test_the_rig_busy_share_is_busy_over_total_ticks_of_its_cpus() -> None:
    from benchmarks.gateway import _busy

    assert _busy([(10, 100), (20, 100)], [(60, 200), (20, 200)]) == 0.25
    assert _busy([(5, 50)], [(5, 50)]) is None  # no time passed: unknown, not 0 %


def test_a_latency_sample_is_arrival_minus_the_readings_timestamp() -> None:
    from benchmarks.gateway import _latency_ms, _latency_summary

    payload = b'{"value":1.0,"unit":"V","timestamp":1700000000.25,"quality":"good","key":"b:1"}'
    assert _latency_ms(b"1700000000.5 " + payload) == 250.0
    assert _latency_ms(b'1700000000.5 {"value":1.0,"timestamp":1700000000.5}') == 0.0
    assert _latency_ms(b"1700000000.5 " + payload[:40]) is None  # cut inside the number
    assert _latency_ms(b"1700000000.5") is None and _latency_ms(b"") is None
    assert _latency_summary([]) == {"samples": 0, "median": None, "p99": None}
    assert _latency_summary([3.0, 1.0, 2.0])["median"] == 2.0
    assert _latency_summary([1.0, 5.0])["p99"] == 5.0
