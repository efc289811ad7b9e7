"""The conformance kit over the HiSLIP client and the HiSLIP simulator, asyncio and trio."""

from __future__ import annotations

import ssl

import anyio
import pytest

import aiotmc
from aiotmc.sim.hislip_server import HislipServer
from aiotmc.testing import CHECKS, check_transport, conformance_device

from .conftest import Pki


async def test_conformance() -> None:
    device = conformance_device()
    async with HislipServer(device) as server:
        with anyio.fail_after(180):
            report = await check_transport(lambda: aiotmc.open_transport(server.resource))
    for name, stats in report.items():
        print(name, stats)
    assert list(report) == list(CHECKS)
    sweep = report["cancellation"]
    assert sweep.cancelled > 50 and sweep.completed > 10, sweep
    assert server.counters["rmt_extra"] == server.counters["id_gap"] == 0, server.counters
    assert server.strict and server.counters["strict_refused"] == 0, server.counters


async def test_query_read_stb_clear() -> None:
    device = conformance_device()
    async with HislipServer(device) as server, aiotmc.open(server.resource) as inst:
        with anyio.fail_after(20):
            for tag in range(5):
                assert await inst.query(f"ECHO? {tag}") == str(tag)
            assert await inst.read_stb() & 0x10 == 0
            await inst.clear()
            assert await inst.query("ECHO? 43") == "43"
    counters = server.counters
    assert counters["status_id_mismatch"] == counters["rmt_missing"] == 0, counters
    assert counters["rmt_extra"] == 0, counters  # RMT-delivered exactly once per answer
    assert counters["id_gap"] == 0, counters  # MessageIDs +2 apart, reset by clear


@pytest.mark.parametrize("overlapped", [False, True], ids=["synchronized", "overlapped"])
async def test_conformance_over_tls(
    pki: Pki, server_tls: tuple[ssl.SSLContext, bytes], overlapped: bool
) -> None:
    """The whole kit with both channels encrypted and a SCRAM login, either mode."""
    device = conformance_device()
    users = {"kit": "conformance"}
    options = {"tls_ca_file": pki.ca_file, "username": "kit", "password": "conformance"}
    async with HislipServer(
        device, tls=server_tls[0], require_tls=True, users=users, overlapped=overlapped
    ) as server:
        with anyio.fail_after(180):
            report = await check_transport(
                lambda: aiotmc.open_transport(server.resource, overlapped=overlapped, **options)
            )
    assert list(report) == list(CHECKS)
    sweep = report["cancellation"]
    assert sweep.cancelled > 50 and sweep.completed > 10, sweep
    assert server.counters["rmt_extra"] == server.counters["id_gap"] == 0, server.counters
    assert server.strict and server.counters["strict_refused"] == 0, server.counters
    assert server.counters["tls_failed"] == server.counters["auth_failed"] == 0
    assert server.counters["tls"] >= 2 and server.counters["auth_ok"] >= 1
