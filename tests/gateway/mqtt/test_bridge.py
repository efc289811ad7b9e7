"""The bridge against a real mosquitto: readings, retained status, Last Will, discovery,
alerts, the bounded queue, and a clean shutdown."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from aiotmc.gateway.model import (
    Alert,
    AlertState,
    InstrumentState,
    Quality,
    Reading,
    StatusEvent,
)
from aiotmc.gateway.mqtt import MqttBridge, from_config

from .broker import BASE, HOST, SITE, USERS, Mosquitto, free_port
from .client import connect, next_message, on
from .hub import LocalHub


def reading(instrument: str, channel: str, value: Any, seq: int = 1, **kw: Any) -> Reading:
    return Reading(
        gateway_id="gw-test",
        seq=seq,
        site=SITE,
        host=HOST,
        instrument=instrument,
        channel=channel,
        value=value,
        unit=kw.pop("unit", "V"),
        timestamp=kw.pop("timestamp", time.time()),
        **kw,
    )


def gateway_config(broker: Mosquitto, **extra: Any) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": broker.port,
        "username": "gateway",
        "password": USERS["gateway"],
        "reconnect_min": 0.05,
        "reconnect_max": 0.2,
        **extra,
    }


@asynccontextmanager
async def running(bridge: MqttBridge, hub: LocalHub) -> AsyncIterator[MqttBridge]:
    async with anyio.create_task_group() as tg:
        await tg.start(bridge.run, hub)
        with anyio.fail_after(10):
            await bridge.wait_connected()
        yield bridge
        tg.cancel_scope.cancel()


async def test_readings_status_discovery_and_clean_shutdown(secure_broker: Mosquitto) -> None:
    hub = LocalHub(gateway_id="gw-basic")
    bridge = from_config(gateway_config(secure_broker))
    async with connect(secure_broker, "root") as observer:
        await observer.subscribe(f"{BASE}/#", qos=1)
        await observer.subscribe("homeassistant/sensor/aiotmc_gw-basic/#", qos=1)
        async with running(bridge, hub):
            await next_message(
                observer, lambda m: m.topic.value == f"{BASE}/$status" and m.payload == b"online"
            )
            await hub.publish(StatusEvent("dmm1", InstrumentState.ONLINE, time.time()))
            sample = reading("dmm1", "voltage", 1.25, seq=7)
            await hub.publish(sample)

            status = await next_message(observer, on(f"{BASE}/dmm1/$status"))
            assert status.payload == b"online"
            config = await next_message(
                observer, on("homeassistant/sensor/aiotmc_gw-basic/dmm1_voltage/config")
            )
            discovery = json.loads(config.payload)
            assert discovery["state_topic"] == f"{BASE}/dmm1/voltage"
            assert discovery["unit_of_measurement"] == "V"
            assert discovery["unique_id"] == "aiotmc_gw-basic_dmm1_voltage"
            assert {a["topic"] for a in discovery["availability"]} == {
                f"{BASE}/$status",
                f"{BASE}/dmm1/$status",
            }
            message = await next_message(observer, on(f"{BASE}/dmm1/voltage"))
            assert json.loads(message.payload) == {
                "value": 1.25,
                "unit": "V",
                "timestamp": sample.timestamp,
                "quality": "good",
                "key": sample.key,
            }
            # A bad value is published as null with its quality; NaN never reaches JSON.
            await hub.publish(reading("dmm1", "voltage", float("nan"), seq=8, quality=Quality.BAD))
            message = await next_message(observer, on(f"{BASE}/dmm1/voltage"))
            assert json.loads(message.payload)["value"] is None
            assert json.loads(message.payload)["quality"] == "bad"
            # Home Assistant (re)starts: the discovery configs are sent again.
            await observer.publish("homeassistant/status", b"online", qos=1)
            again = await next_message(
                observer, on("homeassistant/sensor/aiotmc_gw-basic/dmm1_voltage/config")
            )
            assert json.loads(again.payload) == discovery
        # Cancelled: a clean shutdown publishes the retained offline itself.
        offline = await next_message(
            observer, lambda m: m.topic.value == f"{BASE}/$status" and m.payload == b"offline"
        )
        assert offline.payload == b"offline"
    # The retained status is what a newcomer sees.
    async with connect(secure_broker, "carol") as viewer:
        await viewer.subscribe(f"{BASE}/dmm1/$status")
        retained = await next_message(viewer, on(f"{BASE}/dmm1/$status"))
        assert retained.retain and retained.payload == b"online"
    assert bridge.published >= 5 and bridge.queue.dropped == 0  # status, discovery x2, 2 readings


async def test_alerts_go_to_the_alert_topic(secure_broker: Mosquitto) -> None:
    hub = LocalHub(gateway_id="gw-alerts")
    bridge = from_config(gateway_config(secure_broker, discovery=False))
    async with connect(secure_broker, "carol") as viewer, running(bridge, hub):
        await viewer.subscribe(f"{BASE}/$alerts/#", qos=1)
        alert = Alert(
            rule="too_hot",
            instrument="oven",
            channel="temperature",
            state=AlertState.FIRING,
            severity="critical",
            summary="oven above 80 C",
            timestamp=1700000000.0,
            value=85.5,
            labels={"site": SITE},
        )
        await hub.publish(alert)
        message = await next_message(viewer, on(f"{BASE}/$alerts/too_hot/oven"))
        body = json.loads(message.payload)
        assert body["state"] == "firing" and body["value"] == 85.5
        assert body["summary"] == "oven above 80 C" and body["labels"] == {"site": SITE}


class Proxy:
    """A TCP relay to the broker whose connections the test can cut (a network failure:
    the broker sees the bridge vanish without DISCONNECT and publishes its Last Will)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self._scopes: list[anyio.CancelScope] = []

    async def serve(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with listener:
            task_status.started()
            await listener.serve(self._relay)

    async def _relay(self, client: anyio.abc.SocketStream) -> None:
        with anyio.CancelScope() as scope:
            self._scopes.append(scope)
            async with client, await anyio.connect_tcp("127.0.0.1", self.target) as server:

                async def pipe(a: anyio.abc.SocketStream, b: anyio.abc.SocketStream) -> None:
                    async for chunk in a:
                        await b.send(chunk)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(pipe, client, server)
                    tg.start_soon(pipe, server, client)

    def cut(self) -> None:
        for scope in self._scopes:
            scope.cancel()
        self._scopes.clear()


async def test_last_will_and_reconnect_after_a_network_cut(secure_broker: Mosquitto) -> None:
    hub = LocalHub(gateway_id="gw-will")
    proxy = Proxy(secure_broker.port)
    async with anyio.create_task_group() as tg, connect(secure_broker, "root") as observer:
        await tg.start(proxy.serve)
        bridge = from_config({**gateway_config(secure_broker), "port": proxy.port, "keepalive": 5})
        await observer.subscribe(f"{BASE}/$status", qos=1)
        async with running(bridge, hub):
            await next_message(observer, lambda m: m.payload == b"online")
            proxy.cut()
            will = await next_message(observer, lambda m: m.payload == b"offline")
            assert will.topic.value == f"{BASE}/$status"
            with anyio.fail_after(10):
                await bridge.wait_connected(connections=2)
            await next_message(observer, lambda m: m.payload == b"online")
            assert bridge.reconnects == 1 and bridge.last_error is not None
            await hub.publish(reading("dmm9", "voltage", 3.0))
            await observer.subscribe(f"{BASE}/dmm9/voltage")
            await hub.publish(reading("dmm9", "voltage", 4.0, seq=2))
            message = await next_message(observer, on(f"{BASE}/dmm9/voltage"))
            assert json.loads(message.payload)["value"] in (3.0, 4.0)
        tg.cancel_scope.cancel()


async def test_bounded_queue_drops_the_oldest_and_counts() -> None:
    """No broker at all: readings queue up to ``queue_size``, then the oldest go."""
    hub = LocalHub(gateway_id="gw-queue")
    bridge = from_config({"port": free_port(), "queue_size": 3, "reconnect_min": 5.0})
    async with anyio.create_task_group() as tg:
        await tg.start(bridge.run, hub)
        for seq in range(10):
            await hub.publish(reading("dmm", "voltage", float(seq), seq=seq))
        await hub.publish(StatusEvent("dmm", InstrumentState.OFFLINE, time.time()))
        await anyio.wait_all_tasks_blocked()  # the pump has taken every event
        stats = bridge.stats()
        assert stats["connected"] is False
        assert bridge.queue.dropped == 7
        assert stats["queue_depth"] == 5
        taken = [bridge.queue.get_nowait() for _ in range(5)]
        assert [m.lane for m in taken] == ["state", "state", "readings", "readings", "readings"]
        assert [json.loads(m.payload)["value"] for m in taken[2:]] == [7.0, 8.0, 9.0]
        tg.cancel_scope.cancel()


async def test_runs_on_asyncio_only() -> None:
    """Under trio the bridge says so instead of failing obscurely."""
    import trio

    import aiotmc

    async def main() -> None:
        await from_config({}).run(LocalHub())

    with pytest.raises(aiotmc.UnsupportedOperation, match="asyncio"):
        await anyio.to_thread.run_sync(trio.run, main)


async def test_the_broker_connection_sends_each_reading_at_once(
    secure_broker: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TCP_NODELAY on the bridge's connection: paho leaves Nagle's algorithm on, which held
    readings until the broker's delayed ACK (a 16 ms median at a few hundred per second)."""
    import socket

    import aiotmc.gateway.mqtt.bridge as bridge_module

    def nodelay(client: Any) -> int:
        return int(client._client.socket().getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    async with connect(secure_broker, "root") as plain:
        assert nodelay(plain) == 0  # what paho does by itself
    sessions: list[Any] = []
    real = bridge_module._no_delay

    def recording(client: Any) -> None:
        real(client)
        sessions.append(client)

    monkeypatch.setattr(bridge_module, "_no_delay", recording)
    hub = LocalHub(gateway_id="gw-nodelay")
    async with running(from_config(gateway_config(secure_broker)), hub):
        assert len(sessions) == 1
        assert nodelay(sessions[0]) == 1
