"""The gateway under load: ``python -m benchmarks.gateway [--instruments N] [--rate R]``.

``N`` simulated multimeters, each on its own 127.0.0.1 port in a separate simulator
process (so that its CPU is not the gateway's), are read ``R`` times a second each by a
real ``aiotmc gateway`` process into its spool and the default SQLite sink. After all
instruments are online, it measures for ``--duration`` seconds: readings acquired per
second (the spool's counter), readings stored per second (the SQLite table) and the
gateway process's CPU (user + system, in cores). The issue's target: 1,000 instruments
x 10/s = 10,000 readings/s with at most one core.

Prints one table; ``--json FILE`` also writes the figures. A figure below target is
reported, not an error: the exit status is 0 when the run completed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .figures import HOST
from .procs import ChildProcess, process_ticks, raise_fd_limit

TARGET_READINGS = 10_000.0  # per second
TARGET_CORES = 1.0


def _config(ports: list[int], rate: float, loop: str = "asyncio") -> str:
    lines = [f'[gateway]\nsite = "bench"\nhost = "bench"\ndata_dir = "data"\nloop = "{loop}"\n']
    for index, port in enumerate(ports):
        lines.append(
            f'[[instruments]]\nname = "dmm{index}"\n'
            f'resource = "TCPIP0::{HOST}::{port}::SOCKET"\n'
            "retry_min = 0.05\n"
            f'channels = [{{ name = "volts", query = "MEAS:VOLT?", unit = "V", '
            f"period = {1.0 / rate!r} }}]\n"
        )
    return "\n".join(lines)


def _one(db: Path, sql: str) -> int:
    """One integer from ``db`` (0 while the file or table does not exist yet)."""
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as connection:
            row = connection.execute(sql).fetchone()
    except sqlite3.OperationalError:
        return 0
    return int(row[0]) if row and row[0] is not None else 0


def _wait(what: str, check: Any, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if process.poll() is not None:
            raise SystemExit(f"the gateway exited ({process.returncode}) waiting for {what}")
        if time.monotonic() > deadline:
            raise SystemExit(f"no {what} within {timeout:.0f} s")
        time.sleep(0.1)


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Start the simulators and the gateway, measure, stop; the figures."""
    raise_fd_limit()
    count = max(1, min(args.simulators, args.instruments))
    sims = [
        ChildProcess(
            f"simserver{index}",
            "benchmarks.simserver",
            ["--dmm", str(len(range(index, args.instruments, count))), "--latency", "0"],
            log=workdir / f"simserver{index}.log",
        )
        for index in range(count)
    ]
    ports: list[int] = []
    try:
        for sim in sims:
            ports += sim.start(timeout=60)["dmm"]
    except BaseException:
        for sim in sims:
            sim.stop()
        raise
    (workdir / "gateway.toml").write_text(_config(ports, args.rate, args.loop))
    spool = workdir / "data" / "spool.sqlite"
    readings = workdir / "data" / "readings.sqlite"
    log = (workdir / "gateway.log").open("ab")
    gateway = subprocess.Popen(
        [sys.executable, "-m", "aiotmc", "gateway", "gateway.toml"],
        cwd=workdir,
        stdout=log,
        stderr=log,
    )
    try:
        online = "SELECT count(DISTINCT instrument) FROM readings"
        _wait(
            "readings from every instrument",
            lambda: _one(readings, online) >= args.instruments,
            gateway,
            args.warmup_timeout,
        )
        acquired = "SELECT value FROM meta WHERE key = 'next_seq'"
        stored = "SELECT count(*) FROM readings"
        t0, ticks0 = time.monotonic(), process_ticks(gateway.pid)
        sim0 = sum(process_ticks(sim.pid) for sim in sims)
        acquired0, stored0 = _one(spool, acquired), _one(readings, stored)
        time.sleep(args.duration)
        t1, ticks1 = time.monotonic(), process_ticks(gateway.pid)
        sim1 = sum(process_ticks(sim.pid) for sim in sims)
        acquired1, stored1 = _one(spool, acquired), _one(readings, stored)
        gateway.send_signal(signal.SIGTERM)
        status = gateway.wait(timeout=60)
    finally:
        if gateway.poll() is None:
            gateway.kill()
            gateway.wait()
        log.close()
        for sim in sims:
            sim.stop()
    elapsed = t1 - t0
    hz = os.sysconf("SC_CLK_TCK")
    cores = (ticks1 - ticks0) / hz / elapsed
    return {
        "instruments": args.instruments,
        "loop": args.loop,
        "rate": args.rate,
        "duration": elapsed,
        "offered_per_s": args.instruments * args.rate,
        "acquired_per_s": (acquired1 - acquired0) / elapsed,
        "stored_per_s": (stored1 - stored0) / elapsed,
        "gateway_cores": cores,
        "simulator_cores": (sim1 - sim0) / hz / elapsed,
        "simulators": count,
        "exit_status": status,
    }


def report(figures: dict[str, Any]) -> str:
    offered = figures["offered_per_s"]
    rows = [
        ("instruments x rate", f"{figures['instruments']} x {figures['rate']:g}/s"),
        ("event loop", figures["loop"]),
        ("offered", f"{offered:,.0f} readings/s"),
        ("acquired (spool)", f"{figures['acquired_per_s']:,.0f} readings/s"),
        ("stored (SQLite)", f"{figures['stored_per_s']:,.0f} readings/s"),
        ("gateway CPU", f"{figures['gateway_cores']:.2f} cores"),
        (
            "simulator CPU",
            f"{figures['simulator_cores']:.2f} cores in {figures['simulators']} processes "
            "(if it nears their count, the simulators limit the rate, not the gateway)",
        ),
        (
            "target",
            f"{TARGET_READINGS:,.0f} readings/s with <= {TARGET_CORES:g} core "
            f"({figures['acquired_per_s'] / max(figures['gateway_cores'], 1e-9):,.0f} "
            "readings per core-second here)",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gateway")
    parser.add_argument("--instruments", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=10.0, help="reads per second each")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup-timeout", type=float, default=120.0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--simulators", type=int, default=2, help="simulator processes sharing the instruments"
    )
    parser.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="the gateway's event loop ([gateway] loop); auto: uvloop if installed",
    )
    args = parser.parse_args(argv)
    if args.loop == "auto":
        args.loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    with tempfile.TemporaryDirectory(prefix="aiotmc-bench-gateway-") as tmp:
        figures = run(args, Path(tmp))
    print(report(figures))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
