"""VXI-11 side by side: ``python -m benchmarks.vxi11 [--quick]``.

One simulator process serves the same simulated scope over VXI-11 (core channel on its own
port, no portmapper) and over a raw socket. Both processes are pinned to one CPU (the
least busy one, or ``--cpu``; as the main harness does), so a round trip measures CPU
cost and not cross-CPU wake-ups. This process then runs, alternating the order every
round (the machine is shared: drift hits all alike) and quoting medians:

* ``*IDN?`` round trip: aiotmc VXI-11 (asyncio, trio; "VXI-11" step by step with
  ``pipeline=False``, "VXI-11 pipeline" the default), PyVISA + pyvisa-py VXI-11
  (``TCPIP0::127.0.0.1,PORT::inst0::INSTR`` with ``@py``) and aiotmc raw socket (asyncio,
  trio); printed with the issue's targets, aiotmc VXI-11 <= 0.6x pyvisa-py and
  <= 1.5x aiotmc raw socket on the same loop;
* block read (100 MB, 1 MB with ``--quick``) into a reused buffer: aiotmc VXI-11 (one
  ``device_read`` of ``request_size`` = the whole block) against the raw-socket floor (a
  blocking socket, exact-size ``recv_into``); target >= 0.8x floor;
* SRQ: the simulated device raises a service request (its error queue fills with ``*SRE 4``
  set) -> ``device_intr_srq`` -> the subscriber of ``service_requests()`` wakes; the
  simulator runs in a thread of this process (its own event loop) so both ends read one
  clock; target median <= 1 ms.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any, Final

from .common import atime_calls, median
from .figures import BLOCK_QUERY, HOST, IDN, MB, pattern_ok, reused_buffer
from .lan_trials import (
    Figure,
    SimulatorProcess,
    alternate,
    pyvisa_rtt,
    serve_main,
    verdict,
)
from .procs import available_cpus, cpu_busy, pin_self

RTT_VS_PYVISA: Final = 0.6  #: aiotmc VXI-11 round trip <= this x pyvisa-py's
RTT_VS_RAW: Final = 1.5  #: aiotmc VXI-11 round trip <= this x aiotmc raw socket
BLOCK_VS_FLOOR: Final = 0.8  #: aiotmc VXI-11 block MB/s >= this x the raw-socket floor
SRQ_MAX_US: Final = 1000.0  #: median SRQ raised -> subscriber woken
BACKENDS: Final = ("asyncio", "trio")


# -- the simulator process ------------------------------------------------------------------


async def _serve(announce: Callable[[dict[str, int]], None]) -> None:
    import anyio

    from aiotmc.sim.devices import create_device
    from aiotmc.sim.server import serve_many
    from aiotmc.sim.vxi11_server import Vxi11Server

    device = create_device("scope")
    async with serve_many([device], host=HOST) as servers, Vxi11Server(device) as vxi:
        announce({"raw": servers[0].port, "vxi11": vxi.port})
        await anyio.to_thread.run_sync(sys.stdin.buffer.read, abandon_on_cancel=True)


# -- trials ---------------------------------------------------------------------------------


def _vxi11(port: int) -> str:
    return f"TCPIP0::{HOST},{port}::inst0::INSTR"


def _raw(port: int) -> str:
    return f"TCPIP0::{HOST}::{port}::SOCKET"


async def _aiotmc_rtt(resource: str, queries: int, warmup: int, **options: Any) -> Figure:
    import aiotmc

    if resource.endswith("::INSTR"):
        options["srq"] = False
    async with aiotmc.open(resource, **options) as inst:
        return await atime_calls(partial(inst.query, IDN), queries, warmup)


async def _aiotmc_block(port: int, size: int, reps: int) -> float:
    import aiotmc

    command = BLOCK_QUERY.format(size=size)
    async with aiotmc.open(
        _vxi11(port), srq=False, request_size=size + 64, max_message_size=size + 64, timeout=60
    ) as inst:
        if not pattern_ok(await inst.query_block(command), size):
            raise RuntimeError("block payload does not match the test pattern")
        buffer = reused_buffer(size)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            await inst.query_block(command, into=buffer)
            times.append(time.perf_counter() - t0)
    return size / MB / median(times)


def _floor_block(port: int, size: int, reps: int) -> float:
    from .client_floor import _connect, _read_block

    command = (BLOCK_QUERY.format(size=size) + "\n").encode()
    buffer = reused_buffer(size)
    with _connect(port) as sock:
        if not pattern_ok(_read_block(sock, command, None), size):
            raise RuntimeError("block payload does not match the test pattern")
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            _read_block(sock, command, buffer)
            times.append(time.perf_counter() - t0)
    return size / MB / median(times)


def srq_latencies(events: int, backend: str) -> list[float]:
    """Seconds from the simulated device raising a service request to the subscriber of
    ``service_requests()`` waking, ``events`` times (simulator in a thread of its own)."""
    import anyio
    from anyio.from_thread import start_blocking_portal

    import aiotmc
    from aiotmc.sim.devices import create_device
    from aiotmc.sim.vxi11_server import Vxi11Server

    device = create_device("scope")

    def raise_srq() -> float:  # runs on the simulator's loop thread
        device.write(b"*CLS\n")  # RQS falls: the next error is a new edge
        t0 = time.monotonic()
        device.push_error(-300, "benchmark")
        return t0

    async def client(port: int, portal: Any) -> list[float]:
        out = []
        async with aiotmc.open(_vxi11(port)) as inst:
            await inst.write("*CLS;*SRE 4")
            async with inst.service_requests(buffer=4) as stream:
                for _ in range(events):
                    t0 = await anyio.to_thread.run_sync(portal.call, raise_srq)
                    with anyio.fail_after(5):
                        await stream.receive()
                    out.append(time.monotonic() - t0)
        return out

    with start_blocking_portal() as portal:
        server = Vxi11Server(device)
        with portal.wrap_async_context_manager(server):
            return anyio.run(client, server.port, portal, backend=backend)


# -- the run --------------------------------------------------------------------------------


def _with_server_cpu(
    sim: SimulatorProcess, trial: Callable[[], Figure], calls: int
) -> Callable[[], Any]:
    """``trial``'s figure and the simulator's CPU µs per query during it (the connection's
    set-up included: a few calls among thousands)."""

    def run() -> tuple[float, float, float]:
        before = sim.cpu_seconds()
        rtt, cpu = trial()
        return rtt, cpu, (sim.cpu_seconds() - before) / calls * 1e6

    return run


def _rtt_trials(ports: dict[str, int], queries: int, warmup: int) -> dict[str, Callable[[], Any]]:
    import anyio

    trials: dict[str, Callable[[], Any]] = {
        "pyvisa-py VXI-11": partial(pyvisa_rtt, _vxi11(ports["vxi11"]), queries, warmup)
    }
    for backend in BACKENDS:
        for label, resource, options in (
            # The labels of the earlier runs: "VXI-11" is step by step, "VXI-11 pipeline"
            # is the default since pipelining became it.
            ("VXI-11", _vxi11(ports["vxi11"]), {"pipeline": False}),
            ("VXI-11 pipeline", _vxi11(ports["vxi11"]), {"pipeline": True}),
            ("raw socket", _raw(ports["raw"]), {}),
        ):
            trials[f"aiotmc {label} {backend}"] = partial(
                anyio.run,
                partial(_aiotmc_rtt, resource, queries, warmup, **options),
                backend=backend,
            )
    return trials


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every figure; prints the table and returns the figures as a dict."""
    import anyio

    out: dict[str, Any] = {}
    if args.cpu is not None and pin_self(args.cpu):
        print(f"simulator and clients pinned to CPU {args.cpu}")
    with SimulatorProcess("benchmarks.vxi11", args.cpu) as sim:
        ports = sim.ports
        calls = args.queries + args.warmup
        trials = {
            name: _with_server_cpu(sim, trial, calls)
            for name, trial in _rtt_trials(ports, args.queries, args.warmup).items()
        }
        figures = alternate(trials, args.rounds)
        rtt = {name: value[0] for name, value in figures.items()}
        out["rtt_us"] = rtt
        out["cpu_us"] = {name: value[1] for name, value in figures.items()}
        out["server_cpu_us"] = {name: value[2] for name, value in figures.items()}
        print(
            f"*IDN? round trip, median of {args.rounds} rounds x {args.queries} queries"
            " (and the client's and the simulator's CPU per query):"
        )
        for name, (value, cpu, server) in figures.items():
            print(
                f"  {name:32} {value:9.1f} µs  (client CPU {cpu:6.1f} µs, "
                f"simulator CPU {server:6.1f} µs)"
            )
        pyvisa = rtt["pyvisa-py VXI-11"]
        out["rtt_ratios"] = {}
        for backend in BACKENDS:
            raw = rtt[f"aiotmc raw socket {backend}"]
            for label in ("VXI-11", "VXI-11 pipeline"):
                ours = rtt[f"aiotmc {label} {backend}"]
                vs_pyvisa, vs_raw = ours / pyvisa, ours / raw
                out["rtt_ratios"][f"{label} {backend}"] = {"pyvisa-py": vs_pyvisa, "raw": vs_raw}
                print(
                    f"  aiotmc {label} {backend}: {vs_pyvisa:.2f}x pyvisa-py (target <= "
                    f"{RTT_VS_PYVISA}x: {verdict(vs_pyvisa <= RTT_VS_PYVISA)}), {vs_raw:.2f}x "
                    f"aiotmc raw socket (target <= {RTT_VS_RAW}x: "
                    f"{verdict(vs_raw <= RTT_VS_RAW)})"
                )

        size = args.size
        block_trials: dict[str, Callable[[], Any]] = {
            "raw-socket floor": partial(_floor_block, ports["raw"], size, args.block_reps)
        }
        for backend in BACKENDS:
            block_trials[f"aiotmc VXI-11 {backend}"] = partial(
                anyio.run, _aiotmc_block, ports["vxi11"], size, args.block_reps, backend=backend
            )
        block = alternate(block_trials, args.rounds)
        out["block_mb_s"] = block
        floor = block["raw-socket floor"]
        print(f"read {size / MB:g} MB block into a reused buffer (MB/s, median):")
        for name, value in block.items():
            extra = ""
            if name != "raw-socket floor":
                ratio = value / floor
                extra = (
                    f"  {ratio:.2f}x floor (target >= {BLOCK_VS_FLOOR}x: "
                    f"{verdict(ratio >= BLOCK_VS_FLOOR)})"
                )
            print(f"  {name:28} {value:9.1f}{extra}")

    out["srq_us"] = {}
    print(f"SRQ raised by the simulator -> subscriber woken ({args.events} events, median):")
    for backend in BACKENDS:
        value = median(srq_latencies(args.events, backend)) * 1e6
        out["srq_us"][backend] = value
        print(
            f"  aiotmc VXI-11 {backend:20} {value:9.1f} µs (target <= {SRQ_MAX_US:g} µs: "
            f"{verdict(value <= SRQ_MAX_US)})"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.vxi11", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, few samples")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--json", default=None, help="also write the figures here")
    parser.add_argument(
        "--cpu", type=int, default=None, help="pin to this CPU (default: the least busy one)"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin to a CPU")
    args = parser.parse_args(argv)
    if args.serve:
        pin_self(args.cpu)
        return serve_main(_serve)
    if args.no_pin:
        args.cpu = None
    elif args.cpu is None and len(available_cpus()) > 1:
        busy = cpu_busy()
        args.cpu = min(available_cpus(), key=lambda cpu: busy.get(cpu, 0.0))
    quick = args.quick
    args.rounds = args.rounds or (1 if quick else 5)
    args.queries, args.warmup = (100, 10) if quick else (2000, 200)
    args.size = MB if quick else 100 * MB
    args.block_reps = 2 if quick else 5
    args.events = 50 if quick else 1000
    figures = run(args)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(figures, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
