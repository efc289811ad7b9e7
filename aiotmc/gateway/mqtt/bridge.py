"""The MQTT bridge: hub events out to the broker, commands in from it (MQTT 5, aiomqtt).

aiomqtt drives paho-mqtt from the asyncio event loop, so the bridge runs on asyncio only
(it raises :class:`~aiotmc.UnsupportedOperation` under trio); the rest of the gateway is
written against anyio and runs on the same loop. See docs/gateway.md, "MQTT".
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
import ssl
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, replace
from typing import Any, Final, Protocol, runtime_checkable

import aiomqtt
import anyio
import anyio.lowlevel
import paho.mqtt.client as mqtt
from anyio.abc import ObjectReceiveStream
from anyio.streams.memory import MemoryObjectSendStream
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from aiotmc._exceptions import UnsupportedOperation
from aiotmc.gateway.control import Refusal, refuse
from aiotmc.gateway.model import (
    Alert,
    CommandRequest,
    CommandResult,
    Event,
    Hub,
    Reading,
    StatusEvent,
)
from aiotmc.gateway.mqtt.config import MqttConfig
from aiotmc.gateway.mqtt.packets import PacketBurst, PahoWriter
from aiotmc.gateway.mqtt.queue import Outgoing, PublishQueue
from aiotmc.gateway.mqtt.topics import (
    Topics,
    alert_payload,
    discovery_payload,
    reading_payload,
    reply_payload,
)

__all__ = ["MqttBridge"]

log: Final = logging.getLogger("aiotmc.gateway.mqtt")

#: QoS 0 messages handed to paho per burst (see ``MqttBridge._publisher``).
BURST: Final = 256

#: Commands waiting for the controller; more are refused as busy.
COMMAND_BACKLOG: Final = 100


@runtime_checkable
class _HasRoles(Protocol):
    def roles_of(self, user: str) -> tuple[str, ...]: ...


@runtime_checkable
class _CanDeny(Protocol):
    def deny(self, request: CommandRequest, reason: Refusal, detail: str) -> CommandResult: ...


@dataclass(frozen=True, slots=True)
class _Command:
    request: CommandRequest
    response_topic: str | None
    correlation: bytes | None
    #: Why the message is not a valid command (then it is refused, never run).
    problem: str | None = None


def retrieve_disconnect(client: aiomqtt.Client) -> None:
    """Mark the error of a lost connection as seen: aiomqtt keeps it in a future that
    nobody awaits when the session ended some other way (asyncio would log it as "never
    retrieved")."""
    future = getattr(client, "_disconnected", None)
    if isinstance(future, asyncio.Future) and future.done() and not future.cancelled():
        future.exception()


class MqttBridge:
    """A gateway :class:`~aiotmc.gateway.Component` publishing to one MQTT 5 broker.

    Counters for metrics: :attr:`queue` (``depth``, ``dropped``), :attr:`published`,
    :attr:`connections`, :attr:`reconnects`, :attr:`commands`, :attr:`rejected`, and
    :attr:`connected`.
    """

    def __init__(self, config: MqttConfig, *, name: str = "mqtt") -> None:
        self.name = name
        self.config = config
        self.queue = PublishQueue(config.queue_size)
        self.published = 0
        self.connections = 0
        self.commands = 0
        #: Events or commands that could not be mapped to topics (bad names, bad payloads).
        self.rejected = 0
        self.connected = False
        self.last_error: str | None = None
        #: Failed connection attempts and lost connections, since start.
        self.failures = 0
        self._changed: anyio.Event | None = None  # created in the loop, when awaited
        self._retained: dict[str, Outgoing] = {}  # instrument status + discovery, re-sent
        #: The topic of every channel seen (discovery was sent for each).
        self._channels: dict[tuple[str, str], str] = {}
        self._topics: Topics | None = None
        self._warned: set[str] = set()
        self._hub: Hub | None = None

    @property
    def reconnects(self) -> int:
        """Successful connections after the first one."""
        return max(0, self.connections - 1)

    def stats(self) -> dict[str, Any]:
        """The bridge's figures for ``/metrics`` and the health endpoint."""
        return {
            "connected": self.connected,
            "queue_depth": self.queue.depth,
            "dropped": self.queue.dropped,
            "published": self.published,
            "reconnects": self.reconnects,
            "failures": self.failures,
            "commands": self.commands,
            "rejected": self.rejected,
            "last_error": self.last_error,
        }

    async def wait_connected(self, *, connections: int = 1) -> None:
        """Return once the bridge is connected (and subscribed), for at least the
        ``connections``-th time since it started."""
        await self.wait_until(lambda bridge: bridge.connected and bridge.connections >= connections)

    async def wait_until(self, condition: Callable[[MqttBridge], bool]) -> None:
        """Return once ``condition(bridge)`` holds; it is checked whenever the connection
        state changes (connected, disconnected, a failed attempt)."""
        while not condition(self):
            if self._changed is None:
                self._changed = anyio.Event()
            await self._changed.wait()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def _set_connected(self, connected: bool) -> None:
        self.connected = connected
        self._notify()

    # -- the component ---------------------------------------------------------------------

    async def run(self, hub: Hub, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """Publish the hub's events and serve commands until cancelled, reconnecting with
        exponential backoff whenever the broker goes away."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise UnsupportedOperation(
                "the MQTT bridge runs on asyncio only (aiomqtt); run the gateway on asyncio"
            ) from None
        self._hub = hub
        self._topics = Topics(
            self.config.topic_prefix,
            hub.site,
            hub.host,
            hub.gateway_id,
            self.config.discovery_prefix,
        )
        tls = self._tls_context()
        send, receive = anyio.create_memory_object_stream[_Command](COMMAND_BACKLOG)
        async with (
            # As deep as the publish queue: the spool publishes each commit at once, and
            # under load one commit holds more than a thousand readings.
            hub.subscribe(self.name, maxsize=max(1000, self.config.queue_size)) as events,
            anyio.create_task_group() as tg,
            send,
            receive,
        ):
            tg.start_soon(self._pump, events)
            tg.start_soon(self._command_worker, hub, receive)
            task_status.started()
            await self._connection_loop(hub, tls, send)

    def _tls_context(self) -> ssl.SSLContext | None:
        tls = self.config.tls
        if tls is None:
            return None
        context = ssl.create_default_context(cafile=tls.ca_file)
        if tls.cert_file is not None:
            context.load_cert_chain(tls.cert_file, tls.key_file)
        return context

    def _client(self, hub: Hub, tls: ssl.SSLContext | None) -> aiomqtt.Client:
        config, topics = self.config, self._require_topics()
        return aiomqtt.Client(
            config.host,
            config.port,
            username=config.username,
            password=config.password,
            identifier=config.client_id or f"aiotmc-{hub.gateway_id}",
            protocol=aiomqtt.ProtocolVersion.V5,
            will=aiomqtt.Will(topics.status, b"offline", qos=1, retain=True),
            keepalive=config.keepalive,
            tls_context=tls,
            timeout=10,
        )

    def _require_topics(self) -> Topics:
        if self._topics is None:  # pragma: no cover - run() sets it first
            raise RuntimeError("the bridge is not running")
        return self._topics

    async def _connection_loop(
        self, hub: Hub, tls: ssl.SSLContext | None, commands: MemoryObjectSendStream[_Command]
    ) -> None:
        config = self.config
        delay = config.reconnect_min
        while True:
            client = self._client(hub, tls)
            try:
                async with client:
                    self.connections += 1
                    delay = config.reconnect_min
                    log.info(
                        "connected to mqtt%s://%s:%d", "s" if tls else "", config.host, config.port
                    )
                    try:
                        await self._session(client, commands)
                    finally:
                        retrieve_disconnect(client)
            except* (aiomqtt.MqttError, OSError) as group:
                error = group.exceptions[0]
                self.last_error = f"{type(error).__name__}: {error}"
                self.failures += 1
                self._notify()
                log.warning(
                    "mqtt %s:%d: %s; retrying in %.1f s",
                    config.host,
                    config.port,
                    self.last_error,
                    delay,
                )
            await anyio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, config.reconnect_max)

    async def _session(
        self, client: aiomqtt.Client, commands: MemoryObjectSendStream[_Command]
    ) -> None:
        topics = self._require_topics()
        _no_delay(client)
        try:
            await client.publish(topics.status, b"online", qos=1, retain=True)
            if self.config.commands:
                await self._subscribe(client, topics.commands)
            if self.config.discovery:
                await self._subscribe(client, topics.discovery_status)
            for message in list(self._retained.values()):  # the broker may have lost them
                self.queue.put(message)
            self._set_connected(True)
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._publisher, client)
                await self._receiver(client, commands)
        except anyio.get_cancelled_exc_class():
            # A clean shutdown: say so (the Last Will is for unclean ones).
            with anyio.CancelScope(shield=True), anyio.move_on_after(2), suppress(Exception):
                await client.publish(topics.status, b"offline", qos=1, retain=True)
            raise
        finally:
            self._set_connected(False)

    async def _subscribe(self, client: aiomqtt.Client, topic: str) -> None:
        granted = await client.subscribe(topic, qos=1)
        for code in granted:
            if getattr(code, "is_failure", False):
                log.error("mqtt: the broker refused the subscription to %s: %s", topic, code)

    async def _publisher(self, client: aiomqtt.Client) -> None:
        """Publish from the queue in order, in bursts of up to ``BURST`` messages.

        QoS 0 readings are encoded here and handed to paho as one buffer per burst, which
        it writes with one ``send()`` (see :mod:`.packets`): about a fifth of the CPU of
        paho's own publish per message (where that cannot be done, they go through
        paho's publish without waiting, as before). Retained state messages (QoS 1) go
        to paho in the same bursts without waiting for their acknowledgement: awaited
        one by one, the statuses of a thousand instruments took a round trip each while
        readings piled up and were dropped; a burst lost with its connection is not
        lost, as every session starts by queueing all of them again.

        When a burst is full, or paho has not yet written the previous one, the burst's
        last message is awaited until written, so that paho's own, unbounded, buffer
        never holds more than about two bursts. Alerts and replies (the control lane)
        are awaited one by one.
        """
        queue = self.queue
        paho: Any = getattr(client, "_client", None)  # aiomqtt's paho client
        if not isinstance(paho, mqtt.Client):  # pragma: no cover - another aiomqtt layout
            paho = None
        writer = PahoWriter.of(client) if paho is not None else None
        burst = PacketBurst()
        taken: list[Outgoing] = []  # in ``burst``, not yet handed to paho
        while True:
            message: Outgoing | None = await queue.get()
            behind = writer is not None and writer.busy
            count = 0
            while message is not None and count < BURST:
                if behind and not queue:
                    break  # the last one: awaited below
                if writer is not None and message.qos == 0 and message.properties is None:
                    try:
                        burst.add(message.topic, message.payload, message.retain)
                    except ValueError as exc:
                        self._take_failed(exc)
                    else:
                        taken.append(message)
                        self.published += 1
                elif paho is not None and (message.qos == 0 or message.lane == "state"):
                    self._flush(writer, burst, taken)  # paho's publish, without waiting
                    info = paho.publish(
                        message.topic,
                        message.payload,
                        message.qos,
                        message.retain,
                        message.properties,
                    )
                    if info.rc != mqtt.MQTT_ERR_SUCCESS:
                        queue.put_back(message)
                        raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
                    self.published += 1
                else:
                    break  # awaited below
                count += 1
                message = queue.get_nowait()
            self._flush(writer, burst, taken)
            if message is None:
                await anyio.lowlevel.checkpoint()  # the burst ran dry: let paho write it
                continue
            try:
                await client.publish(
                    message.topic,
                    message.payload,
                    qos=message.qos,
                    retain=message.retain,
                    properties=message.properties,
                )
            except BaseException:
                queue.put_back(message)
                raise
            self.published += 1

    def _flush(self, writer: PahoWriter | None, burst: PacketBurst, taken: list[Outgoing]) -> None:
        """Hand the encoded burst to paho (back to the queue if there is no connection)."""
        if writer is None or not taken:
            return
        data = burst.take()
        try:
            writer.write(data)
        except aiomqtt.MqttError:
            for message in reversed(taken):
                self.queue.put_back(message)
            self.published -= len(taken)
            raise
        finally:
            taken.clear()

    # -- hub → queue -----------------------------------------------------------------------

    async def _pump(self, events: ObjectReceiveStream[Event]) -> None:
        """Move events from the hub's queue to the publish queue.

        Each wake-up takes everything waiting (at most the hub queue's size, and nothing
        can arrive meanwhile): one event per loop iteration fell behind a thousand busy
        sources, and the hub then dropped readings for this subscriber.
        """
        receive_nowait = getattr(events, "receive_nowait", None)  # memory object streams
        async for event in events:
            self._take(event)
            while receive_nowait is not None:
                try:
                    event = receive_nowait()
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break
                self._take(event)

    def _take(self, event: Event) -> None:
        try:
            self._enqueue(event)
        except ValueError as exc:
            self._take_failed(exc)

    def _take_failed(self, exc: ValueError) -> None:
        """Count and log (once per text) a message that cannot be published."""
        self.rejected += 1
        text = str(exc)
        if text not in self._warned and len(self._warned) < 1000:
            self._warned.add(text)
            log.warning("mqtt: not published: %s", text)

    def _enqueue(self, event: Event) -> None:
        topics, config = self._require_topics(), self.config
        if isinstance(event, Reading):
            channel = (event.instrument, event.channel)
            topic = self._channels.get(channel)
            if topic is None:  # a new channel: check its names once, announce it
                topic = topics.reading(event.instrument, event.channel)
                self._channels[channel] = topic
                if config.discovery:
                    self._retain(
                        topics.discovery(event.instrument, event.channel),
                        discovery_payload(topics, event),
                    )
            self.queue.put(
                Outgoing(topic, reading_payload(event), config.qos, config.retain_readings)
            )
        elif isinstance(event, StatusEvent):
            self._retain(topics.instrument_status(event.instrument), event.state.value.encode())
        elif isinstance(event, Alert):
            topic = topics.alert(event.rule, event.instrument)
            self.queue.put(Outgoing(topic, alert_payload(event), 1, False, lane="control"))

    def _retain(self, topic: str, payload: bytes) -> None:
        message = Outgoing(topic, payload, 1, True, lane="state")
        self._retained[topic] = message
        self.queue.put(message)

    # -- commands --------------------------------------------------------------------------

    async def _receiver(
        self, client: aiomqtt.Client, commands: MemoryObjectSendStream[_Command]
    ) -> None:
        topics = self._require_topics()
        async for message in client.messages:
            topic = message.topic.value
            if topic == topics.discovery_status:
                if message.payload == b"online":  # Home Assistant restarted
                    for retained in list(self._retained.values()):
                        self.queue.put(retained)
                continue
            parsed = topics.parse_command(topic)
            if parsed is None:
                continue
            self.commands += 1
            props = message.properties
            response = getattr(props, "ResponseTopic", None) if props else None
            correlation = getattr(props, "CorrelationData", None) if props else None
            command = self._command(parsed, message.payload, response, correlation)
            try:
                commands.send_nowait(command)
            except anyio.WouldBlock:
                self._refused(command, Refusal.UNAVAILABLE, "busy: too many commands waiting")

    def _command(
        self,
        parsed: tuple[str, str, str],
        payload: Any,
        response: str | None,
        correlation: bytes | None,
    ) -> _Command:
        user, instrument, operation = parsed
        value: Any = None
        problem: str | None = None
        if payload:
            try:
                body = json.loads(payload)
            except (ValueError, UnicodeDecodeError):
                body = None
            if isinstance(body, dict):
                value = body.get("value")
                if value is not None and not isinstance(value, str | int | float | bool):
                    problem = "the value must be a number, a string, true or false"
            else:
                problem = 'the payload must be a JSON object such as {"value": 12.5}'
        request = CommandRequest(
            user=user,
            instrument=instrument,
            operation=operation,
            value=value if isinstance(value, str | int | float | bool) else None,
            source="mqtt",
            roles=(),
        )
        return _Command(request, response, correlation, problem)

    async def _command_worker(self, hub: Hub, commands: ObjectReceiveStream[_Command]) -> None:
        """Runs commands one at a time, in arrival order, across reconnects."""
        topics = self._require_topics()
        async for command in commands:
            request = command.request
            controller = hub.controller
            if isinstance(controller, _HasRoles):
                request = replace(request, roles=controller.roles_of(request.user))
                command = replace(command, request=request)
            if command.response_topic is not None and not topics.reply_allowed(
                request.user, command.response_topic
            ):
                self._refused(
                    command,
                    Refusal.NOT_ALLOWED,
                    f"the response topic must be below {topics.reply_prefix(request.user)}",
                    reply=False,
                )
                continue
            if command.problem is not None:
                self._refused(command, Refusal.BAD_VALUE, command.problem)
                continue
            result = await controller.execute(request)
            self._reply(command, result)

    def _refused(
        self, command: _Command, reason: Refusal, detail: str, *, reply: bool = True
    ) -> None:
        """Refuse ``command`` before the controller runs it (audited where possible)."""
        self.rejected += 1
        controller = self._hub.controller if self._hub is not None else None
        if isinstance(controller, _CanDeny):
            result = controller.deny(command.request, reason, detail)
        else:
            log.warning("mqtt command refused (%s): %s: %s", reason, command.request, detail)
            result = refuse(reason, detail)
        if reply:
            self._reply(command, result)

    def _reply(self, command: _Command, result: CommandResult) -> None:
        if command.response_topic is None:
            return
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        if command.correlation is not None:
            properties.CorrelationData = command.correlation
        self.queue.put(
            Outgoing(
                command.response_topic,
                reply_payload(result),
                1,
                False,
                properties=properties,
                lane="control",
            )
        )


def _no_delay(client: aiomqtt.Client) -> None:
    """TCP_NODELAY on the broker connection: a reading goes out when it is handed over,
    not when the broker acknowledges the previous segment (Nagle's algorithm and the
    broker's delayed ACK held readings up to 40 ms at a few hundred per second)."""
    paho: Any = getattr(client, "_client", None)
    sock: Any = paho.socket() if isinstance(paho, mqtt.Client) else None
    if sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):  # not a TCP socket (a Unix one, a websocket...)
        pass
