"""``aiotmc agent``: serve this host's instruments to other hosts through a NATS server.

Each instrument (any resource aiotmc opens) becomes ``nats://server/<agent>/<name>`` for
``aiotmc.open`` anywhere on the bus (:mod:`aiotmc.transports.nats`). The agent announces
itself with a heartbeat on ``aiotmc.presence.<agent>`` and answers ``aiotmc.discover``.
It runs on asyncio and trio alike (aiotmc's own anyio NATS client). See docs/distributed.md.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskStatus

from .._exceptions import AiotmcError, ConnectError, ConnectionLostError
from .._open import open as aiotmc_open
from ..instrument import Instrument
from ..protocol import remote as wire
from ..transports.nats.connection import NatsConnection, NatsServer
from ..transports.nats.jetstream import JetStream, KeyValue
from .serve import InstrumentService

__all__ = ["PRESENCE_BUCKET", "Agent", "AgentInstrument", "InstrumentService", "live_agents"]

#: The longest pause between two attempts to reach the NATS server again (seconds).
MAX_RECONNECT_WAIT = 2.0

#: The JetStream key-value bucket of agent presence (entries expire after the TTL).
PRESENCE_BUCKET = "aiotmc_presence"

_log = logging.getLogger("aiotmc.agent")


@dataclass(frozen=True, slots=True)
class AgentInstrument:
    """One instrument an agent serves: its name on the bus and its local resource."""

    name: str
    resource: str
    options: Mapping[str, Any] = field(default_factory=dict)


class Agent:
    """Serves ``instruments`` as agent ``name`` on the NATS ``server``.

    ``async with Agent(...) as agent:`` connects, opens every instrument and serves until
    the block ends; or ``await agent.run()`` to serve until cancelled.
    """

    def __init__(
        self,
        server: NatsServer | Sequence[NatsServer],
        name: str,
        instruments: list[AgentInstrument],
        *,
        heartbeat: float = 2.0,
        reconnect_wait: float = 0.2,
        presence_ttl: float = 10.0,
        connect_timeout: float = 2.0,
    ) -> None:
        servers = [server] if isinstance(server, NatsServer) else list(server)
        if not servers:
            raise ValueError("an agent needs a NATS server")
        self.server = servers[0]
        #: The servers to try, in order: those given, then the cluster nodes they name.
        self.servers = servers
        self.name = name
        self.instruments = instruments
        self.heartbeat = heartbeat
        self.reconnect_wait = reconnect_wait
        self.presence_ttl = presence_ttl
        #: Seconds to wait for each server when connecting (then the next is tried).
        self.connect_timeout = connect_timeout
        self._started = False
        self._presence: KeyValue | None = None
        self.services: dict[str, InstrumentService] = {}
        #: The local instruments, open while :meth:`run` runs (name -> Instrument).
        self.opened: dict[str, Instrument] = {}

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; ``task_status.started()`` once every instrument is served.

        The instruments stay open while the NATS server is away: the agent reconnects
        with backoff (``reconnect_wait``, doubling up to 10 s) and serves again.
        """
        async with AsyncExitStack() as stack:
            for item in self.instruments:
                self.opened[item.name] = await stack.enter_async_context(
                    aiotmc_open(item.resource, **dict(item.options))
                )
            self._started = False
            wait = self.reconnect_wait
            while True:
                try:
                    nc = await NatsConnection.connect_any(
                        self.servers,
                        timeout=self.connect_timeout,
                        name=f"aiotmc agent {self.name}",
                    )
                except ConnectError as exc:
                    if not self._started:
                        raise
                    _log.warning("agent %s: %s; again in %.1f s", self.name, exc, wait)
                    await anyio.sleep(wait)
                    wait = min(wait * 2, MAX_RECONNECT_WAIT)
                    continue
                wait = self.reconnect_wait
                self.server = nc.server
                _log.info("agent %s: connected to %r", self.name, nc.server)
                for node in nc.cluster():
                    if node not in self.servers:
                        self.servers.append(node)
                try:
                    self.services = {
                        name: InstrumentService(nc, self.name, name, inst)
                        for name, inst in self.opened.items()
                    }
                    await self._serve(nc, task_status if not self._started else None)
                finally:
                    with anyio.CancelScope(shield=True):
                        await nc.aclose()
                _log.warning("agent %s: lost the NATS server; reconnecting", self.name)

    async def _serve(self, nc: NatsConnection, task_status: TaskStatus[None] | None) -> None:
        """Serve on ``nc`` until it is lost."""
        try:
            async with anyio.create_task_group() as tg:
                for service in self.services.values():
                    tg.start_soon(service.serve, tg)
                    tg.start_soon(service.forward_srqs)
                self._presence = await _presence_bucket(nc, self.presence_ttl)
                discover = await nc.subscribe(wire.DISCOVER_SUBJECT, maxsize=100)
                tg.start_soon(self._answer_discovery, nc, discover)
                tg.start_soon(_unsubscribe_at_exit, discover)
                await nc.flush()  # our subscriptions are in place at the server
                await self._announce(nc)
                if task_status is not None:
                    task_status.started()
                    self._started = True
                _log.info(
                    "agent %s serving %s on nats://%s:%d",
                    self.name,
                    ", ".join(self.services),
                    self.server.host,
                    self.server.port,
                )
                while not nc.closed:
                    with anyio.move_on_after(self.heartbeat):
                        await nc.wait_closed()
                    if not nc.closed:
                        await self._announce(nc)
                tg.cancel_scope.cancel()
        except* (ConnectionLostError, anyio.BrokenResourceError, anyio.ClosedResourceError) as lost:
            # the connection went away in setup, a heartbeat or a service: connect again
            _log.warning("agent %s: %r", self.name, lost.exceptions[0])

    def presence(self) -> dict[str, Any]:
        """The heartbeat / discovery payload."""
        return {
            "agent": self.name,
            "time": time.time(),
            "heartbeat": self.heartbeat,
            "instruments": {name: s.description() for name, s in self.services.items()},
        }

    async def _announce(self, nc: NatsConnection) -> None:
        payload = json.dumps(self.presence()).encode()
        await nc.publish(wire.presence_subject(self.name), payload)
        if self._presence is not None:
            try:
                await self._presence.put(self.name, payload)
            except AiotmcError as exc:
                _log.warning("agent %s: presence not stored: %s", self.name, exc)

    async def _answer_discovery(self, nc: NatsConnection, sub: Any) -> None:
        async for msg in sub.messages:
            if msg.reply:
                await nc.publish(msg.reply, json.dumps(self.presence()).encode())


