"""Client instructions per query, counted by callgrind: ``python -m benchmarks.instructions``.

The timed figures of ``python -m benchmarks`` move by 10-20 % between runs on a shared
VM, which is as large as the differences being looked for. This counts, instead, the
user-space instructions a client executes per ``*IDN?``: each client runs in its own
process under ``valgrind --tool=callgrind`` against the same server, and the count of
the measured loop alone is taken between two dumps (``--dump-before`` on
``os.getppid``, which the client calls just before and just after the loop; warm-up and
start-up fall into the first dump). The same code and inputs give the same count to
within a fraction of a percent, whatever else the machine is doing.

What it does not count: the kernel (each client makes the same socket calls per query),
and time spent waiting. Under callgrind a client runs ~50x slower, so the server's
answer is always there when the client looks: every client takes its no-wait path, the
one it takes under load in the timed figures too.

Workloads: ``rtt`` (one caller, queries back to back) and ``concurrent`` (``--tasks``
tasks, or for PyVISA threads sharing one lock as in the timed ``pyvisa-best``, on one
instrument). The floor (a blocking socket, no library) is sequential in both.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .figures import IDN, resource
from .procs import ChildProcess

CLIENTS = ("aiotmc-asyncio", "aiotmc-trio", "aiotmc-uvloop", "pyvisa", "floor")
WORKLOADS = ("rtt", "concurrent")
_ROOT = Path(__file__).resolve().parent.parent
_SUMMARY = re.compile(rb"^summary:\s*(\d+)", re.MULTILINE)
_START_TIMEOUT = 30.0
_RUN_TIMEOUT = 600.0


# -- the client side (runs under callgrind) ------------------------------------------------


def _mark() -> None:
    """Callgrind dumps its counters (and starts again from zero) when this is called."""
    os.getppid()


def _run_aiotmc(backend: str, workload: str, port: int, queries: int, tasks: int) -> None:
    import anyio

    import aiotmc

    options: dict[str, Any] = {}
    if backend == "uvloop":
        backend, options = "asyncio", {"use_uvloop": True}

    async def main() -> None:
        async with aiotmc.open(resource(port)) as inst:

            async def run(count: int) -> None:
                for _ in range(count):
                    await inst.query(IDN)

            async def everyone(per_task: int) -> None:
                async with anyio.create_task_group() as tg:
                    for _ in range(tasks):
                        tg.start_soon(run, per_task)

            if workload == "rtt":
                await run(max(1, queries // 10))
                _mark()
                await run(queries)
            else:
                await everyone(max(1, queries // tasks // 10))
                _mark()
                await everyone(queries // tasks)
            _mark()

    anyio.run(main, backend=backend, backend_options=options)


def _run_pyvisa(workload: str, port: int, queries: int, tasks: int) -> None:
    import pyvisa

    rm = pyvisa.ResourceManager("@py")
    inst = rm.open_resource(resource(port), read_termination="\n", write_termination="\n")
    lock = threading.Lock()

    def run(count: int) -> None:
        for _ in range(count):
            inst.query(IDN)

    def run_locked(count: int) -> None:  # the timed harness's pyvisa-best
        for _ in range(count):
            with lock:
                inst.query(IDN)

    try:
        if workload == "rtt":
            run(max(1, queries // 10))
            _mark()
            run(queries)
        else:
            with ThreadPoolExecutor(max_workers=tasks) as pool:
                list(pool.map(run_locked, [max(1, queries // tasks // 10)] * tasks))
                _mark()
                list(pool.map(run_locked, [queries // tasks] * tasks))
        _mark()
    finally:
        inst.close()
        rm.close()


def _run_floor(port: int, queries: int) -> None:
    import socket

    from .client_floor import _connect, _query

    sock = _connect(port)
    buffer = bytearray(64 * 1024)
    message = (IDN + "\n").encode()
    try:
        for _ in range(max(1, queries // 10)):
            _query(sock, message, buffer)
        _mark()
        for _ in range(queries):
            _query(sock, message, buffer)
        _mark()
    finally:
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()


def run_client(client: str, workload: str, port: int, queries: int, tasks: int) -> None:
    """The measured program: warm up, mark, ``queries`` queries, mark."""
    if client.startswith("aiotmc-"):
        _run_aiotmc(client.removeprefix("aiotmc-"), workload, port, queries, tasks)
    elif client == "pyvisa":
        _run_pyvisa(workload, port, queries, tasks)
    elif client == "floor":
        _run_floor(port, queries)
    else:
        raise ValueError(f"unknown client {client!r}")


# -- the orchestrator ----------------------------------------------------------------------


def count(client: str, workload: str, port: int, queries: int, tasks: int, out_dir: Path) -> int:
    """Run ``client`` under callgrind; its user-space instructions in the measured loop."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise RuntimeError("valgrind is not installed (Debian: apt install valgrind)")
    stem = out_dir / f"{client}-{workload}"
    command = [
        valgrind,
        "--tool=callgrind",
        "--dump-before=os_getppid*",
        f"--callgrind-out-file={stem}.%p",
        sys.executable,
        "-m",
        "benchmarks.instructions",
        "--child",
        client,
        "--workload",
        workload,
        "--port",
        str(port),
        "--queries",
        str(queries),
        "--tasks",
        str(tasks),
    ]
    env = dict(os.environ, PYTHONPATH=str(_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run(
        command, cwd=_ROOT, env=env, capture_output=True, timeout=_RUN_TIMEOUT, check=False
    )
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace")[-2000:]
        raise RuntimeError(f"{client} {workload} failed ({done.returncode}):\n{tail}")
    dumps = sorted(stem.parent.glob(f"{stem.name}.*.2"))
    if len(dumps) != 1:
        raise RuntimeError(f"{client} {workload}: expected one measured dump, found {dumps}")
    found = _SUMMARY.search(dumps[0].read_bytes())
    if found is None:
        raise RuntimeError(f"{dumps[0]}: no summary line")
    return int(found.group(1))


def _server(kind: str, log_dir: Path) -> tuple[ChildProcess, int]:
    if kind == "sim":
        child = ChildProcess("simulator", "benchmarks.simserver", [], log=log_dir / "sim.log")
        return child, int(child.start(timeout=_START_TIMEOUT)["scope"])
    child = ChildProcess("responder", "benchmarks.responder", [], log=log_dir / "resp.log")
    return child, int(child.start(timeout=_START_TIMEOUT)["port"])


def measure(
    clients: list[str], workloads: list[str], server: str, queries: int, tasks: int
) -> dict[str, dict[str, float]]:
    """Instructions per query, by workload then client."""
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="aiotmc-instr-") as tmp:
        child, port = _server(server, Path(tmp))
        try:
            for workload in workloads:
                row = results.setdefault(workload, {})
                for client in clients:
                    total = count(client, workload, port, queries, tasks, Path(tmp))
                    row[client] = total / queries
                    print(f"{workload:10} {client:15} {total / queries:12,.0f} instr/query")
        finally:
            child.stop()
    return results


def table(results: dict[str, dict[str, float]], server: str, tasks: int) -> str:
    """A Markdown table: thousands of instructions per query, ratios to PyVISA and floor."""
    clients = list(next(iter(results.values())))
    lines = [
        f"Client user-space instructions per `*IDN?` (thousands), against the {server}:",
        "",
        "| workload | " + " | ".join(clients) + " | / PyVISA | / floor |",
        "|---" * (len(clients) + 3) + "|",
    ]
    for workload, row in results.items():
        label = "one caller" if workload == "rtt" else f"{tasks} tasks, one instrument"
        cells = [f"{row[c] / 1000:.1f}" for c in clients]
        ours = [c for c in clients if c.startswith("aiotmc-")]
        short = {c: c.removeprefix("aiotmc-")[0] for c in ours}
        ratios = []
        for base in ("pyvisa", "floor"):
            if base in row:
                ratios.append(" ".join(f"{short[c]} {row[c] / row[base]:.2f}" for c in ours))
            else:
                ratios.append("-")
        lines.append(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point: the table, or (``--child``) one measured client."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions")
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--server", choices=["sim", "responder"], default="sim")
    parser.add_argument("--queries", type=int, default=2000, help="measured queries per run")
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.queries < args.tasks or args.queries % args.tasks:
        parser.error("--queries must be a multiple of --tasks")
    if args.child:
        run_client(args.child, args.workload, args.port, args.queries, args.tasks)
        return 0
    clients = [c for c in args.clients.split(",") if c]
    workloads = [w for w in args.workloads.split(",") if w]
    unknown = sorted(set(clients) - set(CLIENTS)) + sorted(set(workloads) - set(WORKLOADS))
    if unknown:
        parser.error(f"unknown: {', '.join(unknown)}")
    results = measure(clients, workloads, args.server, args.queries, args.tasks)
    print()
    print(table(results, "simulator" if args.server == "sim" else "responder", args.tasks))
    if args.json:
        args.json.write_text(json.dumps({"server": args.server, "per_query": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
