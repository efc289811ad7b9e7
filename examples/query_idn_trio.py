"""The same query written for trio directly (aiotmc runs natively on trio).

python examples/query_idn_trio.py [RESOURCE]
"""

from __future__ import annotations

import sys

import trio

import aiotmc


async def main(resource: str) -> None:
    async with aiotmc.open(resource, timeout=5) as inst:
        with trio.fail_after(5):
            print(await inst.query("*IDN?"))


if __name__ == "__main__":
    trio.run(main, sys.argv[1] if len(sys.argv) > 1 else "SIM::dmm")
