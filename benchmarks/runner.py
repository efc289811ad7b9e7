"""``python -m benchmarks``: start the simulator and one process per client, run every
measurement round-robin (every client once per round, in a new order each round, so drift
hits all alike), print one table and write ``benchmarks/results/latest.json``."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

from .figures import CLIENTS, Measurement, measurements
from .procs import (
    ChildError,
    ChildProcess,
    available_cpus,
    cpu_busy,
    cpu_ticks,
    pin_self,
    raise_fd_limit,
)
from .report import Report, fmt
from .usbbed import UmockdevBed, UmockdevMissing, resource_name, umockdev_problem

RESULTS = Path(__file__).resolve().parent / "results"
_START_TIMEOUT = 120.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="aiotmc side by side with PyVISA + pyvisa-py and the plain-socket floor.",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, one round (seconds)")
    parser.add_argument(
        "--output", type=Path, default=RESULTS / "latest.json", help="JSON results file"
    )
    parser.add_argument(
        "--cpu",
        type=int,
        default=None,
        help="CPU for the simulator and every client (default: the first one allowed)",
    )
    parser.add_argument("--no-pin", action="store_true", help="let the OS place processes")
    parser.add_argument(
        "--only", default="", help="comma-separated substrings of measurement keys to run"
    )
    parser.add_argument(
        "--clients", default="", help=f"comma-separated subset of: {', '.join(CLIENTS)}"
    )
    parser.add_argument("--rounds", type=int, default=None, help="override rounds per figure")
    parser.add_argument(
        "--fresh",
        choices=["figure", "run"],
        default=None,
        help="new client processes for every figure (default) or once per run (--quick)",
    )
    return parser


def _machine() -> dict[str, Any]:
    cpu_model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    os_name = platform.platform()
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = f"{line.split('=', 1)[1].strip(chr(34))} ({platform.release()})"
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": os_name,
    }


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _log(start: float, text: str) -> None:
    print(f"[{time.monotonic() - start:6.1f}s] {text}", file=sys.stderr, flush=True)


def _select(args: argparse.Namespace) -> tuple[list[Measurement], list[str]]:
    selected = measurements("quick" if args.quick else "full")
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        selected = [m for m in selected if any(w in m.key for w in wanted)]
    clients = list(CLIENTS)
    if args.clients:
        chosen = {c.strip() for c in args.clients.split(",")}
        unknown = chosen - set(CLIENTS)
        if unknown:
            raise SystemExit(f"unknown clients: {', '.join(sorted(unknown))}")
        clients = [c for c in CLIENTS if c in chosen]
    if args.rounds is not None:
        selected = [
            Measurement(**{**m.__dict__, "rounds": args.rounds if m.rounds else 0})
            for m in selected
        ]
    return selected, clients


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; returns the exit status (0 unless the harness itself failed)."""
    args = _parser().parse_args(argv)
    start = time.monotonic()
    # SIGTERM unwinds like Ctrl-C, so the finally clause below stops every child.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    selected, clients = _select(args)
    cpus = available_cpus()
    busy = cpu_busy(0.3 if args.quick else 1.0)
    cpu = None
    if not args.no_pin:
        # Default: the CPU least used by other work right now (colleagues' test runs...).
        cpu = args.cpu if args.cpu is not None else min(cpus, key=lambda c: busy.get(c, 0.0))
    load = {str(c): round(busy.get(c, 0.0), 3) for c in cpus}
    if cpu is not None and busy.get(cpu, 0.0) > 0.1:
        _log(start, f"WARNING: CPU {cpu} was {busy[cpu]:.0%} busy before the run: noisy figures")
    # The harness itself only wakes between trials; keep it off the measured CPU.
    others = [c for c in cpus if c != cpu]
    if cpu is not None and others:
        pin_self(others[0])
    raise_fd_limit()
    fresh_per_figure = (args.fresh or ("run" if args.quick else "figure")) == "figure"
    logs = args.output.parent / "logs"
    pin_args = [] if cpu is None else ["--cpu", str(cpu)]
    max_dmm = max((m.params.get("instruments", 0) for m in selected), default=0)

    report = Report(selected, clients)
    meta: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(
            ["python -m benchmarks", *(argv if argv is not None else sys.argv[1:])]
        ),
        "machine": _machine(),
        "pinned_cpu": cpu,
        "fresh_processes": "per figure" if fresh_per_figure else "per run",
        "cpu_busy_before": load,
        "loadavg_before": _loadavg(),
        "clients": {},
    }
    sim = ChildProcess(
        "simulator",
        "benchmarks.simserver",
        ["--dmm", str(max_dmm), *pin_args],
        log=logs / "simserver.log",
    )
    responder = ChildProcess(
        "responder", "benchmarks.responder", pin_args, log=logs / "responder.log"
    )
    workers: dict[str, ChildProcess] = {}
    ticks0 = cpu_ticks(cpu) if cpu is not None else (0, 0)
    children0 = _children_cpu()
    try:
        ports = sim.start(timeout=_START_TIMEOUT)
        meta["simulator"] = {"backend": ports.get("backend"), "pinned": ports.get("pinned")}
        _log(start, f"simulator up ({ports.get('backend')}, {max_dmm} fan-out instruments)")
        answering = responder.start(timeout=_START_TIMEOUT)
        meta["responder"] = {"pinned": answering.get("pinned")}
        params_base = {
            "scope": ports["scope"],
            "dmm": ports["dmm"],
            "responder": answering["port"],
        }
        for m in selected:
            if m.na:
                continue
            if m.bed == "umockdev":
                _run_umockdev(m, clients, report, meta, start, pin_args, cpu, logs)
                continue
            # Fresh client processes for every figure (full runs): no allocator or loop state
            # carried over (a heap grown by 1000 connections made later 100 MB buffers look
            # free). Quick runs keep one process per client for the whole run.
            members = [c for c in m.clients if c in clients and c not in workers]
            _start_workers(m, members, workers, report, meta, start, pin_args, logs)
            try:
                _run_measurement(m, clients, workers, report, params_base, start)
            finally:
                if fresh_per_figure:
                    _stop_workers(workers)
            for child in (sim, responder):
                if not child.alive:
                    raise ChildError(f"the {child.name} died; see {child.log_path}")
    finally:
        _stop_workers(workers)
        sim.stop()
        responder.stop()
    if cpu is not None:
        meta["foreign_load"] = _foreign_load(cpu, ticks0, _children_cpu() - children0)

    meta["duration_s"] = round(time.monotonic() - start, 1)
    meta["loadavg_after"] = _loadavg()
    table = report.table()
    print(table)
    foreign = meta.get("foreign_load")
    if foreign is not None and foreign > 0.05:
        print(
            f"\nWARNING: other processes used {foreign:.0%} of CPU {cpu} during the run;"
            " the figures are noisy (see foreign_load in the JSON)."
        )
    report.write_json(args.output, meta)
    print(f"\nJSON: {args.output}  ({meta['duration_s']} s)")
    return 0


