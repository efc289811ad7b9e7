"""Serial and Prologix side by side: ``python -m benchmarks.serial [--quick] [--json PATH]``.

The simulators run in another process (``aiotmc sim --pty --prologix 0`` with ten
instruments), so clients and server do not share an event loop. This process then runs,
alternating the order every round (the machine is shared: drift hits all alike) and
quoting medians:

* **line rate**: a 100 kB block (5 kB with ``--quick``) sent at 115200 baud (8N1: 11520
  bytes/s) by a paced writer on one end of a pty pair, read by aiotmc's serial transport
  (``receive_block``) on the other; a pty does not throttle, so the writer paces itself
  like a UART. Figure: received bytes/s over the line rate; target >= 0.95x.
* **per-query overhead**: ``*IDN?`` round trips on the simulator's pty, aiotmc (asyncio,
  trio) against pyserial's blocking ``write`` + ``readline`` on the same port; target
  aiotmc <= 1.2x pyserial.
* **Prologix over TCP**: ``*IDN?`` to instrument 5 of 10 behind the simulated adapter,
  aiotmc (``PRLGX-TCPIP0::host::port::5::INSTR``) against pyvisa-py (``PRLGX-TCPIP0::
  host::port::INTFC``, then ``GPIB0::5::INSTR``; a twentieth of the queries: each takes
  tens of ms); target aiotmc <= 0.7x pyvisa-py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import tty
from collections.abc import Awaitable, Callable
from typing import Any, Final

from .common import median

LINE_RATE_MIN: Final = 0.95  #: received / line rate
QUERY_VS_PYSERIAL: Final = 1.2  #: aiotmc round trip <= this x pyserial's
PROLOGIX_VS_PYVISA: Final = 0.7  #: aiotmc round trip <= this x pyvisa-py's
BAUD: Final = 115200
BACKENDS: Final = ("asyncio", "trio")
IDN: Final = "*IDN?"


class Simulators:
    """``aiotmc sim`` with ten dmms on ptys and behind a Prologix adapter on TCP."""

    def __enter__(self) -> Simulators:
        devices = [arg for _ in range(10) for arg in ("--device", "dmm:0")]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aiotmc", "sim", *devices, "--pty", "--prologix", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        lines = [self.proc.stdout.readline().split() for _ in range(10 + 10 + 11)]
        if not all(lines):
            self.proc.kill()
            raise RuntimeError("the simulators did not start")
        self.pty = next(line[0] for line in lines if line[0].startswith("ASRL"))
        self.prologix = next(line[0] for line in lines if line[0].endswith("::5::INSTR"))
        self.interface = next(line[0] for line in lines if line[0].endswith("::INTFC"))
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- line rate --------------------------------------------------------------------------------


def _paced_writer(fd: int, data: bytes, rate: float, started: list[float]) -> None:
    """Write ``data`` to ``fd`` no faster than ``rate`` bytes/s, 64 bytes at a time."""
    chunk = 64
    begin = time.perf_counter()
    started.append(begin)
    for offset in range(0, len(data), chunk):
        due = begin + offset / rate
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        os.write(fd, data[offset : offset + chunk])


async def _line_rate_trial(size: int) -> float:
    """One block at the line rate; received bytes/s over the line rate."""
    import anyio

    from aiotmc.transports.serial import SerialSettings, SerialTransport

    rate = BAUD / 10  # 8N1: ten bits per byte
    payload = bytes(range(256)) * (size // 256 + 1)
    payload = payload[:size]
    message = b"#%d%d" % (len(str(size)), size) + payload + b"\n"
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        link = await SerialTransport.open(
            os.ttyname(slave), settings=SerialSettings(baud_rate=BAUD), settle=0
        )
        try:
            started: list[float] = []
            writer = threading.Thread(
                target=_paced_writer, args=(master, message, rate, started), daemon=True
            )
            writer.start()
            into = memoryview(bytearray(size))
            got = await link.receive_block(into, max_size=size, deadline=anyio.current_time() + 60)
            end = time.perf_counter()
            await anyio.to_thread.run_sync(writer.join)
        finally:
            await link.aclose()
    finally:
        os.close(master)
        os.close(slave)
    assert bytes(got) == payload
    return len(message) / (end - started[0]) / rate


# -- round trips -------------------------------------------------------------------------------


async def _time(query: Callable[[], Awaitable[object]], queries: int, warmup: int) -> float:
    for _ in range(warmup):
        await query()
    samples = []
    for _ in range(queries):
        t0 = time.perf_counter()
        await query()
        samples.append(time.perf_counter() - t0)
    return median(samples) * 1e6


async def _aiotmc_rtt(resource: str, queries: int, warmup: int) -> float:
    import aiotmc

    options = {"settle": 0.02} if resource.startswith("ASRL") else {}
    async with aiotmc.open(resource, **options) as inst:
        return await _time(lambda: inst.query(IDN), queries, warmup)


def _blocking(query: Callable[[], object], queries: int, warmup: int) -> float:
    for _ in range(warmup):
        query()
    samples = []
    for _ in range(queries):
        t0 = time.perf_counter()
        query()
        samples.append(time.perf_counter() - t0)
    return median(samples) * 1e6


def _pyserial_rtt(path: str, queries: int, warmup: int) -> float:
    import serial  # type: ignore[import-untyped]

    with serial.Serial(path, BAUD, timeout=5) as port:
        port.reset_input_buffer()

        def query() -> bytes:
            port.write(b"*IDN?\n")
            return bytes(port.readline())

        return _blocking(query, queries, warmup)


def _pyvisa_prologix_rtt(interface: str, queries: int, warmup: int) -> float:
    import pyvisa

    rm = pyvisa.ResourceManager("@py")
    try:
        adapter = rm.open_resource(interface)  # kept open: it is board 0 while open
        inst: Any = rm.open_resource("GPIB0::5::INSTR")
        try:
            return _blocking(lambda: inst.query(IDN), queries, warmup)
        finally:
            inst.close()
            adapter.close()
    finally:
        rm.close()


def _aiotmc(resource: str, backend: str, queries: int, warmup: int) -> float:
    import anyio

    return float(anyio.run(_aiotmc_rtt, resource, queries, warmup, backend=backend))


def run(quick: bool, queries: int | None = None) -> dict[str, Any]:
    """Every figure; a JSON-ready dict (``queries``: per round trip figure and round)."""
    import anyio

    rounds, default, warmup, size = (1, 100, 10, 5_000) if quick else (5, 1000, 50, 100_000)
    queries = default if queries is None else queries
    slow = max(10, queries // 20)  # pyvisa-py's Prologix round trips take tens of ms
    results: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        results.setdefault(key, []).append(value)

    with Simulators() as sims:
        serial_path = sims.pty[len("ASRL") : -len("::INSTR")]
        for index in range(rounds):
            trials: list[tuple[str, Callable[[], float]]] = [
                ("line_rate", lambda: float(anyio.run(_line_rate_trial, size))),
                ("pyserial", lambda: _pyserial_rtt(serial_path, queries, warmup)),
                ("pyvisa_prologix", lambda: _pyvisa_prologix_rtt(sims.interface, slow, 2)),
            ]
            for backend in BACKENDS:
                trials.append(
                    (f"serial_{backend}", lambda b=backend: _aiotmc(sims.pty, b, queries, warmup))
                )
                trials.append(
                    (
                        f"prologix_{backend}",
                        lambda b=backend: _aiotmc(sims.prologix, b, queries, warmup),
                    )
                )
            if index % 2:
                trials.reverse()
            for key, trial in trials:
                add(key, trial())
    figures = {key: median(values) for key, values in results.items()}
    verdicts = {"line_rate": figures["line_rate"] >= LINE_RATE_MIN}
    for backend in BACKENDS:
        verdicts[f"serial_{backend}"] = (
            figures[f"serial_{backend}"] <= QUERY_VS_PYSERIAL * figures["pyserial"]
        )
        verdicts[f"prologix_{backend}"] = (
            figures[f"prologix_{backend}"] <= PROLOGIX_VS_PYVISA * figures["pyvisa_prologix"]
        )
    return {
        "mode": "quick" if quick else "full",
        "rounds": rounds,
        "queries": queries,
        "block_bytes": size,
        "figures": figures,
        "verdicts": verdicts,
    }


def table(data: dict[str, Any]) -> str:
    """The figures as a Markdown table."""
    f = data["figures"]
    rows = [
        "| figure | value | target |",
        "|---|---|---|",
        f"| line rate, {data['block_bytes']} B at {BAUD} baud (pty, paced) | "
        f"{f['line_rate']:.3f}x line rate | target >= {LINE_RATE_MIN}x |",
        f"| pyserial *IDN? round trip (pty) | {f['pyserial']:.0f} µs | |",
    ]
    for backend in BACKENDS:
        value = f[f"serial_{backend}"]
        rows.append(
            f"| aiotmc serial *IDN? ({backend}) | {value:.0f} µs = "
            f"{value / f['pyserial']:.2f}x pyserial | target <= {QUERY_VS_PYSERIAL}x |"
        )
    rows.append(f"| pyvisa-py Prologix *IDN? (TCP, 1 of 10) | {f['pyvisa_prologix']:.0f} µs | |")
    for backend in BACKENDS:
        value = f[f"prologix_{backend}"]
        rows.append(
            f"| aiotmc Prologix *IDN? ({backend}) | {value:.0f} µs = "
            f"{value / f['pyvisa_prologix']:.2f}x pyvisa-py | target <= {PROLOGIX_VS_PYVISA}x |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serial", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one round, small sizes")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--queries", type=int, metavar="N", help="round trips per figure")
    args = parser.parse_args(argv)
    data = run(args.quick, args.queries)
    print(table(data))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
