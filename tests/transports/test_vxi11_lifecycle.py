"""The close matrix of issue 14 for VXI-11 (with its interrupt-channel background task):
open and close in different tasks and scopes, both backends."""

from __future__ import annotations

import math

import anyio
import pytest

import aiotmc
from aiotmc.sim.devices import create_device
from aiotmc.sim.vxi11_server import Vxi11Server

from ..lifecycle_cases import MODES, Tally, in_new_task, run_cell


@pytest.mark.parametrize("mode", MODES)
async def test_close_matrix(mode: str) -> None:
    device = create_device("dmm")
    tally = Tally()

    async def stall(inst: aiotmc.Instrument) -> None:
        device.latency = math.inf

    with anyio.fail_after(30):
        async with Vxi11Server(device) as server:
            await run_cell(mode, lambda: aiotmc.open(server.resource()), tally, stall=stall)
    assert tally.escaped_cancellations == 0
    assert tally.runtime_errors == 0
    assert tally.cells == 1


async def test_close_from_another_task_ends_srq_subscriptions() -> None:
    device = create_device("dmm")
    async with Vxi11Server(device) as server:
        cm = aiotmc.open(server.resource())
        inst = await in_new_task(cm.__aenter__)
        assert inst.transport.srq is not None
        received: list[object] = []
        ended = anyio.Event()
        subscribed = anyio.Event()

        async def subscriber() -> None:
            async with inst.service_requests() as events:
                subscribed.set()
                async for event in events:
                    received.append(event)
            ended.set()

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(subscriber)
                await subscribed.wait()
                await in_new_task(lambda: cm.__aexit__(None, None, None))
                await ended.wait()
        assert inst.closed and received == []
