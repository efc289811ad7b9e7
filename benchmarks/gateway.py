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
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from .figures import HOST
from .gateway_mqtt import TARGET_MEDIAN_MS, TARGET_P99_MS, mosquitto, percentile
from .procs import ChildProcess, cpu_ticks, process_ticks, raise_fd_limit

TARGET_READINGS = 10_000.0  # per second
TARGET_CORES = 1.0
HZ = os.sysconf("SC_CLK_TCK")


def _config(
    ports: list[int],
    rate: float,
    loop: str = "asyncio",
    mqtt_port: int | None = None,
    commit_interval: float | None = None,
) -> str:
    lines = [f'[gateway]\nsite = "bench"\nhost = "bench"\ndata_dir = "data"\nloop = "{loop}"\n']
    if commit_interval is not None:
        lines[0] += f"spool_commit_interval = {commit_interval!r}\n"
    if mqtt_port is not None:
        lines.append(
            f'[mqtt]\nhost = "{HOST}"\nport = {mqtt_port}\ndiscovery = false\ncommands = false\n'
        )
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


class _MqttCounter:
    """``mosquitto_sub`` on the gateway's reading topics; counts the messages it prints
    (one short line each) in a thread, so the count costs the gateway nothing. The last
    line of every chunk it reads is also a latency sample: the subscriber's arrival time
    (``%U``) minus the reading's timestamp (taken as the answer was parsed)."""

    def __init__(self, port: int) -> None:
        binary = shutil.which("mosquitto_sub")
        if binary is None:
            raise SystemExit("mosquitto_sub is not installed")
        topic = "aiotmc/bench/bench/+/volts"
        command = [binary, "-h", HOST, "-p", str(port), "-t", topic, "-F", "%U %p"]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE)
        self.count = 0
        self.latencies_ms: list[float] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for chunk in iter(lambda: self.process.stdout.read1(1 << 16), b""):  # type: ignore[union-attr]
            self.count += chunk.count(b"\n")
            end = chunk.rfind(b"\n")
            line = chunk[chunk.rfind(b"\n", 0, end) + 1 : end]
            sample = _latency_ms(line)
            if sample is not None:
                self.latencies_ms.append(sample)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self._thread.join(timeout=10)


def _latency_ms(line: bytes) -> float | None:
    """Arrival minus timestamp of one ``%U %p`` line, in ms; None if it is not whole."""
    arrived, _, payload = line.partition(b" ")
    at = payload.find(b'"timestamp":')
    if at < 0:
        return None
    start = at + len(b'"timestamp":')
    ends = [i for i in (payload.find(b",", start), payload.find(b"}", start)) if i >= 0]
    if not ends:  # cut inside the number
        return None
    end = min(ends)
    try:
        return (float(arrived) - float(payload[start:end])) * 1000
    except ValueError:
        return None


def _latency_summary(latencies: list[float]) -> dict[str, Any]:
    """Samples, median and p99 (ms; None without samples) as ``benchmarks.gateway_mqtt``."""
    return {
        "samples": len(latencies),
        "median": percentile(latencies, 0.5) if latencies else None,
        "p99": percentile(latencies, 0.99) if latencies else None,
    }


@contextmanager
def simulators(args: argparse.Namespace, workdir: Path) -> Iterator[tuple[list[int], list[Any]]]:
    """``args.instruments`` multimeters in ``args.simulators`` processes: (ports, processes)."""
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
    try:
        ports: list[int] = []
        for sim in sims:
            ports += sim.start(timeout=60)["dmm"]
        yield ports, sims
    finally:
        for sim in sims:
            sim.stop()


