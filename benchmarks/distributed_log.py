"""The measurement log under load: ``python -m benchmarks.distributed_log``.

``--agents`` processes of ``aiotmc agent --config`` (default 5), each measuring
``--instruments`` simulated multimeters (default 200, in the agent's process) ``--rate``
times a second (default 10), publish their readings into a JetStream stream of a local
nats-server; a collector gateway in its own process (``aiotmc gateway``, ``[collector]``
into the SQLite sink) stores them. The issue's target: 5 x 200 x 10 = 10,000 readings/s
through JetStream into storage with the collector using at most one core.

Two phases, figures from /proc (user + system CPU of each process):

* **live**: for ``--duration`` seconds, readings entering the stream per second, readings
  stored per second and the collector's CPU (the agents' CPU too, in all and per reading
  published: when it nears one core each, the agents limit the rate, not the collector);
* **drain**: the collector paused (``SIGSTOP``) for ``--duration`` seconds while the
  agents go on, then the agents stopped and the collector resumed: it stores the backlog
  alone, so its capacity (readings/s) and CPU are measured without the agents competing
  for the machine's cores; readings per collector core-second decide the target.

Prints one table; ``--json FILE`` also writes the figures. A figure below target is
reported, not an error.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from .figures import HOST
from .procs import process_ticks, raise_fd_limit

TARGET_READINGS: Final = 10_000.0
TARGET_CORES: Final = 1.0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _agent_config(url: str, name: str, data: Path, instruments: int, rate: float) -> str:
    parts = [
        f'[gateway]\nsite = "bench"\ndata_dir = "{data}"\n',
        f'[[sinks]]\ntype = "jetstream"\nurl = "{url}"\n',
    ]
    for i in range(instruments):
        parts.append(
            f'[[instruments]]\nname = "{name}_{i}"\nresource = "SIM::dmm::{name}_{i}"\n'
            f'channels = [{{ name = "volts", query = "MEAS:VOLT:DC?", unit = "V", '
            f"period = {1.0 / rate!r} }}]\n"
        )
    return "\n".join(parts)


def _collector_config(url: str, data: Path, batch: int) -> str:
    return (
        f'[gateway]\nsite = "bench"\nhost = "central"\ndata_dir = "{data}"\n\n'
        '[[sinks]]\ntype = "sqlite"\nname = "db"\n\n'
        f'[collector]\nurl = "{url}"\nbatch = {batch}\n'
    )


def _count(db: Path, sql: str = "SELECT count(*) FROM readings") -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as connection:
            row = connection.execute(sql).fetchone()
    except sqlite3.OperationalError:
        return 0
    return int(row[0]) if row and row[0] is not None else 0


def _stream_messages(port: int) -> int:
    """Messages in the measurement stream now (0 before it exists)."""
    import anyio

    from aiotmc.transports.nats.connection import NatsConnection, NatsServer
    from aiotmc.transports.nats.jetstream import JetStream, JetStreamError

    async def ask() -> int:
        nc = await NatsConnection.connect(NatsServer(HOST, port), timeout=5)
        try:
            info = await JetStream(nc).api("STREAM.INFO.AIOTMC_READINGS")
        except JetStreamError:
            return 0
        finally:
            await nc.aclose()
        return int(info["state"]["messages"])

    return anyio.run(ask)


def _wait(
    what: str, check: Callable[[], bool], procs: list[subprocess.Popen[bytes]], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # bounded: until the deadline
        for proc in procs:
            if proc.poll() is not None:
                raise SystemExit(f"a process exited ({proc.returncode}) waiting for {what}")
        if time.monotonic() > deadline:
            raise SystemExit(f"no {what} within {timeout:.0f} s")
        time.sleep(0.1)


def _spawn(args: list[str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(args, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Start the server, the collector and the agents; measure; stop. The figures."""
    raise_fd_limit()
    binary = shutil.which("nats-server")
    if binary is None:
        raise SystemExit("nats-server is not installed (apt install nats-server)")
    port = _free_port()
    url = f"nats://{HOST}:{port}"
    nats = _spawn(
        [binary, "-a", HOST, "-p", str(port), "-js", "-sd", str(workdir / "js")],
        workdir / "nats.log",
        workdir,
    )
    agents: list[subprocess.Popen[bytes]] = []
    collector: subprocess.Popen[bytes] | None = None
    hz = os.sysconf("SC_CLK_TCK")
    try:
        _wait("nats-server", lambda: _stream_messages_or_none(port), [nats], 15)
        (workdir / "central.toml").write_text(
            _collector_config(url, workdir / "central", args.batch)
        )
        collector = _spawn(
            [sys.executable, "-m", "aiotmc", "gateway", "central.toml"],
            workdir / "collector.log",
            workdir,
        )
        names = [f"agent{i}" for i in range(args.agents)]
        for name in names:
            config = workdir / f"{name}.toml"
            config.write_text(_agent_config(url, name, workdir / name, args.instruments, args.rate))
            agents.append(
                _spawn(
                    [
                        sys.executable,
                        "-m",
                        "aiotmc",
                        "agent",
                        "--nats",
                        url,
                        "--name",
                        name,
                        "--config",
                        str(config),
                    ],
                    workdir / f"{name}.log",
                    workdir,
                )
            )
        db = workdir / "central" / "readings.sqlite"
        every = "SELECT count(DISTINCT instrument) FROM readings"
        total = args.agents * args.instruments
        _wait(
            "readings from every instrument",
            lambda: _count(db, every) >= total,
            [nats, collector, *agents],
            args.warmup_timeout,
        )

        # live: agents measuring, the collector storing
        t0 = time.monotonic()
        c0, n0 = process_ticks(collector.pid), process_ticks(nats.pid)
        a0 = sum(process_ticks(p.pid) for p in agents)
        s0, m0 = _count(db), _stream_messages(port)
        time.sleep(args.duration)
        t1 = time.monotonic()
        c1, n1 = process_ticks(collector.pid), process_ticks(nats.pid)
        a1 = sum(process_ticks(p.pid) for p in agents)
        s1, m1 = _count(db), _stream_messages(port)

        # fill: the collector paused (SIGSTOP) while the agents go on, so that the stream
        # holds a backlog; then the agents stop
        collector.send_signal(signal.SIGSTOP)
        time.sleep(args.duration)
        for proc in agents:
            _stop(proc)
        m2 = _stream_messages(port)

        # drain: the collector alone stores the backlog
        t2, c2, s2 = time.monotonic(), process_ticks(collector.pid), _count(db)
        collector.send_signal(signal.SIGCONT)
        _wait(
            "the backlog stored", lambda: _count(db) >= m2, [nats, collector], args.warmup_timeout
        )
        t3, c3, s3 = time.monotonic(), process_ticks(collector.pid), _count(db)
    finally:
        if collector is not None and collector.poll() is None:
            collector.send_signal(signal.SIGCONT)
        for proc in agents:
            _stop(proc)
        if collector is not None:
            _stop(collector)
        _stop(nats)
    live = t1 - t0
    drain = max(t3 - t2, 1e-9)
    collector_cpu = (c3 - c0) / hz  # live and drain
    return {
        "agents": args.agents,
        "instruments": args.instruments,
        "rate": args.rate,
        "offered_per_s": args.agents * args.instruments * args.rate,
        "duration": live,
        "published_per_s": (m1 - m0) / live,
        "stored_per_s": (s1 - s0) / live,
        "collector_cores": (c1 - c0) / hz / live,
        "agent_cores": (a1 - a0) / hz / live,
        "agent_cpu_us_per_reading": (a1 - a0) / hz / max(m1 - m0, 1) * 1e6,
        "nats_cores": (n1 - n0) / hz / live,
        "backlog": s3 - s2,
        "drain_per_s": (s3 - s2) / drain,
        "drain_collector_cores": (c3 - c2) / hz / drain,
        "readings_per_cpu_s": (s3 - s0) / max(collector_cpu, 1e-9),
        "stored_total": s3,
    }