def _children_cpu() -> float:
    """CPU seconds used by every child reaped so far (all our children share one CPU)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return 0.0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _foreign_load(cpu: int, ticks0: tuple[int, int], ours: float) -> float:
    """Share of ``cpu`` used by processes other than ours since ``ticks0``."""
    busy1, total1 = cpu_ticks(cpu)
    elapsed = total1 - ticks0[1]
    if elapsed <= 0:
        return 0.0
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    return round(max(0.0, (busy1 - ticks0[0] - ours * hz) / elapsed), 3)


def _start_workers(
    m: Measurement,
    names: list[str],
    workers: dict[str, ChildProcess],
    report: Report,
    meta: dict[str, Any],
    start: float,
    pin_args: list[str],
    logs: Path,
) -> None:
    """Launch one fresh process per client (in parallel), then wait for each to be ready."""
    for name in names:
        workers[name] = ChildProcess(
            name, "benchmarks.worker", [name, *pin_args], log=logs / f"{name}.log"
        )
        workers[name].launch()
    for name in names:
        _start_worker(m, workers, name, report, meta, start, launched=True)


def _run_umockdev(
    m: Measurement,
    clients: list[str],
    report: Report,
    meta: dict[str, Any],
    start: float,
    pin_args: list[str],
    cpu: int | None,
    logs: Path,
) -> None:
    """Run ``m`` against a umockdev-emulated scope: a device process of its own and client
    processes of their own (the preload library must be there from process start), all
    stopped, and the testbed removed, before returning."""
    members = [c for c in m.clients if c in clients]

    def not_installed(problem: str) -> None:
        _log(start, f"{m.key}: umockdev not installed: {problem}")
        for client in members:
            report.fail_client(client, "umockdev not installed", m)
        meta["umockdev"] = {"available": False, "problem": problem}

    problem = umockdev_problem()
    if problem is not None:
        not_installed(problem)
        return
    bed = UmockdevBed(log=logs / "umockdev-device.log", cpu=cpu)
    workers: dict[str, ChildProcess] = {}
    try:
        try:
            info = bed.start(timeout=_START_TIMEOUT)
        except UmockdevMissing as exc:
            not_installed(str(exc))
            return
        except (RuntimeError, OSError, ValueError) as exc:
            _log(start, f"{m.key}: {exc}")
            for client in members:
                report.fail_client(client, f"umockdev device process failed: {exc}", m)
            return
        device = info["devices"][0]
        meta["umockdev"] = {
            "available": True,
            "device": device,
            "device_pid": info.get("pid"),
            "testbed": bed.root,
            "pinned_cpu": cpu,
        }
        _log(start, f"umockdev device process up (testbed {bed.root})")
        env = bed.client_env()
        for name in members:
            workers[name] = ChildProcess(
                name,
                "benchmarks.worker",
                [name, *pin_args],
                log=logs / f"{name}-umockdev.log",
                env=env,
            )
            workers[name].launch()
        for name in members:
            _start_worker(m, workers, name, report, meta, start, launched=True)
        params_base = {"usb_resource": resource_name(device)}
        _run_measurement(m, clients, workers, report, params_base, start, bed=bed)
        if not bed.alive:
            _log(start, f"{m.key}: the umockdev device process died; see {bed.log_path}")
    finally:
        _stop_workers(workers)
        bed.stop()


def _stop_workers(workers: dict[str, ChildProcess]) -> None:
    for worker in workers.values():
        worker.close_stdin()  # all exit in parallel
    for worker in workers.values():
        worker.stop()
    workers.clear()


def _start_worker(
    m: Measurement,
    workers: dict[str, ChildProcess],
    name: str,
    report: Report,
    meta: dict[str, Any],
    start: float,
    *,
    launched: bool = False,
) -> bool:
    worker = workers[name]
    try:
        hello = (
            worker.receive(timeout=_START_TIMEOUT)
            if launched
            else worker.start(timeout=_START_TIMEOUT)
        )
    except ChildError as exc:
        hello = {"ready": False, "na": str(exc)}
    if not hello.get("ready"):
        reason = str(hello.get("na", "did not start"))
        _log(start, f"{name}: not available: {reason}")
        report.fail_client(name, reason, m)
        worker.stop()
        del workers[name]
        return False
    meta["clients"].setdefault(name, {k: hello.get(k) for k in ("versions", "pinned", "python")})
    return True


def _run_measurement(
    m: Measurement,
    clients: list[str],
    workers: dict[str, ChildProcess],
    report: Report,
    params_base: dict[str, Any],
    start: float,
    *,
    bed: UmockdevBed | None = None,
) -> None:
    members = [c for c in m.clients if c in clients]
    params = {**m.params, **params_base}
    if m.server in params_base:  # the umockdev bed has no TCP servers
        params["scope"] = params_base[m.server]
    skip: set[str] = set()
    for r in range(m.rounds):
        # A fresh (seeded, reproducible) order each round: drift, and after-effects of
        # the previous client (freed memory returned to the host, a busy simulator), are
        # spread over all clients instead of always hitting the same one.
        order = list(members)
        random.Random(f"{m.key}/{r}").shuffle(order)
        for client in order:
            worker = workers.get(client)
            if worker is None or client in skip:
                continue
            try:
                answer = worker.request({"kind": m.kind, "params": params}, timeout=m.timeout)
            except ChildError as exc:
                answer = {"ok": False, "error": str(exc)}
                worker.kill()  # then a fresh process for the next measurements
                if bed is None or bed.alive:
                    _start_worker(m, workers, client, report, {"clients": {}}, start)
            report.add(m, client, answer)
            if answer.get("ok"):
                shown = ", ".join(f"{k}={fmt(v)}" for k, v in answer["metrics"].items())
            else:
                skip.add(client)  # n/a or broken: no point in further rounds
                shown = str(answer.get("na") or answer.get("error"))
            _log(start, f"{m.key} round {r + 1}/{m.rounds} {client}: {shown}")
