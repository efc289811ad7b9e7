"""The conformance kit over every in-process attachment, on asyncio and trio."""

from __future__ import annotations

import anyio
import pytest

from aiotmc.testing import CHECKS, check_transport, conformance_device

from ..conftest import TRANSPORTS, open_link


@pytest.mark.parametrize("via", TRANSPORTS)
async def test_conformance(via: str) -> None:
    device = conformance_device()
    async with open_link(device, via) as opener:
        with anyio.fail_after(120):
            report = await check_transport(opener)
    for name, stats in report.items():
        print(name, stats)
    assert list(report) == list(CHECKS)
    sweep = report["cancellation"]
    assert sweep.cancelled > 50 and sweep.completed > 10, sweep
    assert report["close"].steps > 10
