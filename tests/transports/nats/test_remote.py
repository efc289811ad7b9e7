"""Remote instruments through a real nats-server and an in-process agent, both backends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from itertools import count

import anyio
import pytest

import aiotmc
from aiotmc.agent import Agent, AgentInstrument
from aiotmc.sim.devices import create_device
from aiotmc.testing import CHECKS, check_transport, conformance_device
from aiotmc.transports.nats import NatsServer

from ...nats_server import RunningNats

_AGENTS = count(1)


@asynccontextmanager
async def serving(nats: RunningNats, **devices: object) -> AsyncIterator[str]:
    """An agent serving ``devices`` (name -> SimDevice); yields the agent's name."""
    name = f"agent{next(_AGENTS)}"
    instruments = [
        AgentInstrument(key, f"SIM::dmm::{key}", {"device": device})
        for key, device in devices.items()
    ]
    agent = Agent(NatsServer("127.0.0.1", nats.port), name, instruments)
    async with anyio.create_task_group() as tg:
        await tg.start(agent.run)
        yield name
        tg.cancel_scope.cancel()


async def test_query_through_an_agent(nats_server: RunningNats) -> None:
    async with (
        serving(nats_server, dmm=create_device("dmm")) as agent,
        aiotmc.open(f"{nats_server.url}/{agent}/dmm", timeout=5) as inst,
    ):
        idn = await inst.query("*IDN?")
        assert "DMM" in idn.upper()
        assert inst.resource == f"nats://127.0.0.1:{nats_server.port}/{agent}/dmm"
        value = float(await inst.query("MEAS:VOLT:DC?"))
        assert value == value  # a number, not NaN


async def test_unknown_instrument_is_a_typed_error(nats_server: RunningNats) -> None:
    async with serving(nats_server, dmm=create_device("dmm")) as agent:
        with anyio.fail_after(10), pytest.raises(aiotmc.ResourceNotFoundError, match="nosuch"):
            async with aiotmc.open(f"{nats_server.url}/{agent}/nosuch", connect_timeout=3):
                pass


async def test_conformance_over_nats(nats_server: RunningNats) -> None:
    async with serving(nats_server, kit=conformance_device()) as agent:
        resource = f"{nats_server.url}/{agent}/kit"
        with anyio.fail_after(240):
            report = await check_transport(lambda: aiotmc.open_transport(resource))
    for name, stats in report.items():
        print(name, stats)
    assert list(report) == list(CHECKS)
    sweep = report["cancellation"]
    assert sweep.cancelled > 50 and sweep.completed > 10, sweep
