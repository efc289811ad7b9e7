"""HiSLIP side by side: ``python -m benchmarks.hislip [--quick]``.

One simulator process serves the same simulated scope over a raw socket and over HiSLIP:
plain (synchronized), TLS (a throwaway ``trustme`` CA made at start), and behind a
delaying TCP proxy (1 ms per direction on every byte of both channels) in synchronized
and in overlapped mode. This process then runs, alternating the order every round (the
machine is shared: drift hits all alike) and quoting medians:

* ``*IDN?`` round trip: aiotmc HiSLIP (asyncio, trio), PyVISA + pyvisa-py HiSLIP and
  aiotmc raw socket (asyncio, trio); targets aiotmc HiSLIP <= 1.3x aiotmc raw socket on
  the same loop and <= 0.5x pyvisa-py;
* block read (100 MB, 1 MB with ``--quick``) into a reused buffer: aiotmc HiSLIP against
  the raw-socket floor (a blocking socket, exact-size ``recv_into``), target >= 0.8x; and
  with TLS on both channels against plaintext HiSLIP, target >= 0.5x; with the CPU per
  MB of each side (this client's process time, the simulator's from ``/proc``);
* pipelining over the 1 ms link: 100 ``*IDN?`` one after another in synchronized mode
  against ``Instrument.query_pipelined`` in overlapped mode, target <= 0.2x.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
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
from .vxi11 import _floor_block

RTT_VS_RAW: Final = 1.3  #: aiotmc HiSLIP round trip <= this x aiotmc raw socket
RTT_VS_PYVISA: Final = 0.5  #: aiotmc HiSLIP round trip <= this x pyvisa-py's
BLOCK_VS_FLOOR: Final = 0.8  #: aiotmc HiSLIP block MB/s >= this x the raw-socket floor
TLS_VS_PLAIN: Final = 0.5  #: TLS block MB/s >= this x plaintext HiSLIP
PIPELINE_VS_SYNC: Final = 0.2  #: overlapped batch time <= this x synchronized
LINK_DELAY: Final = 0.001  #: seconds added per direction by the proxy
BACKENDS: Final = ("asyncio", "trio")


# -- the simulator process ------------------------------------------------------------------


async def _delay_pipe(source: Any, sink: Any, delay: float) -> None:
    """Forward bytes from ``source`` to ``sink``, each chunk ``delay`` s late (in order)."""
    import anyio

    send, receive = anyio.create_memory_object_stream[tuple[float, bytes]](10_000)

    async def reader() -> None:
        async with send:
            async for chunk in source:
                await send.send((anyio.current_time() + delay, chunk))

    async def writer() -> None:
        async with receive:
            async for due, chunk in receive:
                wait = due - anyio.current_time()
                if wait > 0:
                    await anyio.sleep(wait)
                await sink.send(chunk)
        await sink.send_eof()

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        tg.start_soon(writer)


async def _serve_delayed(target_port: int, delay: float) -> tuple[Any, Any, int]:
    """A TCP proxy to ``target_port`` adding ``delay`` per direction:
    (listener, its handler, its port)."""
    import anyio
    import anyio.abc

    listener = await anyio.create_tcp_listener(local_host=HOST)

    async def handle(client: Any) -> None:
        async with (
            client,
            await anyio.connect_tcp(HOST, target_port) as upstream,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(_delay_pipe, client, upstream, delay)
            tg.start_soon(_delay_pipe, upstream, client, delay)

    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    return listener, handle, port


async def _serve(announce: Callable[[dict[str, Any]], None]) -> None:
    import ssl

    import anyio
    import trustme

    from aiotmc.sim.devices import create_device
    from aiotmc.sim.hislip_server import HislipServer
    from aiotmc.sim.server import serve_many

    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(HOST).configure_cert(context)
    ca_file = Path(tempfile.mkdtemp(prefix="aiotmc-hislip-")) / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    device = create_device("scope")
    big = 128 << 20
    async with (
        serve_many([device], host=HOST) as servers,
        HislipServer(device, max_input=big, max_message_size=big) as plain,
        HislipServer(device, tls=context, max_message_size=big) as secure,
        HislipServer(device) as far_sync,
        HislipServer(device, overlapped=True) as far_overlapped,
        anyio.create_task_group() as tg,
    ):
        ports: dict[str, Any] = {
            "raw": servers[0].port,
            "hislip": plain.port,
            "tls": secure.port,
            "ca_file": str(ca_file),
        }
        for name, server in (("far_sync", far_sync), ("far_overlapped", far_overlapped)):
            listener, handle, port = await _serve_delayed(server.port, LINK_DELAY)
            tg.start_soon(listener.serve, handle)
            ports[name] = port
        announce(ports)
        await anyio.to_thread.run_sync(sys.stdin.buffer.read, abandon_on_cancel=True)
        tg.cancel_scope.cancel()


# -- trials ---------------------------------------------------------------------------------


def _hislip(port: int) -> str:
    return f"TCPIP0::{HOST}::hislip0,{port}::INSTR"


def _raw(port: int) -> str:
    return f"TCPIP0::{HOST}::{port}::SOCKET"


async def _aiotmc_rtt(resource: str, queries: int, warmup: int) -> Figure:
    import aiotmc

    async with aiotmc.open(resource) as inst:
        return await atime_calls(partial(inst.query, IDN), queries, warmup)


async def _aiotmc_block(
    resource: str, size: int, reps: int, sim_cpu: Callable[[], float], **options: Any
) -> tuple[float, float, float]:
    """MB/s (median of ``reps``), and the CPU ms per MB of this client and of the
    simulator over all the reps."""
    import aiotmc

    command = BLOCK_QUERY.format(size=size)
    async with aiotmc.open(
        resource,
        max_message_size=size + 64,
        max_hislip_message_size=size + 64,
        timeout=120,
        **options,
    ) as inst:
        if not pattern_ok(await inst.query_block(command), size):
            raise RuntimeError("block payload does not match the test pattern")
        buffer = reused_buffer(size)
        times = []
        cpu0, sim0 = time.process_time(), sim_cpu()
        for _ in range(reps):
            t0 = time.perf_counter()
            await inst.query_block(command, into=buffer)
            times.append(time.perf_counter() - t0)
        cpu, sim = time.process_time() - cpu0, sim_cpu() - sim0
    megabytes = size / MB * reps
    return size / MB / median(times), cpu * 1e3 / megabytes, sim * 1e3 / megabytes


async def _batch(resource: str, count: int, overlapped: bool) -> float:
    """Seconds for ``count`` queries: one after another, or pipelined (overlapped)."""
    import aiotmc

    async with aiotmc.open(resource, overlapped=overlapped, timeout=30) as inst:
        commands = [IDN] * count
        await inst.query(IDN)
        t0 = time.perf_counter()
        if overlapped:
            answers = await inst.query_pipelined(commands)
        else:
            answers = [await inst.query(command) for command in commands]
        elapsed = time.perf_counter() - t0
    if len(answers) != count or not all("," in a for a in answers):
        raise RuntimeError("wrong answers in the batch")
    return elapsed


def _run_rtt(args: argparse.Namespace, ports: dict[str, Any], out: dict[str, Any]) -> None:
    import anyio

    trials: dict[str, Callable[[], Any]] = {
        "pyvisa-py HiSLIP": partial(pyvisa_rtt, _hislip(ports["hislip"]), args.queries, args.warmup)
    }
    for backend in BACKENDS:
        for label, resource in (
            ("HiSLIP", _hislip(ports["hislip"])),
            ("raw socket", _raw(ports["raw"])),
        ):
            trials[f"aiotmc {label} {backend}"] = partial(
                anyio.run,
                partial(_aiotmc_rtt, resource, args.queries, args.warmup),
                backend=backend,
            )
    figures = alternate(trials, args.rounds)
    rtt = {name: value[0] for name, value in figures.items()}
    out["rtt_us"] = rtt
    out["cpu_us"] = {name: value[1] for name, value in figures.items()}
    print(
        f"*IDN? round trip, median of {args.rounds} rounds x {args.queries} queries"
        " (and the client's CPU per query):"
    )
    for name, (value, cpu) in figures.items():
        print(f"  {name:28} {value:9.1f} µs  (client CPU {cpu:6.1f} µs)")
    pyvisa = rtt["pyvisa-py HiSLIP"]
    out["rtt_ratios"] = {}
    for backend in BACKENDS:
        ours = rtt[f"aiotmc HiSLIP {backend}"]
        vs_raw, vs_pyvisa = ours / rtt[f"aiotmc raw socket {backend}"], ours / pyvisa
        out["rtt_ratios"][backend] = {"raw": vs_raw, "pyvisa-py": vs_pyvisa}
        print(
            f"  aiotmc HiSLIP {backend}: {vs_raw:.2f}x aiotmc raw socket (target <= "
            f"{RTT_VS_RAW}x: {verdict(vs_raw <= RTT_VS_RAW)}), {vs_pyvisa:.2f}x pyvisa-py "
            f"(target <= {RTT_VS_PYVISA}x: {verdict(vs_pyvisa <= RTT_VS_PYVISA)})"
        )


def _run_blocks(
    args: argparse.Namespace,
    ports: dict[str, Any],
    out: dict[str, Any],
    sim_cpu: Callable[[], float],
) -> None:
    import anyio

    size = args.size
    trials: dict[str, Callable[[], Any]] = {
        "raw-socket floor": partial(_floor_block, ports["raw"], size, args.block_reps)
    }
    tls = {"tls": True, "tls_ca_file": ports["ca_file"]}
    for backend in BACKENDS:
        for label, port, options in (("HiSLIP", "hislip", {}), ("HiSLIP TLS", "tls", tls)):
            trials[f"aiotmc {label} {backend}"] = partial(
                anyio.run,
                partial(
                    _aiotmc_block, _hislip(ports[port]), size, args.block_reps, sim_cpu, **options
                ),
                backend=backend,
            )
    figures = alternate(trials, args.rounds)
    block = {name: v[0] if isinstance(v, tuple) else v for name, v in figures.items()}
    cpu = {name: v[1:] for name, v in figures.items() if isinstance(v, tuple)}
    out["block_mb_s"] = block
    out["block_cpu_ms_per_mb"] = {
        name: {"client": c, "simulator": s} for name, (c, s) in cpu.items()
    }
    floor = block["raw-socket floor"]
    print(f"read {size / MB:g} MB block into a reused buffer (MB/s, median):")
    for name, value in block.items():
        extra = ""
        if name.startswith("aiotmc HiSLIP TLS"):
            plain = block[name.replace(" TLS", "")]
            ratio = value / plain
            extra = (
                f"  {ratio:.2f}x plaintext HiSLIP (target >= {TLS_VS_PLAIN}x: "
                f"{verdict(ratio >= TLS_VS_PLAIN)})"
            )
        elif name != "raw-socket floor":
            ratio = value / floor
            extra = (
                f"  {ratio:.2f}x floor (target >= {BLOCK_VS_FLOOR}x: "
                f"{verdict(ratio >= BLOCK_VS_FLOOR)})"
            )
        print(f"  {name:28} {value:9.1f}{extra}")
        if name in cpu:
            client, simulator = cpu[name]
            print(f"  {'':28} CPU per MB: client {client:.3f} ms, simulator {simulator:.3f} ms")


def _run_pipeline(args: argparse.Namespace, ports: dict[str, Any], out: dict[str, Any]) -> None:
    import anyio

    count = args.batch
    trials: dict[str, Callable[[], Any]] = {}
    for backend in BACKENDS:
        for label, port, overlapped in (
            ("synchronized", "far_sync", False),
            ("overlapped", "far_overlapped", True),
        ):
            trials[f"{label} {backend}"] = partial(
                anyio.run, _batch, _hislip(ports[port]), count, overlapped, backend=backend
            )
    times = alternate(trials, args.rounds)
    out["batch_ms"] = {name: value * 1e3 for name, value in times.items()}
    print(f"{count} queries over a link with {LINK_DELAY * 1e3:g} ms per direction (ms, median):")
    out["pipeline_ratio"] = {}
    for backend in BACKENDS:
        sync, overlapped = times[f"synchronized {backend}"], times[f"overlapped {backend}"]
        ratio = overlapped / sync
        out["pipeline_ratio"][backend] = ratio
        print(
            f"  aiotmc {backend:8} synchronized {sync * 1e3:8.1f}  overlapped "
            f"{overlapped * 1e3:7.1f}  {ratio:.3f}x (target <= {PIPELINE_VS_SYNC}x: "
            f"{verdict(ratio <= PIPELINE_VS_SYNC)})"
        )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every figure; prints the table and returns the figures as a dict."""
    out: dict[str, Any] = {}
    with SimulatorProcess("benchmarks.hislip") as sim:
        ports = sim.ports
        _run_rtt(args, ports, out)
        _run_blocks(args, ports, out, sim.cpu_seconds)
        _run_pipeline(args, ports, out)
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hislip", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, few samples")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.serve:
        return serve_main(_serve)
    quick = args.quick
    args.rounds = args.rounds or (1 if quick else 5)
    args.queries, args.warmup = (100, 10) if quick else (2000, 200)
    args.size = MB if quick else 100 * MB
    args.block_reps = 2 if quick else 5
    args.batch = 100
    figures = run(args)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(figures, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
