"""Cancellation storms over the serial transport (simulator on a pty) and over a Prologix
adapter (simulator on TCP): after every stopped operation the next query gets its own
answer, and nothing is left behind."""

from __future__ import annotations

import random
from contextlib import AsyncExitStack

import anyio

import aiotmc
from aiotmc.sim.prologix_server import PrologixServer
from aiotmc.sim.pty_server import PtyServer
from aiotmc.testing import conformance_device

from .storm import Storm, iterations

SEED = 20261206


async def test_serial_storm() -> None:
    device = conformance_device()
    rng = random.Random(SEED)
    async with PtyServer(device) as server:

        async def opener(stack: AsyncExitStack) -> aiotmc.Instrument:
            return await stack.enter_async_context(
                aiotmc.open(server.resource, timeout=5, settle=0.02)
            )

        storm = Storm(
            rng,
            opener,
            block_sizes=(64, 20_000),
            upload_sizes=(1000, 20_000),
            latency=lambda delay: device.delay_next_responses(delay),
        )
        with anyio.fail_after(90):
            report = await storm.run(iterations(300))
    print(report.as_dict())
    assert report.outcomes["cancelled"] + report.outcomes["fail_after"] > 20
    assert not report.typed_errors, report.typed_errors


async def test_prologix_storm() -> None:
    device = conformance_device()
    rng = random.Random(SEED + 1)
    async with PrologixServer({3: conformance_device(), 12: device}) as server:

        async def opener(stack: AsyncExitStack) -> aiotmc.Instrument:
            return await stack.enter_async_context(aiotmc.open(server.resource(12), timeout=5))

        storm = Storm(
            rng,
            opener,
            block_sizes=(64, 100_000),
            upload_sizes=(1000, 100_000),
            latency=lambda delay: device.delay_next_responses(delay),
        )
        with anyio.fail_after(90):
            report = await storm.run(iterations(500))
        print(report.as_dict())
        assert server.connections <= 1
    assert report.outcomes["cancelled"] + report.outcomes["fail_after"] > 50
    assert not report.typed_errors, report.typed_errors


async def test_prologix_serial_storm() -> None:
    """The same over a GPIB-USB adapter on a pty: resynchronised by ``++ver``, not by a
    new connection."""
    device = conformance_device()
    rng = random.Random(SEED + 2)
    async with PrologixServer({3: conformance_device(), 12: device}, pty=True) as server:

        async def opener(stack: AsyncExitStack) -> aiotmc.Instrument:
            return await stack.enter_async_context(aiotmc.open(server.resource(12), timeout=5))

        storm = Storm(
            rng,
            opener,
            block_sizes=(64, 20_000),
            upload_sizes=(1000, 20_000),
            latency=lambda delay: device.delay_next_responses(delay),
        )
        with anyio.fail_after(90):
            report = await storm.run(iterations(200))
        print(report.as_dict())
    assert report.outcomes["cancelled"] + report.outcomes["fail_after"] > 20
    assert not report.typed_errors, report.typed_errors
