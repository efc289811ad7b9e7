"""The gateway's own CPU per reading, without instruments:
``python -m benchmarks.gateway_pipeline [--rate R] [--duration S] [--no-mqtt]``.

In one process on asyncio (uvloop when installed, as ``aiotmc gateway`` with
``loop = "uvloop"``): readings of 1,000 channels are appended to a real spool at ``R``
per second (in steps of 10 ms, as sources deliver them), committed, published on the hub
to a real MQTT bridge (to a mosquitto started here, unless ``--no-mqtt``) and forwarded
to the default SQLite sink. After ``S`` seconds the run waits until the sink has every
reading and the bridge has handed every one to the broker, then divides the process's
CPU time (all threads: user + system) by the readings. What is left out is the
instrument exchange (a ``send`` and a ``recv`` per query, in :mod:`benchmarks.gateway`).

This is the figure that survives a loaded machine: CPU-seconds per reading. Times
10,000 readings/s, it is the share of a core the gateway's pipeline needs at the issue's
target.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

CHANNELS = 1000


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _prefill(path: Path, count: int) -> None:
    """``count`` older readings of the same channels in the SQLite sink's database, as
    after a while of running (the series index is then larger than SQLite's cache)."""
    import sqlite3

    from aiotmc.gateway.sinks.sqlite import SCHEMA

    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(SCHEMA)
        start = time.time() - count / 10_000
        for first in range(0, count, 100_000):
            rows = [
                (
                    "bench",
                    seq,
                    "bench",
                    "bench",
                    f"dmm{seq % CHANNELS}",
                    "volts",
                    1.0,
                    "V",
                    start + seq / 10_000,
                    "good",
                )
                for seq in range(first, min(count, first + 100_000))
            ]
            db.execute("BEGIN")
            db.executemany("INSERT INTO readings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            db.execute("COMMIT")
    finally:
        db.close()


async def pipeline(
    directory: Path, *, rate: float, duration: float, mqtt_port: int | None, prefill: int = 0
) -> dict[str, Any]:
    """Feed the spool at ``rate`` for ``duration`` s; the figures once all is delivered."""
    import anyio

    from aiotmc.gateway.hub import GatewayHub
    from aiotmc.gateway.sinks.sqlite import SqliteSink
    from aiotmc.gateway.spool import Spool

    sink = SqliteSink(directory / "readings.sqlite")
    if prefill:
        _prefill(directory / "readings.sqlite", prefill)
    spool = Spool(
        directory / "spool.sqlite", gateway_id="bench", site="bench", host="bench", sinks=["sqlite"]
    )
    hub = GatewayHub(gateway_id="bench", site="bench", host="bench")
    hub.set_spool(spool)
    spool.on_commit = hub.publish_nowait
    bridge: Any = None
    if mqtt_port is not None:
        from aiotmc.gateway.mqtt import from_config

        bridge = from_config(
            {"port": mqtt_port, "discovery": False, "commands": False, "queue_size": 100_000}
        )
    names = [f"dmm{index}" for index in range(CHANNELS)]
    step = 0.01
    per_step = max(1, round(rate * step))
    async with spool, anyio.create_task_group() as tg:
        await tg.start(spool.run)
        await tg.start(spool.forward, sink)
        if bridge is not None:
            await tg.start(bridge.run, hub)
            with anyio.fail_after(30):
                await bridge.wait_connected()
        count = 0
        started, cpu0 = time.perf_counter(), _cpu()
        deadline = started + duration
        tick = started
        append = spool.append_nowait
        while tick < deadline:
            now = time.time()
            for _ in range(per_step):
                append(names[count % CHANNELS], "volts", 1.0 + count * 1e-6, "V", now)
                count += 1
            tick += step
            await anyio.sleep(max(0.0, tick - time.perf_counter()))
        fed = time.perf_counter()
        with anyio.fail_after(120):
            await spool.wait_delivered()
            while bridge is not None and bridge.published + _lost(hub, bridge) < count:  # noqa: ASYNC110 - no event per publish
                await anyio.sleep(0.01)
        elapsed, cpu = time.perf_counter() - started, _cpu() - cpu0
        tg.cancel_scope.cancel()
    await sink.aclose()
    return {
        "readings": count,
        "offered_per_s": count / (fed - started),
        "elapsed_s": elapsed,
        "cpu_s": cpu,
        "cpu_us_per_reading": cpu / count * 1e6,
        "cores_at_10000_per_s": cpu / count * 10_000,
        "mqtt": bridge is not None,
        "mqtt_dropped": _lost(hub, bridge) if bridge is not None else None,
    }


def _lost(hub: Any, bridge: Any) -> int:
    """Readings that will never reach the broker: dropped by the hub's queue in front of
    the bridge, or by the bridge's own queue (both drop the oldest when full)."""
    return int(hub.dropped(bridge.name)) + int(bridge.queue.dropped)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import anyio

    from .gateway_mqtt import mosquitto

    uvloop = args.loop == "uvloop"
    with ExitStack() as stack:
        port = stack.enter_context(mosquitto()) if args.mqtt else None
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="aiotmc-pipe-")))
        figures: dict[str, Any] = anyio.run(
            lambda: pipeline(
                directory,
                rate=args.rate,
                duration=args.duration,
                mqtt_port=port,
                prefill=args.prefill,
            ),
            backend="asyncio",
            backend_options={"use_uvloop": True} if uvloop else {},
        )
    figures["loop"] = args.loop
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gateway_pipeline")
    parser.add_argument("--rate", type=float, default=10_000.0, help="readings per second")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of feeding")
    parser.add_argument("--no-mqtt", dest="mqtt", action="store_false")
    parser.add_argument(
        "--prefill",
        type=int,
        default=1_000_000,
        help="readings already in the SQLite database at the start (not measured)",
    )
    parser.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.loop == "auto":
        args.loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    figures = measure(args)
    if args.json:
        print(json.dumps(figures))
        return 0
    print(
        f"{figures['readings']:,} readings at {figures['offered_per_s']:,.0f}/s "
        f"(spool -> hub -> {'MQTT + ' if figures['mqtt'] else ''}SQLite, {figures['loop']}): "
        f"{figures['cpu_us_per_reading']:.1f} us of CPU per reading, "
        f"{figures['cores_at_10000_per_s']:.2f} cores at 10,000 readings/s"
        + (f"; MQTT dropped {figures['mqtt_dropped']:,}" if figures["mqtt"] else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