def _stream_messages_or_none(port: int) -> bool:
    try:
        _stream_messages(port)
    except Exception:  # not up yet
        return False
    return True


def report(f: dict[str, Any]) -> str:
    """The figures as a table with the issue's target."""
    per_core = f["drain_per_s"] / max(f["drain_collector_cores"], 1e-9)
    if f["backlog"] < 1000:
        verdict = "n/a (backlog too small to judge)"
    elif f["drain_per_s"] >= TARGET_READINGS and f["drain_collector_cores"] <= TARGET_CORES:
        verdict = "PASS"
    else:
        verdict = "MISS" if per_core < TARGET_READINGS / TARGET_CORES else "PASS (per core)"
    rows = [
        ("agents x instruments x rate", f"{f['agents']} x {f['instruments']} x {f['rate']:g}/s"),
        ("offered", f"{f['offered_per_s']:,.0f} readings/s"),
        ("live: into the stream", f"{f['published_per_s']:,.0f} readings/s"),
        ("live: stored (SQLite)", f"{f['stored_per_s']:,.0f} readings/s"),
        ("live: collector CPU", f"{f['collector_cores']:.2f} cores"),
        ("live: agents' CPU", f"{f['agent_cores']:.2f} cores in {f['agents']} processes"),
        ("live: agents' CPU per reading", f"{f['agent_cpu_us_per_reading']:.0f} us"),
        ("live: nats-server CPU", f"{f['nats_cores']:.2f} cores"),
        ("drain: backlog stored", f"{f['backlog']:,} readings at {f['drain_per_s']:,.0f}/s"),
        ("drain: collector CPU", f"{f['drain_collector_cores']:.2f} cores"),
        (
            "target",
            f"{TARGET_READINGS:,.0f} readings/s with <= {TARGET_CORES:g} core: "
            f"{per_core:,.0f} readings per collector core-second while draining: {verdict}",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.distributed_log")
    parser.add_argument("--agents", type=int, default=5)
    parser.add_argument("--instruments", type=int, default=200, help="per agent")
    parser.add_argument("--rate", type=float, default=10.0, help="readings/s per instrument")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds (live)")
    parser.add_argument("--batch", type=int, default=500, help="the collector's pull batch")
    parser.add_argument("--warmup-timeout", type=float, default=120.0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="aiotmc-bench-log-") as tmp:
        figures = run(args, Path(tmp))
    print(report(figures))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
