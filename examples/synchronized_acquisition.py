"""Synchronized acquisition: arm a DMM and a scope, trigger both together, read a PSU too.

The bench (all simulated, in this process): a power supply and a DMM served on loopback
TCP sockets (raw SCPI, like port 5025 on real instruments) and an oscilloscope attached
in-process. The raw socket has no service-request line, so the DMM is opened with
``srq_poll_interval`` (its status byte is polled); the scope has native SRQs; the PSU is
just read when the triggers go out. Then a periodic run writes rows to CSV.

    python examples/synchronized_acquisition.py [--rows 5] [--period 0.05]
        [--csv out.csv] [--backend trio]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import anyio

import aiotmc
from aiotmc import Measurement
from aiotmc.sim.devices import create_device
from aiotmc.sim.server import serve_many


async def waveform(inst: aiotmc.Instrument) -> list[int]:
    """The scope's record as unsigned bytes."""
    points: list[int] = await inst.query_binary_values(":WAV:DATA?", "B")
    return points


async def main(rows: int, period: float, csv_path: Path) -> None:
    psu = create_device("psu", latency=0.002)
    dmm = create_device("dmm", latency=0.002, measurement_time=0.005, input_voltage=4.999)
    scope = create_device("scope", acquisition_time=0.005)
    async with serve_many([psu, dmm]) as (psu_server, dmm_server):
        resources = {
            "psu": psu_server.resource,
            "dmm": (dmm_server.resource, {"srq_poll_interval": 0.002}),
            "scope": ("SIM::scope::bench", {"device": scope}),
        }
        async with aiotmc.open_many(resources, timeout=5, strict=True) as group:
            for name, inst in group.items():
                print(f"opened {name:5} {inst.resource}")
            await group.write_all(
                {"psu": ["INST:NSEL 1", "VOLT 5", "OUTP ON"], "scope": ":TRIG:SOUR BUS"},
                strict=True,
            )

            plan = {
                "dmm": Measurement("FETC?", arm=["TRIG:SOUR BUS", "INIT"], convert=float),
                "scope": Measurement(waveform, arm=":SINGle"),
                "psu": Measurement("MEAS:VOLT?", trigger=False, convert=float),
            }
            row = await group.acquire(plan)
            if not row.ok:
                raise SystemExit(f"acquisition failed: {row.errors}")
            print(f"armed dmm+scope, triggered together: trigger skew {row.skew * 1e6:.0f} us")
            for name, sample in row.samples.items():
                how = sample.completion.method if sample.completion else "read at trigger"
                value = sample.value
                shown = f"{len(value)} points" if isinstance(value, list) else f"{value:.4f} V"
                print(f"  {name:5} {shown:>12}  completion: {how}")

            print(f"periodic: {rows} rows every {period * 1000:.0f} ms")
            collected = []
            async for row in group.periodic(plan, period, count=rows):
                collected.append(row)
                late = (row.monotonic - row.scheduled) * 1000
                print(
                    f"  row {row.index:3} +{late:4.1f} ms late, missed {row.missed}: "
                    f"dmm {row['dmm'].value:.4f} V  psu {row['psu'].value:.3f} V  "
                    f"skew {row.skew * 1e6:.0f} us"
                )
            written = aiotmc.write_csv(collected, csv_path)
            print(f"wrote {written} rows to {csv_path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5)
    parser.add_argument("--period", type=float, default=0.05)
    parser.add_argument("--csv", type=Path, default=None)
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args()
    path = args.csv or Path(tempfile.gettempdir()) / "aiotmc_acquisition.csv"
    anyio.run(main, args.rows, args.period, path, backend=args.backend)
