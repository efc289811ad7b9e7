"""Remote instruments through ``aiotmc agent`` + NATS: ``python -m benchmarks.distributed``.

Starts a nats-server on 127.0.0.1 and an ``aiotmc agent`` process serving a simulated
scope (in the agent's process: ``SIM::scope``), then measures from this process, in
alternating order every round (the machine is shared) and quoting medians:

* ``*IDN?`` round trip to the remote instrument (asyncio, trio), beside the local round
  trip to the same kind of simulated instrument in this process (``SIM::scope``); target:
  remote median <= 1 ms on loopback;
* a 10 MB block (1 MB with ``--quick``) through the agent, in NATS-message-sized chunks,
  MB/s;
* remote SRQ: the agent's instrument raises a service request -> the subscriber of
  ``service_requests()`` here wakes (median µs);
* trigger skew: five more agent processes, each with one simulated instrument, told to
  trigger at one instant (:func:`aiotmc.agent.trigger.trigger_together`); the median
  spread between the first and the last (target <= 1 ms on one machine).
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

from .common import median
from .figures import BLOCK_QUERY, HOST, IDN, MB

REMOTE_RTT_MAX_US: Final = 1000.0
SKEW_MAX_US: Final = 1000.0
BACKENDS: Final = ("asyncio", "trio")
_AGENT: Final = "bench"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _start_nats(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("nats-server")
    if binary is None:
        raise SystemExit("nats-server is not installed (apt install nats-server)")
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "-a", HOST, "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=(workdir / "nats.log").open("wb"),
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return proc, port
        except OSError:
            time.sleep(0.02)
    proc.kill()
    raise SystemExit("nats-server did not start")


def _start_agent(port: int, name: str = _AGENT) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aiotmc",
            "agent",
            "--nats",
            f"nats://{HOST}:{port}",
            "--name",
            name,
            "scope=SIM::scope",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    if not proc.stdout.readline():
        proc.kill()
        raise SystemExit("the agent did not start")
    return proc


async def _rtt(resource: str, n: int) -> float:
    import aiotmc

    samples = []
    async with aiotmc.open(resource, timeout=10) as inst:
        for _ in range(20):
            await inst.query(IDN)
        for _ in range(n):
            t0 = time.perf_counter()
            await inst.query(IDN)
            samples.append(time.perf_counter() - t0)
    return median(samples) * 1e6


async def _block(resource: str, size: int, n: int) -> float:
    import aiotmc

    into = bytearray(size)
    async with aiotmc.open(resource, timeout=30, max_message_size=size + 64) as inst:
        await inst.query_block(BLOCK_QUERY.format(size=size), into=into)
        t0 = time.perf_counter()
        for _ in range(n):
            await inst.query_block(BLOCK_QUERY.format(size=size), into=into)
        return size * n / (time.perf_counter() - t0) / MB


async def _srq(resource: str, n: int) -> float:
    import anyio

    import aiotmc

    samples = []
    async with aiotmc.open(resource, timeout=10) as inst, inst.service_requests() as events:
        await inst.write("*CLS;*SRE 32;*ESE 1")
        for _ in range(n):
            t0 = time.perf_counter()
            await inst.write("*OPC")  # ESB -> RQS at once: the agent forwards the SRQ
            with anyio.fail_after(5):
                await events.receive()
            samples.append(time.perf_counter() - t0)
            await inst.write("*CLS")
    return median(samples) * 1e6


async def _skew(port: int, agents: list[str], n: int) -> float:
    from contextlib import AsyncExitStack

    import aiotmc
    from aiotmc.agent.trigger import trigger_together

    skews = []
    async with AsyncExitStack() as stack:
        insts = [
            await stack.enter_async_context(
                aiotmc.open(f"nats://{HOST}:{port}/{name}/scope", timeout=10)
            )
            for name in agents
        ]
        for _ in range(n):
            report = await trigger_together(insts, lead=0.02)
            skews.append(report.skew)
    return median(skews) * 1e6


def run(quick: bool) -> dict[str, Any]:
    """Measure everything; return the figures."""
    import anyio

    rounds = 1 if quick else 3
    n = 50 if quick else 500
    size = MB if quick else 10 * MB
    results: dict[str, Any] = {"rtt_us": {}, "block_mb_s": {}, "srq_us": {}, "skew_us": {}}
    with tempfile.TemporaryDirectory() as tmp:
        nats, port = _start_nats(Path(tmp))
        agent = _start_agent(port)
        remote = f"nats://{HOST}:{port}/{_AGENT}/scope"
        try:
            samples: dict[str, list[float]] = {}
            for r in range(rounds):
                order = BACKENDS if r % 2 == 0 else BACKENDS[::-1]
                for backend in order:
                    samples.setdefault(f"remote {backend}", []).append(
                        anyio.run(_rtt, remote, n, backend=backend)
                    )
                    samples.setdefault(f"local SIM {backend}", []).append(
                        anyio.run(_rtt, "SIM::scope", n, backend=backend)
                    )
                    results["block_mb_s"].setdefault(backend, []).append(
                        anyio.run(_block, remote, size, 2 if quick else 5, backend=backend)
                    )
                    results["srq_us"].setdefault(backend, []).append(
                        anyio.run(_srq, remote, 10 if quick else 100, backend=backend)
                    )
            names = [f"trig{i}" for i in range(5)]
            extra = [_start_agent(port, name) for name in names]
            try:
                for backend in BACKENDS:
                    results["skew_us"][backend] = anyio.run(
                        _skew, port, names, 5 if quick else 50, backend=backend
                    )
            finally:
                for proc in extra:
                    proc.kill()
                    proc.wait(10)
                    if proc.stdout is not None:
                        proc.stdout.close()
            results["rtt_us"] = {k: median(v) for k, v in samples.items()}
            results["block_mb_s"] = {k: median(v) for k, v in results["block_mb_s"].items()}
            results["srq_us"] = {k: median(v) for k, v in results["srq_us"].items()}
        finally:
            agent.kill()
            agent.wait(10)
            if agent.stdout is not None:
                agent.stdout.close()
            nats.terminate()
            nats.wait(10)
    results["block_size"] = size
    return results


def report(results: dict[str, Any]) -> str:
    """The figures as a table with the issue's target."""
    lines = ["remote instruments through aiotmc agent + nats-server on loopback (medians)"]
    for backend in BACKENDS:
        remote = results["rtt_us"][f"remote {backend}"]
        local = results["rtt_us"][f"local SIM {backend}"]
        verdict = "PASS" if remote <= REMOTE_RTT_MAX_US else "MISS"
        lines.append(
            f"  *IDN? remote {backend:<8} {remote:8.1f} µs  (local SIM {local:6.1f} µs; "
            f"target <= {REMOTE_RTT_MAX_US:.0f} µs: {verdict})"
        )
    size = results["block_size"] // MB
    for backend, rate in results["block_mb_s"].items():
        lines.append(f"  {size} MB block remote {backend:<8} {rate:8.1f} MB/s")
    for backend, us in results["srq_us"].items():
        lines.append(f"  SRQ remote -> subscriber {backend:<8} {us:8.1f} µs")
    for backend, us in results["skew_us"].items():
        verdict = "PASS" if us <= SKEW_MAX_US else "MISS"
        lines.append(
            f"  trigger skew, 5 agent processes {backend:<8} {us:8.1f} µs "
            f"(target <= {SKEW_MAX_US:.0f} µs: {verdict})"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.distributed")
    parser.add_argument("--quick", action="store_true", help="small sizes, one round")
    parser.add_argument("--json", default=None, help="write the figures to this file")
    args = parser.parse_args(argv)
    results = run(args.quick)
    print(report(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