async def _presence_bucket(nc: NatsConnection, ttl: float) -> KeyValue | None:
    """The presence bucket, or None where the server has no JetStream (heartbeats only)."""
    try:
        return await KeyValue.create(JetStream(nc, timeout=1.0), PRESENCE_BUCKET, ttl=ttl)
    except AiotmcError as exc:
        _log.info("no presence bucket (%s): heartbeats on the bus only", exc)
        return None


async def _unsubscribe_at_exit(sub: Any) -> None:
    try:
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            await sub.unsubscribe()


async def live_agents(nc: NatsConnection, *, wait: float = 0.5) -> dict[str, dict[str, Any]]:
    """The agents alive now and their instruments: from the presence bucket where the
    server has JetStream (an agent that stopped vanishes after the TTL), else by asking
    every agent on ``aiotmc.discover`` and collecting the answers for ``wait`` seconds."""
    try:
        kv = KeyValue(JetStream(nc), PRESENCE_BUCKET)
        found = {}
        for key in await kv.keys():
            value = await kv.get(key)
            if value is not None:
                found[key] = json.loads(value)
        return found
    except AiotmcError:
        pass
    inbox, replies = nc.open_inbox()
    found = {}
    try:
        await nc.publish(wire.DISCOVER_SUBJECT, b"", reply=inbox)
        with anyio.move_on_after(wait):
            async for msg in replies:
                try:
                    data = json.loads(msg.payload)
                    found[str(data["agent"])] = data
                except (ValueError, KeyError, TypeError):
                    continue
    finally:
        nc.close_inbox(inbox)
        replies.close()
    return found
