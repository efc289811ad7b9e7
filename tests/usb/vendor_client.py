"""Client side of the umockdev vendor test: vendor messages and control transfers through
real libusb (a subprocess under the umockdev preload, like ``lifecycle_client``)::

    python -m tests.usb.vendor_client --backend trio --driver thread

Prints ``RESULT <json>`` on success; exits 1 with a traceback on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from typing import Any

import anyio

import aiotmc
from aiotmc.sim.usbtmc_device import VENDOR_REGISTER
from aiotmc.transports.usbtmc import MAX_CONTROL_LENGTH, UsbtmcTransport
from tests.usb.lifecycle_client import DeviceControl


def payload(size: int) -> bytes:
    return bytes((i * 7 + 3) & 0xFF for i in range(size))


async def run(driver: str) -> dict[str, Any]:
    device = json.loads(os.environ["AIOTMC_UMOCKDEV_INFO"])["devices"][0]
    name = f"USB0::0x{device['vid']:04X}::0x{device['pid']:04X}::{device['serial']}::INSTR"
    sizes = [1, 3, 500, 512, 4096, 300_000]
    with anyio.fail_after(30):
        async with aiotmc.open(name, driver=driver, timeout=10) as inst:
            t = inst.transport
            assert isinstance(t, UsbtmcTransport)
            for size in sizes:
                data = payload(size)
                await t.vendor_write(data)
                got = await t.vendor_read(size)
                assert got == data, (size, len(got))
                assert (await inst.query("*IDN?")).startswith("aiotmc,")
            big = payload(MAX_CONTROL_LENGTH)
            await t.control_transfer(0x41, VENDOR_REGISTER, 3, 0, big)
            assert await t.control_transfer(0xC1, VENDOR_REGISTER, 3, 0, MAX_CONTROL_LENGTH) == big
            try:
                await t.control_transfer(0xC1, 99, 0, 0, 8)
            except aiotmc.UsbStallError:
                pass
            else:
                raise AssertionError("an unknown vendor request did not stall")
            control = DeviceControl(os.environ["AIOTMC_UMOCKDEV_CONTROL"])
            try:
                await control("@0 latency 0.2")  # every URB completes 200 ms late
                with anyio.move_on_after(0.05) as scope:  # cancelled mid vendor read: aborted
                    await t.vendor_read(16)
                assert scope.cancelled_caught
                await control("@0 latency 0")
            finally:
                await control.aclose()
            assert (await inst.query("*IDN?")).startswith("aiotmc,")
            return {"sizes": sizes, "recoveries": t.recoveries}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    parser.add_argument("--driver", default="thread", choices=["thread", "pollfd", "auto"])
    args = parser.parse_args(argv)
    try:
        result = anyio.run(run, args.driver, backend=args.backend)
    except BaseException:
        traceback.print_exc()
        return 1
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
