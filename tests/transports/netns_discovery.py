"""Run inside a fresh network namespace (only ``lo``) by test_lan_discovery.py: announce
instruments with python-zeroconf, serve HiSLIP and raw SCPI on their standard ports, then
browse and probe on asyncio and on trio; prints the findings as JSON. Never run it
outside a namespace."""

from __future__ import annotations

import json
import os
import socket
from typing import Any

import anyio
from zeroconf import ServiceInfo, Zeroconf

import aiotmc
from aiotmc.sim.devices import create_device
from aiotmc.sim.hislip_server import HislipServer
from aiotmc.sim.server import SimServer
from aiotmc.transports.lan_discovery import browse

LOOPBACK = "127.0.0.1"
ANNOUNCED = [
    ("_hislip._tcp.local.", "SIM-DMM hislip", 4880),
    ("_hislip._tcp.local.", "Other port", 4999),
    ("_scpi-raw._tcp.local.", "SIM-DMM raw", 5025),
    ("_lxi._tcp.local.", "SIM-DMM web", 80),
    ("_http._tcp.local.", "Not an instrument", 8080),
]


async def check(seconds: float) -> dict[str, Any]:
    device = create_device("dmm")
    async with HislipServer(device, port=4880), SimServer(device, port=5025):
        browsed = await browse(seconds, interfaces=[LOOPBACK])
        os.environ["AIOTMC_MDNS_SECONDS"] = "0"
        os.environ["AIOTMC_LAN_HOSTS"] = f"{LOOPBACK}, nonexistent.invalid"
        listed = await aiotmc.list_resources()
        idn = ""
        for found in browsed:
            if found.resource.endswith("::hislip0::INSTR"):
                async with aiotmc.open(found.resource) as inst:
                    idn = await inst.query("*IDN?")
    return {
        "browsed": {f.resource: f.description for f in browsed},
        "listed": listed,
        "idn": idn,
    }


def main() -> None:
    responder = Zeroconf(interfaces=[LOOPBACK])
    try:
        for type_, name, port in ANNOUNCED:
            info = ServiceInfo(
                type_,
                f"{name}.{type_}",
                addresses=[socket.inet_aton(LOOPBACK)],
                port=port,
                server="simdmm.local.",
            )
            responder.register_service(info, cooperating_responders=True)
        # A responder multicasts a record at most once a second (RFC 6762 §6), and the
        # registration just announced them: the first browse spans the browser's second
        # query, one second after its first. Both browse 1.5 s: with 1.0 s on trio an
        # answer announced at the one-second mark was missed on a loaded CI machine.
        results = {
            "asyncio": anyio.run(check, 1.5, backend="asyncio"),
            "trio": anyio.run(check, 1.5, backend="trio"),
        }
    finally:
        responder.close()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
