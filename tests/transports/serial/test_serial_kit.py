"""The conformance kit over the serial transport, against the simulator on a pty."""

from __future__ import annotations

import anyio

import aiotmc
from aiotmc.sim.pty_server import PtyServer
from aiotmc.testing import CHECKS, check_transport, conformance_device


async def test_conformance_over_pty() -> None:
    device = conformance_device()
    async with PtyServer(device) as server:
        with anyio.fail_after(120):
            report = await check_transport(lambda: aiotmc.open_transport(server.resource))
    for name, stats in report.items():
        print(name, stats)
    assert list(report) == list(CHECKS)
    sweep = report["cancellation"]
    assert sweep.cancelled > 50 and sweep.completed > 10, sweep
    assert report["close"].steps > 10
