"""``aiotmc demo``: a tour driving simulated instruments concurrently, then sequentially."""

from __future__ import annotations

import argparse
import functools
import math
import statistics
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._version import __version__
from ..resources import ResourceName, TcpipSocket
from ._catalog import sim_device
from ._runtime import Options, open_instrument, run_async

if TYPE_CHECKING:
    from ..instrument import Instrument

DEMO_ROUNDS = 20


def cmd_demo(args: argparse.Namespace, options: Options) -> int:
    return run_async(options, lambda: _demo(options))


@asynccontextmanager
async def open_all(
    resources: dict[str, ResourceName], options: Options
) -> AsyncIterator[dict[str, Instrument]]:
    """Open several instruments concurrently; all are closed when the block exits.

    Each instrument lives in its own task (the nursery pattern): the task opens it, reports
    it, then holds it open until the block is done, so every context manager is entered and
    exited by the same task. If one fails to open, the others are closed and the error
    propagates.
    """
    import anyio

    opened: dict[str, Instrument] = {}
    all_open = anyio.Event()
    release = anyio.Event()

    async def hold(name: str, resource: ResourceName) -> None:
        async with open_instrument(resource, options) as inst:
            opened[name] = inst
            if len(opened) == len(resources):
                all_open.set()
            await release.wait()

    async with anyio.create_task_group() as tg:
        for name, resource in resources.items():
            tg.start_soon(hold, name, resource)
        await all_open.wait()
        try:
            yield opened
        finally:
            release.set()


@dataclass
class _Acquisition:
    """What the demo measured, per instrument."""

    dmm_volts: list[float] = field(default_factory=list)
    psu_volts: list[float] = field(default_factory=list)
    psu_amps: list[float] = field(default_factory=list)
    wavegen_hz: list[tuple[float, float]] = field(default_factory=list)  # (set, read back)
    scope_sizes: list[int] = field(default_factory=list)
    exchanges: int = 0


Step = Callable[["Instrument", _Acquisition, int], Coroutine[Any, Any, None]]


async def _dmm_step(inst: Instrument, acq: _Acquisition, _round: int) -> None:
    acq.dmm_volts.append(float(await inst.query("READ?")))
    acq.exchanges += 1


async def _psu_step(inst: Instrument, acq: _Acquisition, _round: int) -> None:
    acq.psu_volts.append(float(await inst.query("MEAS:VOLT?")))
    acq.psu_amps.append(float(await inst.query("MEAS:CURR?")))
    acq.exchanges += 2


async def _wavegen_step(inst: Instrument, acq: _Acquisition, round_: int) -> None:
    frequency = 1000.0 * (round_ + 1)  # a sweep: 1 kHz, 2 kHz, ...
    await inst.write(f"FREQ {frequency:g}")
    acq.wavegen_hz.append((frequency, float(await inst.query("FREQ?"))))
    acq.exchanges += 2


async def _scope_step(inst: Instrument, acq: _Acquisition, _round: int) -> None:
    await inst.write(":SINGle")  # arm a single acquisition
    await inst.query("*OPC?")  # answers once the acquisition is complete
    acq.scope_sizes.append(len(await inst.query_block(":WAVeform:DATA?")))
    acq.exchanges += 3


DEMO_STEPS: dict[str, tuple[str, Step]] = {
    "dmm": ("READ?", _dmm_step),
    "psu": ("MEAS:VOLT?, MEAS:CURR?", _psu_step),
    "wavegen": ("FREQ <f>, FREQ?", _wavegen_step),
    "scope": (":SINGle, *OPC?, :WAVeform:DATA?", _scope_step),
}
DEMO_SETUP: dict[str, tuple[str, ...]] = {
    "psu": ("VOLT 5", "CURR 0.5", "OUTP ON"),
    "wavegen": ("FUNC SIN", "VOLT 1", "OUTP ON"),
    "scope": (":TRIGger:SOURce IMMediate", ":ACQuire:POINts 10000"),
}
DEMO_DEVICES: dict[str, tuple[dict[str, float], str]] = {
    # Simulated instrument timing, so that the comparison means something.
    "dmm": ({"measurement_time": 0.02}, "20 ms per reading"),
    "psu": ({"latency": 0.005}, "5 ms per answer"),
    "wavegen": ({"latency": 0.002}, "2 ms per answer"),
    "scope": ({"acquisition_time": 0.03}, "30 ms per acquisition"),
}


