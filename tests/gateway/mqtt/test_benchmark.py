"""``benchmarks/gateway_mqtt.py`` at a tiny size: it runs end to end and reports every
figure (nothing is asserted about the figures: they depend on the machine's load)."""

from __future__ import annotations

import math
from pathlib import Path

from benchmarks.gateway_mqtt import run, throughput
from benchmarks.gateway_pipeline import pipeline

from .broker import Mosquitto, require


async def test_latency_benchmark_smoke(plain_broker: Mosquitto) -> None:
    figures = await run(port=plain_broker.port, count=20, period=0.0)
    assert figures["count"] == 20 and figures["dropped"] == 0
    for name in ("median_ms", "p99_ms", "max_ms", "readings_per_s"):
        assert math.isfinite(figures[name]) and figures[name] > 0, name
    assert figures["median_ms"] <= figures["p99_ms"] <= figures["max_ms"]
    require("mosquitto_sub")
    rate = await throughput(port=plain_broker.port, count=50)
    assert rate["count"] == 50 and rate["readings_per_s"] > 0 and rate["cpu_us_per_reading"] > 0


async def test_pipeline_benchmark_smoke(plain_broker: Mosquitto, tmp_path: Path) -> None:
    """``benchmarks/gateway_pipeline.py`` at a tiny size: spool, hub, MQTT and SQLite."""
    figures = await pipeline(
        tmp_path, rate=2000, duration=0.2, mqtt_port=plain_broker.port, prefill=1000
    )
    assert figures["readings"] >= 200 and figures["mqtt"] is True
    assert figures["cpu_us_per_reading"] > 0 and figures["mqtt_dropped"] == 0
