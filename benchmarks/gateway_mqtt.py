"""Instrument answer → MQTT subscriber latency through mosquitto:
``python -m benchmarks.gateway_mqtt [--count N] [--period S] [--json]``.

A simulated multimeter on a real TCP socket (:class:`~aiotmc.sim.server.SimServer`) is
queried every ``--period`` seconds; the moment its answer is parsed is the reading's
timestamp. The reading takes the gateway's own path: appended to a real spool (committed
with the gateway's default ``spool_commit_interval``), published on the gateway's hub
once durable, to its :class:`MqttBridge`, to a mosquitto started here on 127.0.0.1, to
an MQTT 5 subscriber in the same process, which records arrival time minus the
timestamp. Targets (issue 19): median ≤ 5 ms, p99 ≤ 50 ms. Then the bridge's
throughput: readings per second from the hub to the subscriber. (``benchmarks.gateway``
samples the same latency with 1,000 instruments at 10,000 readings/s.)
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

TARGET_MEDIAN_MS = 5.0
TARGET_P99_MS = 50.0
SITE, HOST = "bench", "host"


@contextmanager
def mosquitto() -> Iterator[int]:
    """An anonymous mosquitto on a free 127.0.0.1 port, for the duration of the block."""
    binary = shutil.which("mosquitto")
    if binary is None:
        raise SystemExit("mosquitto is not installed")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    with tempfile.TemporaryDirectory(prefix="aiotmc-bench-mqtt-") as directory:
        config = Path(directory) / "mosquitto.conf"
        lines = ["allow_anonymous true", "persistence false", f"listener {port} 127.0.0.1"]
        lines.append("set_tcp_nodelay true")  # as docs/gateway.md recommends
        if os.getuid() == 0:
            lines.append(f"user {getpass.getuser()}")
        config.write_text("\n".join(lines) + "\n")
        process = subprocess.Popen(
            [binary, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise RuntimeError("mosquitto did not start") from None
                    time.sleep(0.02)
            yield port
        finally:
            process.terminate()
            process.wait(timeout=10)


class _Hub:
    """The smallest Hub for the benchmark: one subscriber, no drops expected."""

    def __init__(self) -> None:
        import anyio

        from aiotmc.gateway.model import Event

        self.gateway_id, self.site, self.host = "bench", SITE, HOST
        self.controller: Any = None
        self._send, self._receive = anyio.create_memory_object_stream[Event](100_000)

    @asynccontextmanager
    async def subscribe(self, name: str, *, maxsize: int = 1000) -> AsyncIterator[Any]:
        yield self._receive

    async def publish(self, event: Any) -> None:
        self._send.send_nowait(event)

    def dropped(self, name: str) -> int:
        return 0

    def close(self) -> None:
        self._send.close()
        self._receive.close()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def run(*, port: int, count: int, period: float) -> dict[str, Any]:
    """Measure ``count`` readings against the broker on ``port``; the figures in ms."""
    import aiomqtt
    import anyio

    import aiotmc
    from aiotmc.gateway.config import DEFAULT_SPOOL_COMMIT_INTERVAL
    from aiotmc.gateway.hub import GatewayHub
    from aiotmc.gateway.mqtt import from_config
    from aiotmc.gateway.spool import Spool
    from aiotmc.sim.devices import create_device
    from aiotmc.sim.server import SimServer

    hub = GatewayHub(gateway_id="bench", site=SITE, host=HOST)
    bridge = from_config({"port": port, "discovery": False, "commands": False})
    latencies: list[float] = []
    topic = f"aiotmc/{SITE}/{HOST}/dmm/voltage"
    done = anyio.Event()
    directory = Path(tempfile.mkdtemp(prefix="aiotmc-bench-spool-"))
    spool = Spool(
        directory / "spool.sqlite",
        gateway_id="bench",
        site=SITE,
        host=HOST,
        commit_interval=DEFAULT_SPOOL_COMMIT_INTERVAL,
    )
    spool.on_commit = hub.publish_nowait  # durable first, then published: as the gateway
    async with (
        spool,
        SimServer(create_device("dmm")) as server,
        aiotmc.open(server.resource) as dmm,
        aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5) as subscriber,
        anyio.create_task_group() as tg,
    ):
        await subscriber.subscribe(topic)
        await tg.start(spool.run)

        async def receive() -> None:
            async for message in subscriber.messages:
                arrived = time.time()
                sent = json.loads(message.payload)["timestamp"]
                latencies.append((arrived - sent) * 1000)
                if len(latencies) >= count:
                    done.set()
                    return

        tg.start_soon(receive)
        await tg.start(bridge.run, hub)
        with anyio.fail_after(30):
            await bridge.wait_connected()
        started = time.perf_counter()
        with anyio.fail_after(60 + count * (period + 0.01)):
            for _ in range(count):
                value = float(await dmm.query("MEAS:VOLT?"))
                spool.append_nowait("dmm", "voltage", value, "V", time.time())
                if period:
                    await anyio.sleep(period)
            await done.wait()
        elapsed = time.perf_counter() - started
        tg.cancel_scope.cancel()
    shutil.rmtree(directory, ignore_errors=True)
    return {
        "count": len(latencies),
        "median_ms": statistics.median(latencies),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": max(latencies),
        "readings_per_s": count / elapsed,
        "dropped": bridge.queue.dropped,
        "targets": {"median_ms": TARGET_MEDIAN_MS, "p99_ms": TARGET_P99_MS},
    }


async def throughput(*, port: int, count: int) -> dict[str, Any]:
    """Readings per second from the hub through the bridge and mosquitto to a subscriber
    in another process (``mosquitto_sub``), as fast as the bridge goes."""
    import anyio

    from aiotmc.gateway.model import Reading
    from aiotmc.gateway.mqtt import from_config

    hub = _Hub()
    bridge = from_config(
        {"port": port, "discovery": False, "commands": False, "queue_size": count + 1}
    )
    sub = shutil.which("mosquitto_sub")
    if sub is None:
        raise SystemExit("mosquitto_sub is not installed")
    topic = f"aiotmc/{SITE}/{HOST}/dmm/#"
    command = [sub, "-p", str(port), "-t", topic, "-F", "%t"]
    received = 0
    async with (
        await anyio.open_process(command, stdout=subprocess.PIPE) as process,
        anyio.create_task_group() as tg,
    ):
        assert process.stdout is not None
        await tg.start(bridge.run, hub)
        with anyio.fail_after(30):
            await bridge.wait_connected()
            # Until the subscriber shows one message, it may not be subscribed yet.
            while True:
                await hub.publish(Reading("bench", 0, SITE, HOST, "dmm", "ready", 0, "", 0))
                with anyio.move_on_after(0.2):
                    await process.stdout.receive()
                    break
        started, cpu0 = time.perf_counter(), time.process_time()
        with anyio.fail_after(60 + count / 100):
            for seq in range(count):
                channel = f"ch{seq % 100}"
                await hub.publish(
                    Reading("bench", seq, SITE, HOST, "dmm", channel, 1.0, "V", time.time())
                )
                if seq % 100 == 99:
                    await anyio.lowlevel.checkpoint()  # let the bridge run
            rest = b""
            async for chunk in process.stdout:
                *lines, rest = (rest + chunk).split(b"\n")
                received += sum(1 for line in lines if not line.endswith(b"/ready"))
                if received >= count:
                    break
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu0
        tg.cancel_scope.cancel()
        process.terminate()
    hub.close()
    return {
        "count": received,
        "readings_per_s": count / elapsed,
        "dropped": bridge.queue.dropped,
        "cpu_us_per_reading": cpu / count * 1e6,
    }


def measure(*, count: int = 2000, period: float = 0.001) -> dict[str, Any]:
    """Start mosquitto, measure on asyncio (the gateway's loop), stop it."""
    import anyio

    with mosquitto() as port:
        result: dict[str, Any] = anyio.run(
            lambda: run(port=port, count=count, period=period), backend="asyncio"
        )
        result["throughput"] = anyio.run(
            lambda: throughput(port=port, count=max(count, 1000) * 5), backend="asyncio"
        )
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gateway_mqtt")
    parser.add_argument("--count", type=int, default=2000, help="readings to send")
    parser.add_argument("--period", type=float, default=0.001, help="seconds between readings")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    figures = measure(count=args.count, period=args.period)
    if args.json:
        print(json.dumps(figures))
        return 0
    ok = figures["median_ms"] <= TARGET_MEDIAN_MS and figures["p99_ms"] <= TARGET_P99_MS
    print(f"instrument answer -> MQTT subscriber via mosquitto, {figures['count']} readings")
    print(f"  median {figures['median_ms']:.2f} ms (target <= {TARGET_MEDIAN_MS} ms)")
    print(f"  p99    {figures['p99_ms']:.2f} ms (target <= {TARGET_P99_MS} ms)")
    print(f"  max    {figures['max_ms']:.2f} ms, {figures['readings_per_s']:.0f} readings/s")
    print(f"  {'within' if ok else 'OUTSIDE'} targets")
    rate = figures["throughput"]
    print(
        f"bridge throughput hub -> subscriber: {rate['readings_per_s']:.0f} readings/s, "
        f"{rate['cpu_us_per_reading']:.1f} us of this process's CPU per reading"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
