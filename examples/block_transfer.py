"""Upload a waveform and read blocks back: binary data with 0x0A inside, no copies.

python examples/block_transfer.py [RESOURCE_OF_A_WAVEFORM_GENERATOR]
"""

from __future__ import annotations

import argparse
import math
import time

import anyio

import aiotmc


async def main(resource: str) -> None:
    async with aiotmc.open(resource, timeout=10) as inst:
        wave = [round(30000 * math.sin(2 * math.pi * i / 1000)) for i in range(100_000)]
        start = time.perf_counter()
        await inst.write_binary_values("DATA:ARB sine,", wave, "h")  # int16, little-endian
        await inst.check_errors()
        back = await inst.query_binary_values("DATA:ARB? sine", "h")
        elapsed_ms = (time.perf_counter() - start) * 1000
        verdict = "OK" if back == wave else "MISMATCH"
        print(f"uploaded and read back {len(back)} int16 points in {elapsed_ms:.1f} ms: {verdict}")

        buffer = bytearray(len(wave) * 2)  # reused between reads: no allocation per block
        for _ in range(3):
            view = await inst.query_block("DATA:ARB? sine", into=buffer)
            assert view.obj is buffer
        print(f"read the {len(view)}-byte block 3 times into one reused buffer")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("resource", nargs="?", default="SIM::wavegen")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args()
    anyio.run(main, args.resource, backend=args.backend)
