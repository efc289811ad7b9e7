"""``kill -9`` of mosquitto, then a restart: the bridge reconnects by itself and resumes,
re-publishing its retained state (the restarted broker kept none)."""

from __future__ import annotations

import json
import time

import anyio

from aiotmc.gateway.model import InstrumentState, StatusEvent
from aiotmc.gateway.mqtt import from_config

from .broker import BASE, Mosquitto
from .client import connect, next_message, on
from .hub import LocalHub
from .test_bridge import reading


async def test_broker_kill_and_restart(plain_broker: Mosquitto) -> None:
    hub = LocalHub(gateway_id="gw-restart")
    bridge = from_config(
        {
            "port": plain_broker.port,
            "reconnect_min": 0.05,
            "reconnect_max": 0.2,
            "retain_readings": True,  # so that a late subscriber sees the latest value
        }
    )
    async with anyio.create_task_group() as tg:
        await tg.start(bridge.run, hub)
        with anyio.fail_after(10):
            await bridge.wait_connected()
        await hub.publish(StatusEvent("dmm", InstrumentState.ONLINE, time.time()))
        async with connect(plain_broker) as observer:
            await observer.subscribe(f"{BASE}/dmm/voltage")
            await hub.publish(reading("dmm", "voltage", 1.0, seq=1))
            first = await next_message(observer, on(f"{BASE}/dmm/voltage"))
            assert json.loads(first.payload)["value"] == 1.0

            plain_broker.kill()
            with anyio.fail_after(10):
                await bridge.wait_until(lambda b: not b.connected)
        # Acquired while the broker is down: queued (bounded), published after the restart.
        for seq in range(2, 6):
            await hub.publish(reading("dmm", "voltage", float(seq), seq=seq))
        plain_broker.start()
        with anyio.fail_after(15):
            await bridge.wait_connected(connections=2)
        assert bridge.reconnects == 1 and bridge.failures >= 1

        async with connect(plain_broker) as observer:
            await observer.subscribe(f"{BASE}/#")
            seen: dict[str, bytes] = {}
            with anyio.fail_after(10):
                async for message in observer.messages:
                    seen[message.topic.value] = message.payload
                    latest = seen.get(f"{BASE}/dmm/voltage")
                    if latest and json.loads(latest)["value"] == 5.0 and len(seen) >= 3:
                        break
            assert seen[f"{BASE}/$status"] == b"online"
            assert seen[f"{BASE}/dmm/$status"] == b"online"  # re-published from memory
        assert bridge.queue.dropped == 0
        tg.cancel_scope.cancel()