def run_gateway(
    args: argparse.Namespace, workdir: Path, ports: list[int], sims: list[Any]
) -> dict[str, Any]:
    """A real gateway reads every instrument into SQLite (and MQTT unless ``--no-mqtt``)."""
    with ExitStack() as stack:
        mqtt_port = stack.enter_context(mosquitto()) if args.mqtt else None
        counter = _MqttCounter(mqtt_port) if mqtt_port is not None else None
        if counter is not None:
            stack.callback(counter.close)
        config = _config(ports, args.rate, args.loop, mqtt_port, args.commit_interval)
        (workdir / "gateway.toml").write_text(config)
        spool = workdir / "data" / "spool.sqlite"
        readings = workdir / "data" / "readings.sqlite"
        log = stack.enter_context((workdir / "gateway.log").open("ab"))
        cpu = getattr(args, "gateway_cpu", None)
        gateway = subprocess.Popen(
            [sys.executable, "-m", "aiotmc", "gateway", "gateway.toml"],
            cwd=workdir,
            stdout=log,
            stderr=log,
            preexec_fn=None if cpu is None else partial(os.sched_setaffinity, 0, {cpu}),
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
            rig = sorted(os.sched_getaffinity(0))  # the simulators', broker's, harness's
            t0, ticks0 = time.monotonic(), process_ticks(gateway.pid)
            rig0 = [cpu_ticks(cpu) for cpu in rig]
            sim0 = sum(process_ticks(sim.pid) for sim in sims)
            acquired0, stored0 = _one(spool, acquired), _one(readings, stored)
            mqtt0 = counter.count if counter is not None else 0
            samples0 = len(counter.latencies_ms) if counter is not None else 0
            time.sleep(args.duration)
            t1, ticks1 = time.monotonic(), process_ticks(gateway.pid)
            rig1 = [cpu_ticks(cpu) for cpu in rig]
            sim1 = sum(process_ticks(sim.pid) for sim in sims)
            acquired1, stored1 = _one(spool, acquired), _one(readings, stored)
            mqtt1 = counter.count if counter is not None else 0
            latencies = counter.latencies_ms[samples0:] if counter is not None else []
            gateway.send_signal(signal.SIGTERM)
            status = gateway.wait(timeout=60)
        finally:
            if gateway.poll() is None:
                gateway.kill()
                gateway.wait()
    elapsed = t1 - t0
    return {
        "duration": elapsed,
        "acquired_per_s": (acquired1 - acquired0) / elapsed,
        "stored_per_s": (stored1 - stored0) / elapsed,
        "mqtt_per_s": (mqtt1 - mqtt0) / elapsed if counter is not None else None,
        "mqtt_latency_ms": _latency_summary(latencies),
        "gateway_cores": (ticks1 - ticks0) / HZ / elapsed,
        # CPU-seconds per acquired reading: the figure that survives a loaded machine
        "cpu_us_per_reading": (ticks1 - ticks0) / HZ / max(acquired1 - acquired0, 1) * 1e6,
        "simulator_cores": (sim1 - sim0) / HZ / elapsed,
        # busy share of the CPUs the rest of the rig may use (all of them when unpinned)
        "rig_cpus": rig,
        "rig_busy": _busy(rig0, rig1),
        "exit_status": status,
    }


def _busy(before: list[tuple[int, int]], after: list[tuple[int, int]]) -> float | None:
    """Busy fraction of some CPUs between two ``cpu_ticks`` snapshots (None: unknown)."""
    busy = sum(b1 - b0 for (b0, _), (b1, _) in zip(before, after, strict=True))
    total = sum(t1 - t0 for (_, t0), (_, t1) in zip(before, after, strict=True))
    return busy / total if total > 0 else None


def run_script(
    args: argparse.Namespace, workdir: Path, ports: list[int], sims: list[Any]
) -> dict[str, Any]:
    """The pattern users write today against the same instruments for the same time:
    :mod:`benchmarks.gateway_script` (PyVISA ``query`` + ``requests.post`` per reading)
    posting to :mod:`benchmarks.http_counter`."""
    receiver = ChildProcess("http_counter", "benchmarks.http_counter", [], log=workdir / "http.log")
    script = ChildProcess(
        "gateway_script",
        "benchmarks.gateway_script",
        ["--threads", str(args.script_threads), "--http", args.script_http],
        log=workdir / "script.log",
    )
    try:
        url = f"http://{HOST}:{receiver.start(timeout=30)['port']}/readings"
        script.launch()
        setup = {"ports": ports, "url": url, "rate": args.rate}
        script.request(setup, timeout=args.warmup_timeout)
        threads = script.request({"op": "start"}, timeout=30)["threads"]

        def posted() -> int:
            return int(receiver.request({"op": "count"}, timeout=30)["count"])

        deadline = time.monotonic() + args.warmup_timeout
        while posted() < args.instruments:  # every instrument's first round is done
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"the script did not post once per instrument in {args.warmup_timeout:.0f} s"
                )
            time.sleep(0.1)
        t0, posted0 = time.monotonic(), posted()
        ticks0, http0 = process_ticks(script.pid), process_ticks(receiver.pid)
        sim0 = sum(process_ticks(sim.pid) for sim in sims)
        errors0 = script.request({"op": "count"}, timeout=30)["errors"]
        time.sleep(args.duration)
        t1, posted1 = time.monotonic(), posted()
        ticks1, http1 = process_ticks(script.pid), process_ticks(receiver.pid)
        sim1 = sum(process_ticks(sim.pid) for sim in sims)
        errors1 = script.request({"op": "count"}, timeout=30)["errors"]
    finally:
        script.stop()
        receiver.stop()
    elapsed = t1 - t0
    return {
        "duration": elapsed,
        "threads": threads,
        "http": args.script_http,
        "posted_per_s": (posted1 - posted0) / elapsed,
        "errors_per_s": (errors1 - errors0) / elapsed,
        "script_cores": (ticks1 - ticks0) / HZ / elapsed,
        "receiver_cores": (http1 - http0) / HZ / elapsed,
        "simulator_cores": (sim1 - sim0) / HZ / elapsed,
    }


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Start the simulators; the gateway, then (``--compare``) the users' script; the figures."""
    raise_fd_limit()
    load = os.getloadavg()
    with simulators(args, workdir) as (ports, sims):
        gateway = run_gateway(args, workdir, ports, sims)
        script = run_script(args, workdir, ports, sims) if args.compare else None
    figures: dict[str, Any] = {
        "instruments": args.instruments,
        "loop": args.loop,
        "rate": args.rate,
        "mqtt": args.mqtt,
        "offered_per_s": args.instruments * args.rate,
        "simulators": len(sims),
        "load_average": load,
        **gateway,
        "script": script,
    }
    if script is not None:
        per_core = _per_core(gateway["stored_per_s"], gateway["gateway_cores"])
        script_per_core = _per_core(script["posted_per_s"], script["script_cores"])
        figures["ratio"] = {
            "readings_per_s": gateway["stored_per_s"] / max(script["posted_per_s"], 1e-9),
            "readings_per_core_s": per_core / max(script_per_core, 1e-9),
        }
    return figures


