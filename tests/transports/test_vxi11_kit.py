"""The VXI-11 client through the conformance kit and the cancellation storm, against the
VXI-11 simulator on loopback (the same engines every other transport passes)."""

from __future__ import annotations

import random
from contextlib import AsyncExitStack

import anyio
import pytest

import aiotmc
from aiotmc.sim.vxi11_server import Vxi11Server
from aiotmc.testing import CHECKS, check_transport, conformance_device

from ..hardening.storm import Storm, StormReport, iterations
from ..hardening.support import Resources

SEED = 20261206


@pytest.mark.parametrize("pipeline", [False, True])
async def test_conformance(pipeline: bool) -> None:
    device = conformance_device()
    async with Vxi11Server(device) as server:
        with anyio.fail_after(120):
            report = await check_transport(
                lambda: aiotmc.open_transport(server.resource(), pipeline=pipeline)
            )
    assert list(report) == list(CHECKS)
    sweep = report["cancellation"]
    assert sweep.cancelled > 50 and sweep.completed > 10, sweep
    assert report["close"].steps > 10


@pytest.mark.parametrize("pipeline", [False, True])
async def test_storm(pipeline: bool) -> None:
    device = conformance_device()
    rng = random.Random(SEED + pipeline)
    async with Vxi11Server(device, max_message_size=8 << 20) as server:
        async with aiotmc.open(server.resource()) as inst:  # warm up (resolver thread...)
            assert await inst.query("ECHO? 0") == "0"
        before = Resources.now()

        async def opener(stack: AsyncExitStack) -> aiotmc.Instrument:
            return await stack.enter_async_context(
                aiotmc.open(server.resource(), timeout=5, pipeline=pipeline)
            )

        storm = Storm(
            rng,
            opener,
            block_sizes=(64, 100_000, 2_000_000),
            upload_sizes=(1000, 3_000_000),
            latency=lambda delay: device.delay_next_responses(delay),
        )
        with anyio.fail_after(90):
            report = await storm.run(iterations(1500))
        print(report.as_dict())
        assert report.outcomes["cancelled"] + report.outcomes["fail_after"] > 100
        assert not report.typed_errors, report.typed_errors
        with anyio.fail_after(5):
            await server.wait_connections(0)
    before.assert_no_growth(Resources.now())


CANCELLATIONS_PER_BACKEND = 5_000  #: x 2 backends: 10,000 stopped operations per CI run


def stopped(report: StormReport) -> int:
    """Operations stopped by a cancellation of some kind (not completed)."""
    return report.iterations - report.outcomes["completed"]


@pytest.mark.timeout(120)
async def test_cancellation_storm_thousands_per_backend() -> None:
    """At least 5,000 operations stopped at random points on each backend (the storm
    engine's mix of ways to stop them, links opened with and without pipelining), in
    bounded rounds; every answer is its own, nothing leaks."""
    device = conformance_device()
    rng = random.Random(SEED + 2)
    async with Vxi11Server(device, max_message_size=8 << 20) as server:
        async with aiotmc.open(server.resource()) as inst:  # warm up (resolver thread...)
            assert await inst.query("ECHO? 0") == "0"
        before = Resources.now()

        async def opener(stack: AsyncExitStack) -> aiotmc.Instrument:
            pipeline = rng.random() < 0.5
            return await stack.enter_async_context(
                aiotmc.open(server.resource(), timeout=5, pipeline=pipeline)
            )

        storm = Storm(
            rng,
            opener,
            block_sizes=(64, 20_000, 200_000),
            upload_sizes=(1000, 200_000),
            latency=lambda delay: device.delay_next_responses(delay),
        )
        target = iterations(CANCELLATIONS_PER_BACKEND)
        with anyio.fail_after(100):
            for _ in range(40):  # at most 40 x 500 iterations; a new link each round
                report = await storm.run(500)
                if stopped(report) >= target:
                    break
        print(report.as_dict())
        assert stopped(report) >= target, report.as_dict()
        assert not report.typed_errors, report.typed_errors
        with anyio.fail_after(5):
            await server.wait_connections(0)
    before.assert_no_growth(Resources.now())
