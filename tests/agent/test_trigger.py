"""One trigger instant across agents: every instrument triggered, the skew reported."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
import pytest

import aiotmc
from aiotmc.agent import Agent, AgentInstrument
from aiotmc.agent.trigger import trigger_together
from aiotmc.sim.devices import create_device
from aiotmc.transports.nats import NatsServer

from ..nats_server import RunningNats


@pytest.fixture(scope="module")
def nats(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from ..nats_server import running_nats

    with running_nats(tmp_path_factory.mktemp("nats")) as server:
        yield server


@asynccontextmanager
async def agents(
    nats: RunningNats, hosts: int, per_host: int
) -> AsyncIterator[dict[str, list[float]]]:
    """``hosts`` agents with ``per_host`` simulated DMMs each; yields resource -> the Unix
    times at which each device saw a trigger."""
    seen: dict[str, list[float]] = {}
    async with anyio.create_task_group() as tg:
        for h in range(hosts):
            instruments = []
            for i in range(per_host):
                device = create_device("dmm")
                resource = f"{nats.url}/trig{h}/dmm{i}"
                seen[resource] = []
                device.handle_trigger = lambda r=resource: seen[r].append(time.time())  # type: ignore[method-assign]
                instruments.append(
                    AgentInstrument(f"dmm{i}", f"SIM::dmm::t{h}x{i}", {"device": device})
                )
            await tg.start(Agent(NatsServer("127.0.0.1", nats.port), f"trig{h}", instruments).run)
        yield seen
        tg.cancel_scope.cancel()


async def test_instruments_of_several_agents_trigger_at_one_instant(nats: RunningNats) -> None:
    async with agents(nats, hosts=3, per_host=2) as seen, AsyncExitStack() as stack:
        insts = [await stack.enter_async_context(aiotmc.open(r, timeout=5)) for r in seen]
        before = time.time()
        report = await trigger_together(insts, lead=0.1)
        assert report.scheduled >= before + 0.1
        assert set(report.fired) == set(seen)
        for resource, times in seen.items():
            assert len(times) == 1, resource  # each device triggered exactly once
            assert times[0] >= report.scheduled
            assert report.fired[resource] >= report.scheduled
        assert 0 <= report.skew < 0.05, report  # loose here: the benchmark reports the figure
        assert report.lateness >= 0


async def test_only_remote_instruments_can_be_triggered_together() -> None:
    async with aiotmc.open("SIM::dmm") as local:
        with pytest.raises(aiotmc.UnsupportedOperation, match="not a remote"):
            await trigger_together([local])
