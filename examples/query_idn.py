"""Ask one instrument who it is, on asyncio or trio.

python examples/query_idn.py                                  # simulated DMM, asyncio
python examples/query_idn.py TCPIP0::192.0.2.7::5025::SOCKET  # a real instrument
python examples/query_idn.py SIM::dmm --backend trio
"""

from __future__ import annotations

import argparse

import anyio

import aiotmc


async def main(resource: str) -> None:
    async with aiotmc.open(resource, timeout=5) as inst:
        print(await inst.query("*IDN?"))
        identity = await inst.identify()
        print(f"manufacturer={identity.manufacturer} model={identity.model}")
        await inst.check_errors()  # raises aiotmc.InstrumentError if the queue holds any


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("resource", nargs="?", default="SIM::dmm")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args()
    anyio.run(main, args.resource, backend=args.backend)
