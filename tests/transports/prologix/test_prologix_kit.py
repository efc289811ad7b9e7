"""The conformance kit over the Prologix transport, against the adapter simulator."""

from __future__ import annotations

import anyio

import aiotmc
from aiotmc.sim.devices import create_device
from aiotmc.sim.prologix_server import PrologixServer
from aiotmc.testing import CHECKS, check_transport, conformance_device


async def test_conformance_over_prologix() -> None:
    devices = {5: create_device("dmm"), 12: conformance_device(), 22: create_device("psu")}
    async with PrologixServer(devices) as server:
        with anyio.fail_after(150):
            report = await check_transport(lambda: aiotmc.open_transport(server.resource(12)))
    for name, stats in report.items():
        print(name, stats)
    assert list(report) == list(CHECKS)
    sweep = report["cancellation"]
    assert sweep.cancelled > 50 and sweep.completed > 10, sweep
    assert report["close"].steps > 10


async def test_conformance_over_prologix_on_a_serial_line() -> None:
    """The same adapter as a GPIB-USB one: ``PRLGX-ASRL`` on a pty."""
    devices = {5: create_device("dmm"), 12: conformance_device()}
    async with PrologixServer(devices, pty=True) as server:
        with anyio.fail_after(240):
            report = await check_transport(lambda: aiotmc.open_transport(server.resource(12)))
    for name, stats in report.items():
        print(name, stats)
    assert list(report) == list(CHECKS)
    assert report["cancellation"].cancelled > 50
