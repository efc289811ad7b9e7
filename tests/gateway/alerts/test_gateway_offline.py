"""End to end in one real :class:`~aiotmc.gateway.app.Gateway` built from TOML: a simulated
instrument on TCP whose server stops goes offline, and the ``offline`` rule fires through
the real rule engine and the webhook notifier to an HTTP receiver within the rule's ``for``
(plus the time to notice the lost link). Asyncio only, like the gateway application."""

from __future__ import annotations

import json
import time
from pathlib import Path

import anyio
import pytest
from anyio.abc import TaskStatus

from aiotmc.gateway import InstrumentState, Reading, StatusEvent
from aiotmc.gateway.app import Gateway
from aiotmc.gateway.config import parse_config
from aiotmc.sim.devices import create_device
from aiotmc.sim.server import SimServer

from .http_receiver import HttpReceiver

FOR = 0.5  # the rule's minimum duration, seconds
PERIOD = 0.05  # the channel's period: the lost link is noticed within about one period
SLACK = 5.0  # scheduling on a loaded 2-core machine; the delay is measured, not assumed


@pytest.fixture
def anyio_backend() -> str:
    """The gateway application runs on asyncio only (its MQTT client is asyncio-only)."""
    return "asyncio"


def config_text(resource: str, hook: str, data_dir: Path) -> str:
    return f"""
[gateway]
site = "lab"
host = "bench"
data_dir = '{data_dir}'

[[instruments]]
name = "dmm"
resource = "{resource}"
retry_min = 0.05
retry_max = 0.2
channels = [{{ name = "volts", query = "MEAS:VOLT?", unit = "V", period = {PERIOD} }}]

[[rules]]
name = "dmm_offline"
type = "offline"
instrument = "dmm"
for = "{FOR}s"
severity = "critical"

[[notifiers]]
type = "webhook"
url = "{hook}/hook"
retries = 0
"""


async def simulator(
    stop: anyio.Event, stopped: anyio.Event, *, task_status: TaskStatus[SimServer]
) -> None:
    """A simulated multimeter on a TCP port until ``stop`` is set; then its listener and
    connections are closed and ``stopped`` is set."""
    async with SimServer(create_device("dmm")) as server:
        task_status.started(server)
        await stop.wait()
    stopped.set()


async def test_a_stopped_simulator_fires_the_offline_alert_to_the_webhook(
    tmp_path: Path,
) -> None:
    stop, stopped = anyio.Event(), anyio.Event()
    async with HttpReceiver() as receiver, anyio.create_task_group() as tg:
        server = await tg.start(simulator, stop, stopped)
        text = config_text(server.resource, receiver.url, tmp_path / "data")
        config = parse_config(text, path=tmp_path / "gateway.toml")
        async with Gateway(config) as gateway, gateway.hub.subscribe("test") as events:
            with anyio.fail_after(30):
                async for event in events:  # online first: readings come every period
                    if isinstance(event, Reading):
                        break
                assert receiver.requests == []
                stop.set()
                await stopped.wait()
                closed = time.time()
                status = None
                async for event in events:
                    if isinstance(event, StatusEvent) and event.state is not InstrumentState.ONLINE:
                        status = event
                        break
                assert status is not None
                assert status.instrument == "dmm" and status.state is InstrumentState.OFFLINE
                request = await receiver.next(timeout=FOR + SLACK)
            fired = time.time()
            assert receiver.requests == [request]  # one notification: nothing duplicated
    assert status is not None and (request.method, request.target) == ("POST", "/hook")
    body = json.loads(request.body)
    assert body["status"] == "firing" and len(body["alerts"]) == 1
    alert = body["alerts"][0]
    assert alert["labels"]["alertname"] == "dmm_offline"
    assert alert["labels"]["instrument"] == "dmm" and alert["labels"]["severity"] == "critical"
    assert alert["labels"]["site"] == "lab" and alert["labels"]["host"] == "bench"
    # Pending for `for` after going offline (the status event's timestamp is when the
    # gateway saw the link fail), then firing: not earlier, and not much later.
    assert FOR <= fired - status.timestamp < FOR + SLACK
    assert status.timestamp - closed < SLACK
