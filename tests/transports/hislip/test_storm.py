"""HiSLIP under the cancellation storm and with service requests, at the Instrument level."""

from __future__ import annotations

import random
import ssl
from contextlib import AsyncExitStack

import anyio
import pytest

import aiotmc
from aiotmc.sim.hislip_server import HislipServer
from aiotmc.testing import conformance_device
from aiotmc.testing.storm import Storm

from ...hardening.storm import iterations
from .conftest import Pki

SEED = 20261206


@pytest.mark.parametrize("overlapped", [False, True], ids=["synchronized", "overlapped"])
async def test_hislip_storm(overlapped: bool) -> None:
    device = conformance_device()
    rng = random.Random(SEED)
    async with HislipServer(device, overlapped=overlapped) as server:

        async def opener(stack: AsyncExitStack) -> aiotmc.Instrument:
            inst = await stack.enter_async_context(
                aiotmc.open(server.resource, timeout=5, overlapped=overlapped)
            )
            assert inst.transport.info.details["mode"] == (
                "overlapped" if overlapped else "synchronized"
            )
            return inst

        storm = Storm(
            rng,
            opener,
            block_sizes=(64, 100_000, 2_000_000),
            upload_sizes=(1000, 3_000_000),
            latency=lambda delay: device.delay_next_responses(delay),
        )
        with anyio.fail_after(90):
            report = await storm.run(iterations(600))
        print(report.as_dict(), server.counters)
        assert report.outcomes["cancelled"] + report.outcomes["fail_after"] > 50
        assert not report.typed_errors, report.typed_errors
        with anyio.fail_after(5):
            await server.wait_sessions(0)  # every session ends when its instrument closes


@pytest.mark.parametrize("overlapped", [False, True], ids=["synchronized", "overlapped"])
async def test_hislip_storm_over_tls(
    pki: Pki, server_tls: tuple[ssl.SSLContext, bytes], overlapped: bool
) -> None:
    """A smaller storm with both channels encrypted: an interrupted send must never leave
    half a TLS record, nor a late answer reach the next query."""
    device = conformance_device()
    rng = random.Random(SEED + 1)
    async with HislipServer(
        device, tls=server_tls[0], require_tls=True, overlapped=overlapped
    ) as server:

        async def opener(stack: AsyncExitStack) -> aiotmc.Instrument:
            return await stack.enter_async_context(
                aiotmc.open(
                    server.resource, timeout=5, overlapped=overlapped, tls_ca_file=pki.ca_file
                )
            )

        storm = Storm(
            rng,
            opener,
            block_sizes=(64, 100_000, 1_000_000),
            upload_sizes=(1000, 1_000_000),
            latency=lambda delay: device.delay_next_responses(delay),
        )
        with anyio.fail_after(90):
            report = await storm.run(iterations(200))
        print(report.as_dict(), server.counters)
        assert report.outcomes["cancelled"] + report.outcomes["fail_after"] > 15
        assert not report.typed_errors, report.typed_errors
        assert server.counters["tls_failed"] == 0, server.counters
        with anyio.fail_after(5):
            await server.wait_sessions(0)


async def test_service_requests_reach_the_instrument_and_rearm() -> None:
    device = conformance_device()
    async with HislipServer(device) as server, aiotmc.open(server.resource, timeout=5) as inst:
        with anyio.fail_after(10):
            async with inst.service_requests() as events:
                for _ in range(3):  # each SRQ is re-armed by the reader's status query
                    await inst.write("*CLS;*ESE 1;*SRE 32;*OPC")
                    event = await events.receive()
                    assert int(event.status) & 0x60 == 0x60, event
                    await inst.write("*SRE 0;*ESE 0;*CLS")
            assert await inst.query("ECHO? 9") == "9"
