"""What the LAN-protocol benchmarks (``benchmarks.vxi11``, ``benchmarks.hislip``) share:
the simulator process they talk to, the timed query loops (aiotmc and PyVISA +
pyvisa-py), the alternated rounds and the verdict words."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import random
import subprocess
import sys
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

from .common import median, time_calls
from .figures import IDN

__all__ = [
    "Figure",
    "SimulatorProcess",
    "alternate",
    "pyvisa_rtt",
    "serve_main",
    "verdict",
]

Figure = tuple[float, float]  #: median µs per query, client CPU µs per query


def serve_main(
    serve: Callable[[Callable[[dict[str, Any]], None]], Coroutine[Any, Any, None]],
) -> int:
    """Run ``serve(announce)`` as the simulator process: ``announce`` prints the ports as
    one JSON line; uvloop when installed, as the main harness's simulator."""
    import anyio

    def announce(ports: dict[str, Any]) -> None:
        print(json.dumps(ports), flush=True)

    options = {"use_uvloop": True} if importlib.util.find_spec("uvloop") else {}
    anyio.run(serve, announce, backend_options=options)
    return 0


class SimulatorProcess:
    """``python -m <module> --serve [--cpu N]`` as a context manager: :attr:`ports` after
    entering (the JSON line it announced); it stops when its stdin closes."""

    def __init__(self, module: str, cpu: int | None = None) -> None:
        self.module = module
        self.cpu = cpu
        self.ports: dict[str, Any] = {}

    def __enter__(self) -> SimulatorProcess:
        pin = [] if self.cpu is None else ["--cpu", str(self.cpu)]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module, "--serve", *pin],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.kill()
            raise RuntimeError("the simulator did not start")
        self.ports = json.loads(line)
        return self

    def cpu_seconds(self) -> float:
        """The simulator's CPU time so far (user + system; nan where /proc is missing)."""
        try:
            with open(f"/proc/{self.proc.pid}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return math.nan
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def __exit__(self, *exc: object) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def pyvisa_rtt(resource: str, queries: int, warmup: int) -> Figure:
    """The same with PyVISA + pyvisa-py (``@py``) on ``resource``."""
    import pyvisa

    rm = pyvisa.ResourceManager("@py")
    try:
        inst: Any = rm.open_resource(resource)
        try:
            return time_calls(partial(inst.query, IDN), queries, warmup)
        finally:
            inst.close()
    finally:
        rm.close()


def alternate(trials: dict[str, Callable[[], Any]], rounds: int) -> dict[str, Any]:
    """Run every trial once per round, in a new (seeded) order each round; the medians
    (of each element when a trial returns a tuple)."""
    samples: dict[str, list[Any]] = {name: [] for name in trials}
    for r in range(rounds):
        order = list(trials)
        random.Random(r).shuffle(order)
        for name in order:
            samples[name].append(trials[name]())
    out: dict[str, Any] = {}
    for name, values in samples.items():
        if isinstance(values[0], tuple):
            out[name] = tuple(median(list(column)) for column in zip(*values, strict=True))
        else:
            out[name] = median(values)
    return out


def verdict(ok: bool) -> str:
    """How a target reads in the printed figures."""
    return "met" if ok else "MISSED"
