"""A power supply on a serial port and two meters on a GPIB bus, all simulated.

python examples/serial_and_gpib.py                  # asyncio
python examples/serial_and_gpib.py --backend trio

The simulators stand in for the hardware: a pseudo-terminal for the RS-232 line
(ASRL/dev/pts/N::INSTR) and a Prologix GPIB-ETHERNET adapter on 127.0.0.1 with instruments
at GPIB addresses 5 and 7 (PRLGX-TCPIP0::127.0.0.1::PORT::5::INSTR). With real hardware,
open e.g. ASRL/dev/ttyUSB0::INSTR and PRLGX-TCPIP0::192.0.2.9::1234::5::INSTR instead.
The second meter is opened the pyvisa-py way, as GPIB0::7::INSTR with the adapter attached
as GPIB board 0; it then raises a service request that the adapter's SRQ line reports.
"""

from __future__ import annotations

import argparse

import anyio

import aiotmc
from aiotmc.sim import create_device
from aiotmc.sim.prologix_server import PrologixServer
from aiotmc.sim.pty_server import PtyServer
from aiotmc.transports.gpib import board


async def main() -> None:
    gpib = {5: create_device("dmm"), 7: create_device("dmm")}
    async with PtyServer(create_device("psu")) as line, PrologixServer(gpib) as adapter:
        with board(adapter.interface):  # GPIB0 is this adapter (pyvisa-py's two steps)
            async with (
                aiotmc.open(line.resource, baud_rate=115200, timeout=5) as psu,
                aiotmc.open(adapter.resource(5), timeout=5) as dmm_a,
                aiotmc.open("GPIB0::7::INSTR", timeout=5) as dmm_b,
            ):
                print(f"serial {line.path}: {await psu.query('*IDN?')}")
                async with anyio.create_task_group() as tg:  # one adapter, one bus
                    for name, dmm in (("GPIB 5", dmm_a), ("GPIB0::7", dmm_b)):
                        tg.start_soon(show, name, dmm)
                print(f"status byte of GPIB 5 by serial poll: {int(await dmm_a.read_stb())}")
                await dmm_b.write("*CLS;*ESE 1;*SRE 32")
                async with dmm_b.service_requests() as requests:
                    await dmm_b.write("*OPC")  # operation complete -> SRQ on the bus
                    event = await requests.receive()
                print(f"GPIB0::7 requested service: status byte {int(event.status):#04x}")


async def show(name: str, dmm: aiotmc.Instrument) -> None:
    print(f"{name}: {await dmm.query('*IDN?')}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args()
    anyio.run(main, backend=args.backend)
