"""An agent that also measures: a gateway configuration's instruments served over NATS
and read on schedule, their readings sent to the measurement stream.

``aiotmc agent --config bench1.toml`` loads a gateway configuration
(docs/gateway.md): its ``[[instruments]]`` are opened once and shared by the agent
(remote operations) and the gateway's sources (channels), which take turns on each
instrument's lock; its ``[[sinks]]`` normally hold one ``type = "jetstream"`` sink, so
that readings go through the local spool (nothing lost while the NATS server is away)
into the stream the collector consumes. The gateway's ``host`` and ``id`` become the
agent's name, which is unique on the bus, so that readings' keys are unique too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

import anyio
from anyio.abc import TaskStatus

from ..gateway.app import Gateway
from ..gateway.config import GatewayConfig
from ..instrument import Instrument
from ..transports.nats.connection import NatsServer
from . import Agent, AgentInstrument

__all__ = ["agent_instruments", "run_measuring_agent"]

#: The agent's spool commits at most this often (seconds) unless ``[gateway]
#: spool_commit_interval`` says otherwise: under load readings reach the stream at most
#: this much later, in a few large transactions rather than one per reading.
COMMIT_INTERVAL: Final = 0.02


def agent_instruments(config: GatewayConfig) -> list[AgentInstrument]:
    """The configuration's instruments, opened to heal by themselves (``reconnect``)."""
    return [
        AgentInstrument(
            item.name, item.resource, {"timeout": item.timeout, "reconnect": True, **item.options}
        )
        for item in config.instruments
    ]


async def run_measuring_agent(
    config: GatewayConfig,
    servers: NatsServer | Sequence[NatsServer],
    name: str,
    *,
    extra: Sequence[AgentInstrument] = (),
    heartbeat: float = 2.0,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve and measure until cancelled; ``started`` once both are running."""
    settings = dataclasses.replace(config.gateway, host=name, id=name)
    config = dataclasses.replace(config, gateway=settings)
    agent = Agent(servers, name, [*agent_instruments(config), *extra], heartbeat=heartbeat)
    async with anyio.create_task_group() as tg:
        await tg.start(agent.run)
        by_resource = {item.resource: agent.opened[item.name] for item in config.instruments}

        @asynccontextmanager
        async def shared(resource: str, **_options: Any) -> AsyncIterator[Instrument]:
            yield by_resource[resource]  # the agent's: opened once, closed by the agent

        gateway = Gateway(config, opener=shared)
        # hundreds of channels each on its own schedule: commit the spool every
        # COMMIT_INTERVAL, not at every reading (a fraction of the agent's CPU per reading)
        if settings.spool_commit_interval is None:
            gateway.spool.commit_interval = COMMIT_INTERVAL
        async with gateway:
            task_status.started()
            await anyio.sleep_forever()
