"""Talk HiSLIP: a query, the status byte, a device clear and an SRQ, on a real or simulated
instrument.

python examples/hislip_srq.py                                        # simulator on 127.0.0.1
python examples/hislip_srq.py TCPIP0::192.0.2.7::hislip0::INSTR      # a HiSLIP instrument
python examples/hislip_srq.py --backend trio

Without a resource the example serves a simulated scope with ``HislipServer`` on a free
loopback port and opens ``TCPIP0::127.0.0.1::hislip0,PORT::INSTR``: the same two
connections, messages and service requests as on a real instrument. ``read_stb`` is an
AsyncStatusQuery on the asynchronous channel, and the SRQ arrives there as an
AsyncServiceRequest: no ``*STB?`` polling.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

import aiotmc


@asynccontextmanager
async def open_simulated() -> AsyncIterator[aiotmc.Instrument]:
    """A simulated scope served over HiSLIP on 127.0.0.1."""
    from aiotmc.sim import create_device
    from aiotmc.sim.hislip_server import HislipServer

    device = create_device("scope", acquisition_time=0.2)
    async with HislipServer(device) as server, aiotmc.open(server.resource, timeout=5) as inst:
        yield inst


async def main(resource: str | None) -> None:
    opened = open_simulated() if resource is None else aiotmc.open(resource, timeout=5)
    async with opened as inst:
        print(f"{inst.resource}: {await inst.query('*IDN?')}")
        details = inst.transport.info.details
        print(f"HiSLIP {details.get('protocol_version')}, session {details.get('session_id')}")
        print(f"status byte: 0x{await inst.read_stb():02X}")
        await inst.clear()
        await inst.write("*CLS;*ESE 1;*SRE 32")  # OPC -> ESB -> request service
        async with inst.service_requests() as events:  # subscribe before starting
            started = time.perf_counter()
            await inst.write(":SINGle;*OPC")  # arm one acquisition...
            await inst.trigger()  # ...and start it with a HiSLIP Trigger message
            with anyio.fail_after(30):
                event = await events.receive()
        waited = time.perf_counter() - started
        print(f"operation complete (SRQ) after {waited * 1000:.0f} ms: 0x{int(event.status):02X}")
        await inst.query("*ESR?")  # clears ESB


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("resource", nargs="?", help="a HiSLIP resource (default: simulator)")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args()
    anyio.run(main, args.resource, backend=args.backend)