def _per_core(rate: float, cores: float) -> float:
    return rate / max(cores, 1e-9)


def _latency_row(latency: dict[str, Any]) -> str:
    if not latency["samples"]:
        return "off"
    return (
        f"answer -> subscriber median {latency['median']:.2f} ms, p99 {latency['p99']:.2f} ms "
        f"({latency['samples']:,} samples; targets {TARGET_MEDIAN_MS:g} ms, {TARGET_P99_MS:g} ms)"
    )


def _rig_row(figures: dict[str, Any]) -> str:
    """How busy the CPUs of the simulators, broker and harness were: near 100 %, they
    and not the gateway limit the rate."""
    busy, cpus = figures.get("rig_busy"), figures.get("rig_cpus", [])
    if busy is None:
        return "unknown"
    shared = "" if figures.get("gateway_cpu") is not None else ", shared with the gateway"
    where = ", ".join(map(str, cpus))
    return (
        f"{busy:.0%} busy (CPU {where}: simulators, broker, harness{shared}; "
        "near 100 %, they limit the rate, not the gateway)"
    )


def report(figures: dict[str, Any]) -> str:
    offered = figures["offered_per_s"]
    cores = figures["gateway_cores"]
    mqtt = figures["mqtt_per_s"]
    rows = [
        ("instruments x rate", f"{figures['instruments']} x {figures['rate']:g}/s"),
        ("event loop", figures["loop"]),
        ("load average", " ".join(f"{x:.2f}" for x in figures["load_average"]) + " (at start)"),
        ("offered", f"{offered:,.0f} readings/s"),
        ("acquired (spool)", f"{figures['acquired_per_s']:,.0f} readings/s"),
        ("stored (SQLite)", f"{figures['stored_per_s']:,.0f} readings/s"),
        ("published (MQTT)", "off" if mqtt is None else f"{mqtt:,.0f} readings/s received"),
        ("MQTT latency", _latency_row(figures["mqtt_latency_ms"])),
        (
            "gateway CPU",
            f"{cores:.2f} cores"
            + (
                ""
                if figures.get("gateway_cpu") is None
                else f" (pinned alone to CPU {figures['gateway_cpu']}: at most one core)"
            ),
        ),
        (
            "CPU per reading",
            f"{figures['cpu_us_per_reading']:.1f} us of gateway CPU per acquired reading "
            f"(x 10,000/s = {figures['cpu_us_per_reading'] / 100:.2f} cores)",
        ),
        (
            "simulator CPU",
            f"{figures['simulator_cores']:.2f} cores in {figures['simulators']} processes",
        ),
        ("rig CPUs", _rig_row(figures)),
        (
            "target",
            f"{TARGET_READINGS:,.0f} readings/s with <= {TARGET_CORES:g} core "
            f"({_per_core(figures['acquired_per_s'], cores):,.0f} "
            "readings per core-second here)",
        ),
    ]
    script = figures.get("script")
    if script is not None:
        ratio = figures["ratio"]
        rows += [
            (
                "users' script",
                f"PyVISA (pyvisa-py) query + requests.post ({script['http']}) per reading, "
                f"{script['threads']} threads",
            ),
            ("  posted (HTTP)", f"{script['posted_per_s']:,.0f} readings/s"),
            ("  errors", f"{script['errors_per_s']:,.0f}/s"),
            ("  script CPU", f"{script['script_cores']:.2f} cores"),
            ("  receiver CPU", f"{script['receiver_cores']:.2f} cores (not counted)"),
            ("  simulator CPU", f"{script['simulator_cores']:.2f} cores"),
            (
                "  per core-second",
                f"{_per_core(script['posted_per_s'], script['script_cores']):,.0f} readings",
            ),
            (
                "gateway / script",
                f"{ratio['readings_per_s']:.1f}x readings/s, "
                f"{ratio['readings_per_core_s']:.1f}x readings per core-second",
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
    parser.add_argument(
        "--no-mqtt",
        dest="mqtt",
        action="store_false",
        help="no [mqtt] section (by default a mosquitto started here gets every reading)",
    )
    parser.add_argument(
        "--no-compare",
        dest="compare",
        action="store_false",
        help="skip the users' script (PyVISA query + requests.post per reading)",
    )
    parser.add_argument(
        "--script-threads", type=int, default=0, help="the script's threads (0: one per instrument)"
    )
    parser.add_argument(
        "--script-http",
        choices=("post", "session"),
        default="post",
        help="requests.post per reading (a new connection each) or one Session per thread",
    )
    parser.add_argument("--workdir", type=Path, help="keep the logs and databases here")
    parser.add_argument(
        "--commit-interval",
        type=float,
        default=None,
        help="[gateway] spool_commit_interval in seconds (default: the gateway's own)",
    )
    parser.add_argument(
        "--gateway-cpu",
        type=int,
        default=None,
        help="pin the gateway to this CPU alone (a hard one-core cap) and everything else"
        " (simulators, broker, this harness) to the other CPUs",
    )
    args = parser.parse_args(argv)
    if args.gateway_cpu is not None:
        others = os.sched_getaffinity(0) - {args.gateway_cpu}
        if not others or args.gateway_cpu not in os.sched_getaffinity(0):
            parser.error("--gateway-cpu needs an allowed CPU and at least one other")
        os.sched_setaffinity(0, others)  # the simulators and the broker inherit it
    if args.loop == "auto":
        args.loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        figures = run(args, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="aiotmc-bench-gateway-") as tmp:
            figures = run(args, Path(tmp))
    figures["gateway_cpu"] = args.gateway_cpu
    print(report(figures))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
