"""The conformance kit inside the kernel-tier guest.

``check_transport`` over ``aiotmc.open_transport("USB0::...")`` through real xHCI +
usbcore + usbfs + libusb + python-libusb1, against the kit's device
(:data:`aiotmc.testing.USB_FACTORY`) plugged by the host's hub; on asyncio and trio
(the root conftest's ``anyio_backend``), with both libusb event drivers. Every reopen
detaches the kernel's usbtmc driver and gives it back, as on a desktop.
"""

from __future__ import annotations

import dataclasses
import itertools
import time

import anyio
import pytest

import aiotmc
from aiotmc.testing import USB_FACTORY, KitOptions, check_transport

from .conftest import record
from .link import HostLink, find_device, wait_for

# Smaller than the defaults: Python runs under TCG here, a USB transfer costs milliseconds.
OPTIONS = KitOptions(
    step_timeout=30.0,
    timeout_margin=10.0,
    block_sizes=(1, 512, 4096, 100_003),
    cancel_block_size=20_000,
    max_steps=1000,
)
_serials = itertools.count(1)


@pytest.fixture(params=["thread", "pollfd"])
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.timeout(280)
async def test_conformance_kit(plugged: HostLink, driver: str, anyio_backend: str) -> None:
    serial = f"KIT{next(_serials):04d}"
    plugged.unplug()
    plugged.request("plug", factory=USB_FACTORY, options={"serial": serial})
    device = wait_for(lambda: find_device(serial), 20.0, f"device {serial}")
    plugged.current = device
    resource = f"USB0::0x0957::0x1796::{serial}::INSTR"

    def open_link() -> object:
        return aiotmc.open_transport(resource, driver=driver)

    started = time.perf_counter()
    with anyio.fail_after(260):
        report = await check_transport(open_link, options=OPTIONS)  # type: ignore[arg-type]
    elapsed = time.perf_counter() - started
    assert report["cancellation"].cancelled > 20, report["cancellation"]
    record(
        f"conformance_kit[{anyio_backend},{driver}]",
        {"seconds": round(elapsed, 1), "cancellation": dataclasses.asdict(report["cancellation"])},
    )
