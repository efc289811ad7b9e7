"""Agent presence: in a JetStream key-value bucket with a TTL (an agent that dies vanishes
within it), or by asking the agents where the server has no JetStream."""

from __future__ import annotations

from pathlib import Path

import anyio

from aiotmc.agent import Agent, AgentInstrument, live_agents
from aiotmc.sim.devices import create_device
from aiotmc.transports.nats import NatsConnection, NatsServer

from ..nats_server import running_nats


def agent(port: int, name: str) -> Agent:
    device = create_device("dmm")
    instruments = [AgentInstrument("dmm", f"SIM::dmm::{name}", {"device": device})]
    return Agent(NatsServer("127.0.0.1", port), name, instruments, heartbeat=0.2, presence_ttl=1.0)


async def test_a_stopped_agent_leaves_the_presence_bucket(tmp_path: Path) -> None:
    with running_nats(tmp_path, "-js", "-sd", str(tmp_path / "js")) as server:
        nc = await NatsConnection.connect(NatsServer("127.0.0.1", server.port))
        try:
            async with anyio.create_task_group() as outer:
                async with anyio.create_task_group() as tg:
                    await tg.start(agent(server.port, "p1").run)
                    await outer.start(agent(server.port, "p2").run)
                    live = await live_agents(nc)
                    assert set(live) == {"p1", "p2"}
                    assert live["p1"]["instruments"]["dmm"]["kind"] == "sim"
                    tg.cancel_scope.cancel()  # p1 stops: no goodbye, its entry expires
                with anyio.fail_after(10):  # TTL 1 s; bounded poll until it is applied
                    for _ in range(200):
                        if set(await live_agents(nc)) == {"p2"}:
                            break
                        await anyio.sleep(0.05)
                assert set(await live_agents(nc)) == {"p2"}
                outer.cancel_scope.cancel()
        finally:
            await nc.aclose()


async def test_without_jetstream_the_agents_answer_discovery(tmp_path: Path) -> None:
    with running_nats(tmp_path) as server:
        nc = await NatsConnection.connect(NatsServer("127.0.0.1", server.port))
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(agent(server.port, "d1").run)
                await tg.start(agent(server.port, "d2").run)
                live = await live_agents(nc, wait=0.5)
                assert set(live) == {"d1", "d2"}
                assert set(live["d2"]["instruments"]) == {"dmm"}
                tg.cancel_scope.cancel()
        finally:
            await nc.aclose()
