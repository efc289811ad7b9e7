"""Wait for operation complete by SRQ instead of polling, on a USB instrument.

python examples/usb_srq.py                                     # emulated USB scope, in-process
python examples/usb_srq.py USB0::0x0957::0x1796::MY123::INSTR  # a USB488 instrument
python examples/usb_srq.py --backend trio

The status model does the waiting: ``*ESE 1`` lets the OPC bit of the event status
register set ESB in the status byte, and ``*SRE 32`` makes ESB request service. The
``*OPC`` sent after the operation sets OPC when it completes; the instrument then sends a
USB488 SRQ notification on its interrupt-IN endpoint, which aiotmc's interrupt reader
hands to ``inst.service_requests()`` subscribers. No ``*OPC?`` query blocks the bus while
the instrument works, and no loop polls ``*STB?``.

Without a resource the example builds the whole USB stack in-process: the emulated
USBTMC/USB488 function of a simulated scope behind ``FakeUsbPort`` (the same device code
the umockdev tests put below real libusb), the real ``UsbtmcTransport`` and an
``aiotmc.Instrument``, so it runs anywhere.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

import aiotmc

EMULATED = "USB0::0x0957::0x1796::EMULATED::INSTR"


@asynccontextmanager
async def open_emulated_usb_scope() -> AsyncIterator[aiotmc.Instrument]:
    """An Instrument over the in-process USB stack (no libusb, no hardware)."""
    from aiotmc.sim import create_device
    from aiotmc.sim.fake_port import FakeUsbPort
    from aiotmc.sim.usbtmc_device import UsbtmcFunction
    from aiotmc.transports.usbtmc import open_usbtmc_transport

    function = UsbtmcFunction(create_device("scope", acquisition_time=0.2), serial="EMULATED")
    transport_cm = open_usbtmc_transport(FakeUsbPort(function), resource=EMULATED)
    async with transport_cm as transport, aiotmc.Instrument(transport, timeout=5) as inst:
        yield inst


def bits(stb: aiotmc.StatusByte) -> str:
    names = [flag.name for flag in type(stb) if flag and flag in stb and flag.name]
    return f"0x{int(stb):02X} ({'|'.join(names) or 'none'})"


async def main(resource: str | None, operation: str, trigger: bool) -> None:
    opened = open_emulated_usb_scope() if resource is None else aiotmc.open(resource, timeout=5)
    async with opened as inst:
        print(f"{inst.resource}: {await inst.query('*IDN?')}")
        if not inst.transport.info.capabilities.srq:
            raise SystemExit(f"{inst.resource} has no USB488 interrupt endpoint (no SRQ)")
        await inst.write("*CLS;*ESE 1;*SRE 32")  # OPC -> ESB -> request service
        async with inst.service_requests() as events:  # subscribe before starting
            started = time.perf_counter()
            await inst.write(f"{operation};*OPC")
            if trigger:
                await inst.trigger()  # USB488 TRIGGER message (a bus trigger)
            with anyio.fail_after(30):
                event = await events.receive()  # sleeps: nothing is polled
            waited = time.perf_counter() - started
        print(f"SRQ after {waited * 1000:.0f} ms: status byte {bits(event.status)}")
        esr = int(await inst.query("*ESR?"))  # reading the ESR clears it (and ESB)
        if not esr & 0x01:
            raise SystemExit(f"SRQ without operation complete (*ESR? = {esr})")
        stb = await inst.read_stb()  # USB488 READ_STATUS_BYTE; clears RQS
        print(f"operation complete (SRQ): *ESR? = {esr}; serial poll {bits(stb)}")
        await inst.write("*SRE 0;*ESE 0")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("resource", nargs="?", help="USB VISA name (default: emulated scope)")
    parser.add_argument(
        "--operation",
        default=":TRIGger:SOURce BUS;:SINGle",
        help="the commands that start the operation (default: %(default)s)",
    )
    parser.add_argument(
        "--no-trigger", action="store_true", help="do not send a USB488 bus trigger after it"
    )
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args()
    anyio.run(main, args.resource, args.operation, not args.no_trigger, backend=args.backend)
