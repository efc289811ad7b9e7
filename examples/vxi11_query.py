"""Talk VXI-11 (``TCPIP::host::INSTR``): to a real instrument, or to the VXI-11 simulator.

python examples/vxi11_query.py                                   # simulated DMM over VXI-11
python examples/vxi11_query.py TCPIP0::192.0.2.7::inst0::INSTR   # a real instrument
python examples/vxi11_query.py --backend trio
"""

from __future__ import annotations

import argparse

import anyio

import aiotmc
from aiotmc.sim import create_device
from aiotmc.sim.vxi11_server import Vxi11Server


async def talk(resource: str, **options: object) -> None:
    async with aiotmc.open(resource, timeout=5, **options) as inst:
        print(await inst.query("*IDN?"))
        print(f"status byte (device_readstb): {await inst.read_stb():#04x}")
        await inst.clear()  # device_clear
        print(f"link: {dict(inst.transport.info.details)}")


async def main(resource: str | None) -> None:
    if resource is not None:
        await talk(resource)
        return
    async with Vxi11Server(create_device("dmm"), portmapper_port=0) as server:
        await talk(server.resource())  # TCPIP0::127.0.0.1,PORT::inst0::INSTR: no portmapper
        # through the simulator's own portmapper (a real one listens on port 111)
        await talk(server.resource(explicit_port=False), portmapper_port=server.portmapper_port)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("resource", nargs="?", default=None)
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args()
    anyio.run(main, args.resource, backend=args.backend)