async def _acquire(
    insts: dict[str, Instrument], rounds: int, *, concurrent: bool
) -> tuple[_Acquisition, float]:
    import anyio

    acq = _Acquisition()
    start = time.perf_counter()
    for round_ in range(rounds):
        if concurrent:
            # One round = every instrument at once; the round ends when the slowest is done.
            async with anyio.create_task_group() as tg:
                for name, (_, step) in DEMO_STEPS.items():
                    tg.start_soon(step, insts[name], acq, round_)
        else:
            for name, (_, step) in DEMO_STEPS.items():
                await step(insts[name], acq, round_)
    return acq, time.perf_counter() - start


def _stats(values: Sequence[float], unit: str) -> str:
    mean = statistics.fmean(values)
    spread = statistics.pstdev(values) if len(values) > 1 else 0.0
    return f"mean {mean:.6f} {unit} (sd {spread:.1e}, min {min(values):.6f}, max {max(values):.6f})"


async def _demo(options: Options) -> int:
    import anyio

    from ..sim.server import serve_many

    out = functools.partial(print, flush=True)
    models = list(DEMO_STEPS)
    out(f"aiotmc {__version__} demo ({options.backend} backend)")
    out(f"1. start {len(models)} simulated instruments, each on its own TCP port on 127.0.0.1")
    out("   (" + ", ".join(f"{m} {DEMO_DEVICES[m][1]}" for m in models) + ")")
    devices = [sim_device(m, **DEMO_DEVICES[m][0]) for m in models]
    async with serve_many(devices, host="127.0.0.1") as servers:
        resources: dict[str, ResourceName] = {
            model: TcpipSocket(host="127.0.0.1", port=server.port)
            for model, server in zip(models, servers, strict=True)
        }
        out("2. open and identify them all concurrently (*IDN?)")
        start = time.perf_counter()
        async with open_all(resources, options) as insts:
            identities: dict[str, str] = {}

            async def identify(name: str) -> None:
                identities[name] = await insts[name].query("*IDN?")

            async with anyio.create_task_group() as tg:
                for name in models:
                    tg.start_soon(identify, name)
            took = time.perf_counter() - start
            for name in models:
                out(f"   {name:<8} {resources[name]!s:<34} {identities[name]}")
            out(f"   opened and identified in {took * 1e3:.1f} ms")

            for name, commands in DEMO_SETUP.items():
                for cmd in commands:
                    await insts[name].write(cmd)

            out(
                f"3. acquire {DEMO_ROUNDS} rounds; in each round all {len(models)} "
                "instruments are read concurrently:"
            )
            for name, (summary, _) in DEMO_STEPS.items():
                out(f"   {name:<8} {summary}")
            acq, concurrent = await _acquire(insts, DEMO_ROUNDS, concurrent=True)
            out("4. the same rounds again, one instrument after the other (for comparison)")
            _, sequential = await _acquire(insts, DEMO_ROUNDS, concurrent=False)

            errors = {name: await inst.errors() for name, inst in insts.items()}

    readback_ok = all(math.isclose(a, b, rel_tol=1e-6) for a, b in acq.wavegen_hz)
    total_bytes = sum(acq.scope_sizes)
    out("results")
    out(f"   dmm      {len(acq.dmm_volts)} readings: {_stats(acq.dmm_volts, 'V')}")
    out(
        f"   psu      {len(acq.psu_volts)} x2 readings: {_stats(acq.psu_volts, 'V')}, "
        f"mean {statistics.fmean(acq.psu_amps):.4f} A"
    )
    low, high = acq.wavegen_hz[0][0], acq.wavegen_hz[-1][0]
    out(
        f"   wavegen  swept {low:g}..{high:g} Hz, "
        f"read back {'matches' if readback_ok else 'DIFFERS'}"
    )
    out(
        f"   scope    {len(acq.scope_sizes)} waveforms, "
        f"{total_bytes / len(acq.scope_sizes):.0f} bytes each ({total_bytes / 1e3:.1f} kB)"
    )
    for name, found in errors.items():
        for error in found:
            out(f"   {name:<8} reported error {error.code}, {error.message}")
    out("timing")
    per_round = 1e3 / DEMO_ROUNDS
    out(
        f"   concurrent  {concurrent:6.3f} s  ({concurrent * per_round:.1f} ms per round, "
        f"{acq.exchanges} exchanges)"
    )
    out(f"   sequential  {sequential:6.3f} s  ({sequential * per_round:.1f} ms per round)")
    out(f"   speed-up    {sequential / concurrent:.1f}x")
    return 0 if readback_ok and not any(errors.values()) else 1
