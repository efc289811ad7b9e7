"""Test-side MQTT clients: an observer that collects messages, and command calls."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiomqtt
import anyio
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from aiotmc.gateway.mqtt.bridge import retrieve_disconnect

from .broker import BASE, USERS, Mosquitto


@asynccontextmanager
async def connect(
    broker: Mosquitto, user: str | None = None, **options: Any
) -> AsyncIterator[aiomqtt.Client]:
    """An MQTT 5 client of ``user`` (its password from USERS) on the plain listener."""
    password = USERS.get(user) if user else None
    async with aiomqtt.Client(
        "127.0.0.1",
        broker.port,
        username=user,
        password=password,
        protocol=aiomqtt.ProtocolVersion.V5,
        timeout=10,
        **options,
    ) as client:
        try:
            yield client
        finally:
            retrieve_disconnect(client)  # the broker may have been killed meanwhile


async def next_message(
    client: aiomqtt.Client, match: Callable[[aiomqtt.Message], bool], *, timeout: float = 10
) -> aiomqtt.Message:
    """The next message that ``match`` accepts (others are skipped)."""
    with anyio.fail_after(timeout):
        async for message in client.messages:
            if match(message):
                return message
    raise AssertionError("the client disconnected")  # pragma: no cover


def on(topic: str) -> Callable[[aiomqtt.Message], bool]:
    return lambda message: message.topic.value == topic


async def call(
    client: aiomqtt.Client,
    user: str,
    instrument: str,
    operation: str,
    value: Any = None,
    *,
    correlation: bytes,
    response_topic: str | None = None,
    timeout: float = 10,
) -> dict[str, Any]:
    """Send a command as ``user`` and wait for its reply (the client must be subscribed to
    its reply topics)."""
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = response_topic or f"{BASE}/$reply/{user}/test"
    props.CorrelationData = correlation
    payload = b"" if value is None else json.dumps({"value": value}).encode()
    await client.publish(
        f"{BASE}/$cmd/{user}/{instrument}/{operation}", payload, qos=1, properties=props
    )

    def is_reply(message: aiomqtt.Message) -> bool:
        data = getattr(message.properties, "CorrelationData", None)
        return data == correlation

    reply = await next_message(client, is_reply, timeout=timeout)
    result: dict[str, Any] = json.loads(reply.payload)
    return result
