"""The collector: readings of every agent, from the JetStream measurement log into this
gateway's storage, rules, MQTT and web dashboard (distributed acquisition).

Agents (``aiotmc agent --config``) publish their readings into a JetStream stream
(:mod:`aiotmc.gateway.sinks.jetstream`). The collector consumes it through a *durable*
consumer: it fetches a batch, stores it in its sinks (retrying, and telling JetStream
that the work is in progress, while a sink is down), acknowledges it, then publishes the
readings on the hub for the rules and the live views. A collector that stops and starts
again resumes after its last acknowledgement; a batch stored but not yet acknowledged
comes again, and the sinks ignore what they have by the readings' keys. While its sinks
work on a batch it tells JetStream so (``+WPI``) every third of ``ack_wait``, so a short
``ack_wait`` costs nothing on a slow sink, and readings delivered into a connection
that died (a NATS server restart) come again within ``ack_wait``.

It also listens to the agents' heartbeats (``aiotmc.presence.<agent>``): an agent not
heard for ``presence_ttl`` seconds has its instruments reported offline
(:class:`~aiotmc.gateway.StatusEvent`), so that an ``offline`` alert rule fires within
that time; they are reported online again when it is back. Config::

    [collector]
    url = "nats://central:4222"     # or an array (cluster nodes); user, password_file,
    stream = "AIOTMC_READINGS"      #   token_env, tls_ca as for the JetStream sink
    subject = "aiotmc.readings"
    durable = "collector"
    batch = 500
    ack_wait = 5.0                  # seconds before an unacknowledged reading comes again
    sinks = ["db"]                  # names from [[sinks]] (default: all of them)
    presence_ttl = 10.0
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import anyio
from anyio.abc import TaskStatus

from .._exceptions import AiotmcError, ConfigError, SinkUnavailableError
from ..protocol import remote as wire
from ..transports.nats.connection import NatsConnection, NatsServer
from ..transports.nats.jetstream import JetStream, JsMessage, ack_all
from .fields import Fields, Key
from .model import Hub, InstrumentState, Reading, Sink, StatusEvent
from .natsconfig import nats_servers
from .sinks.jetstream import DEFAULT_STREAM, DEFAULT_SUBJECT

__all__ = ["Collector"]

log = logging.getLogger("aiotmc.gateway.collector")

_RETRY_MAX: Final = 5.0


class Collector:
    """A gateway Component consuming the measurement stream durably."""

    def __init__(
        self,
        servers: Sequence[NatsServer],
        sinks: Sequence[Sink],
        *,
        name: str = "collector",
        stream: str = DEFAULT_STREAM,
        subject: str = DEFAULT_SUBJECT,
        durable: str = "collector",
        batch: int = 500,
        ack_wait: float = 5.0,
        presence_ttl: float = 10.0,
    ) -> None:
        self.name = name
        self.servers = list(servers)
        self.sinks = list(sinks)
        self.stream = stream
        self.subject = subject
        self.durable = durable
        self.batch = batch
        self.ack_wait = ack_wait
        self.presence_ttl = presence_ttl
        self.stored = 0  #: readings stored and acknowledged
        self.rejected = 0  #: messages that were not readings (acknowledged, dropped)
        self._seen: dict[str, tuple[float, tuple[str, ...]]] = {}  # agent -> (when, names)
        self._offline: set[str] = set()

    @classmethod
    def from_config(
        cls,
        section: Mapping[str, Any],
        key: Key = (),
        *,
        sinks: Sequence[Sink] = (),
        config_dir: Path | None = None,
    ) -> Collector:
        """Build from the ``[collector]`` section (the loader's grouped form)."""
        table = section.get("collector", section)
        fields = Fields(table, ("collector",))
        servers = nats_servers(fields, config_dir)
        wanted = fields.strings("sinks", None)
        by_name = {sink.name: sink for sink in sinks}
        if wanted is None:
            chosen = list(sinks)
        else:
            for index, sink_name in enumerate(wanted):
                if sink_name not in by_name:
                    known = ", ".join(sorted(by_name)) or "none"
                    raise ConfigError(
                        f"no [[sinks]] named {sink_name!r} (known: {known})",
                        key=(*fields.at("sinks"), index),
                    )
            chosen = [by_name[n] for n in wanted]
        collector = cls(
            servers,
            chosen,
            stream=fields.string("stream", DEFAULT_STREAM),
            subject=fields.string("subject", DEFAULT_SUBJECT),
            durable=fields.name("durable", "collector"),
            batch=fields.integer("batch", 500, minimum=1, maximum=10_000),
            ack_wait=fields.number("ack_wait", 5.0, minimum=1.0),
            presence_ttl=fields.number("presence_ttl", 10.0, minimum=0.1),
        )
        fields.done()
        return collector

    async def run(
        self, hub: Hub, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Consume until cancelled, reconnecting with backoff; started once connected."""
        wait = 0.2
        started = False
        while True:
            try:
                nc = await NatsConnection.connect_any(
                    self.servers, timeout=5, name="aiotmc collector"
                )
            except AiotmcError as exc:
                if not started:
                    task_status.started()  # the gateway starts; we keep trying
                    started = True
                log.warning("collector: %s; again in %.1f s", exc, wait)
                await anyio.sleep(wait)
                wait = min(wait * 2, _RETRY_MAX)
                continue
            wait = 0.2
            try:
                await self._consume(nc, hub, None if started else task_status)
                started = True
            except* (AiotmcError, anyio.BrokenResourceError, anyio.ClosedResourceError) as lost:
                started = True
                log.warning("collector: lost the NATS server: %r", lost.exceptions[0])
            finally:
                with anyio.CancelScope(shield=True):
                    await nc.aclose()

    async def _consume(
        self, nc: NatsConnection, hub: Hub, task_status: TaskStatus[None] | None
    ) -> None:
        js = JetStream(nc)
        await js.ensure_stream(self.stream, [f"{self.subject}.>"])
        await js.ensure_consumer(
            self.stream, self.durable, filter_subject=f"{self.subject}.>", ack_wait=self.ack_wait
        )
        presence = await nc.subscribe(wire.presence_subject("*"), maxsize=10_000)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch_presence, presence, hub)
                tg.start_soon(self._presence_timer, hub)
                if task_status is not None:
                    task_status.started()
                while not nc.closed:
                    messages = await js.pull(
                        self.stream, self.durable, batch=self.batch, expires=1.0
                    )
                    if messages:
                        await self._store(messages, hub)
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await presence.unsubscribe()

    async def _store(self, messages: list[JsMessage], hub: Hub) -> None:
        readings: list[Reading] = []
        for message in messages:
            try:
                readings.append(Reading.from_json(json.loads(message.data)))
            except (ValueError, KeyError, TypeError) as exc:
                self.rejected += 1
                log.warning("collector: dropped a message that is not a reading: %s", exc)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._in_progress, messages)
            async with anyio.create_task_group() as writers:  # each sink at its own pace
                for sink in self.sinks:
                    writers.start_soon(self._write, sink, readings)
            tg.cancel_scope.cancel()
        await ack_all(messages)  # one write for the batch
        self.stored += len(readings)
        for reading in readings:
            await hub.publish(reading)
            self._heard(reading.host, reading.instrument)

    async def _in_progress(self, messages: list[JsMessage]) -> None:
        """``+WPI`` for the batch every third of ``ack_wait`` until cancelled: JetStream
        keeps it ours however long the sinks take."""
        while True:
            await anyio.sleep(self.ack_wait / 3)
            await ack_all(messages, reply=b"+WPI")

    async def _write(self, sink: Sink, readings: list[Reading]) -> None:
        """Store in ``sink``, retrying while it is down (JetStream keeps the batch ours)."""
        wait = 0.2
        while True:
            try:
                await sink.open()
                await sink.write(readings)
                return
            except SinkUnavailableError as exc:
                log.warning("collector: sink %s: %s; again in %.1f s", sink.name, exc, wait)
            await anyio.sleep(wait)
            wait = min(wait * 2, _RETRY_MAX)

    # -- presence ----------------------------------------------------------------------------

    async def _watch_presence(self, presence: Any, hub: Hub) -> None:
        async for msg in presence.messages:
            try:
                data = json.loads(msg.payload)
                agent = str(data["agent"])
                names = tuple(str(n) for n in data.get("instruments", {}))
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
            self._seen[agent] = (time.monotonic(), names)
            if agent in self._offline:
                self._offline.discard(agent)
                for name in names:
                    await hub.publish(StatusEvent(name, InstrumentState.ONLINE, time.time()))

    async def _presence_timer(self, hub: Hub) -> None:
        """Look for silent agents several times per TTL, whatever the stream does."""
        while True:
            await anyio.sleep(min(self.presence_ttl / 4, 0.5))
            await self._check_presence(hub)

    def _heard(self, agent: str, instrument: str) -> None:
        when, names = self._seen.get(agent, (0.0, ()))
        if instrument not in names:
            self._seen[agent] = (when, (*names, instrument))

    async def _check_presence(self, hub: Hub) -> None:
        now = time.monotonic()
        for agent, (when, names) in self._seen.items():
            if agent in self._offline or not when or now - when <= self.presence_ttl:
                continue
            self._offline.add(agent)
            detail = f"agent {agent} not heard for {now - when:.1f} s"
            log.warning("collector: %s", detail)
            for name in names:
                await hub.publish(StatusEvent(name, InstrumentState.OFFLINE, time.time(), detail))
