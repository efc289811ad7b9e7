"""``python -m benchmarks.pyvisa_backend``: blocking clients side by side on one server.

PyVISA + pyvisa-py (``@py``), PyVISA on aiotmc (``@aiotmc``) and :mod:`aiotmc.sync`, all
written as users write them (``open_resource(..., read_termination="\\n")``, ``query``,
``query_binary_values``), plus ``aiotmc.sync via loop`` (every call a hop to the event
loop's thread, as before the calling-thread fast path, for comparison), against the
simulator process of the main harness (``benchmarks.simserver``: one zero-latency
scope). Rounds alternate the clients so drift hits all alike; each figure is the median
over rounds of per-round medians. Prints a Markdown table with the ratios to pyvisa-py.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .figures import BLOCK_QUERY, IDN, MB, pattern_ok, resource
from .procs import ChildProcess

__all__ = ["main"]

CLIENTS = ("pyvisa-py", "pyvisa @aiotmc", "aiotmc.sync", "aiotmc.sync via loop")
_TIMEOUT_MS = 60_000


@contextmanager
def _client(name: str, port: int) -> Iterator[Any]:
    """An open instrument of client ``name`` with ``query`` and ``query_binary_values``."""
    if name.startswith("aiotmc.sync"):
        import aiotmc.sync

        with aiotmc.sync.open(resource(port), timeout=60, max_message_size=2**31) as inst:
            yield inst if name == "aiotmc.sync" else _ViaLoop(inst)
        return
    import pyvisa

    rm = pyvisa.ResourceManager("@py" if name == "pyvisa-py" else "@aiotmc")
    inst = rm.open_resource(
        resource(port), read_termination="\n", write_termination="\n", timeout=_TIMEOUT_MS
    )
    try:
        yield inst
    finally:
        inst.close()


class _ViaLoop:
    """An aiotmc.sync instrument whose calls all hop to the event loop's thread."""

    def __init__(self, inst: Any) -> None:
        self._inst = inst

    def query(self, command: str) -> str:
        return str(self._inst._run(self._inst.instrument.query, command))

    def query_binary_values(self, command: str, **kwargs: Any) -> Any:
        return self._inst.query_binary_values(command, **kwargs)  # already one hop


def _rtt(inst: Any, queries: int) -> float:
    for _ in range(queries // 10):  # warm-up
        inst.query(IDN)
    samples = []
    clock = time.perf_counter
    for _ in range(queries):
        t0 = clock()
        inst.query(IDN)
        samples.append(clock() - t0)
    return statistics.median(samples) * 1e6


def _block(inst: Any, size: int, reps: int) -> float:
    import numpy

    command = BLOCK_QUERY.format(size=size)

    def read() -> Any:
        return inst.query_binary_values(command, datatype="B", container=numpy.ndarray)

    if not pattern_ok(bytes(read()), size):
        raise RuntimeError("block payload does not match the test pattern")
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        read()
        times.append(time.perf_counter() - t0)
    return size / MB / statistics.median(times)


def measure(port: int, *, queries: int, size: int, reps: int, rounds: int) -> dict[str, Any]:
    """``{client: {"rtt_us": ..., "block_mb_s": ...}}``, medians over ``rounds``."""
    per: dict[str, dict[str, list[float]]] = {c: {"rtt_us": [], "block_mb_s": []} for c in CLIENTS}
    for round_ in range(rounds):
        order = CLIENTS[round_ % len(CLIENTS) :] + CLIENTS[: round_ % len(CLIENTS)]
        for name in order:
            with _client(name, port) as inst:
                per[name]["rtt_us"].append(_rtt(inst, queries))
                if size:
                    per[name]["block_mb_s"].append(_block(inst, size, reps))
    return {
        name: {k: statistics.median(v) for k, v in figures.items() if v}
        for name, figures in per.items()
    }


def table(results: dict[str, Any], size: int) -> str:
    """The Markdown table: each client's figures and its ratio to pyvisa-py's."""
    base = results["pyvisa-py"]
    what = f"{size // MB} MB" if size >= MB else f"{size} B"
    lines = [
        "| client | `*IDN?` round trip (µs) | x pyvisa-py | "
        f"{what} `query_binary_values` (MB/s) | x pyvisa-py |",
        "|---|---|---|---|---|",
    ]
    for name in CLIENTS:
        r = results[name]
        rtt = f"{r['rtt_us']:.1f} | {r['rtt_us'] / base['rtt_us']:.2f}x"
        if "block_mb_s" in r:
            blk = f"{r['block_mb_s']:.1f} | {r['block_mb_s'] / base['block_mb_s']:.1f}x"
        else:
            blk = "- | -"
        lines.append(f"| {name} | {rtt} | {blk} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Start the simulator, measure, print the table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pyvisa_backend")
    parser.add_argument("--queries", type=int, default=3000, help="round trips per trial")
    parser.add_argument("--size", type=int, default=100 * MB, help="block bytes (0: none)")
    parser.add_argument("--reps", type=int, default=3, help="block reads per trial")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over the clients")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as logs:
        sim = ChildProcess("simulator", "benchmarks.simserver", [], log=Path(logs) / "sim.log")
        ready = sim.start(timeout=60)
        try:
            results = measure(
                ready["scope"],
                queries=args.queries,
                size=args.size,
                reps=args.reps,
                rounds=args.rounds,
            )
        finally:
            sim.stop()
    print(table(results, args.size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
