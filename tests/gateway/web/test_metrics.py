"""``/metrics``: Prometheus text that prometheus_client's own parser reads back.

asyncio only, like the gateway (conftest.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import anyio
import httpx
from prometheus_client.parser import text_string_to_metric_families

from aiotmc.gateway.model import (
    Alert,
    AlertState,
    InstrumentState,
    Quality,
    Reading,
    StatusEvent,
)
from aiotmc.gateway.web.app import WebApp
from aiotmc.gateway.web.settings import User, WebSettings
from tests.gateway.web.conftest import HOST, ORIGIN, FakeHub, running


@dataclass(frozen=True)
class InstrumentStats:
    """The shape of aiotmc.gateway.model.InstrumentStats (the gateway hub's counters)."""

    state: InstrumentState
    readings: int
    errors: int
    reconnects: int
    latency_sum: float
    latency_count: int


@dataclass(frozen=True)
class GatewayStats:
    """The shape of aiotmc.gateway.model.GatewayStats."""

    instruments: dict[str, InstrumentStats]
    queue_depths: dict[str, int]
    queue_dropped: dict[str, int]
    spool_size: int
    spool_dropped: int
    sink_backlog: dict[str, int]
    sink_errors: dict[str, int]


class StatsHub(FakeHub):
    """A hub with ``stats()``, like the gateway's."""

    def stats(self) -> GatewayStats:
        online = InstrumentState.ONLINE
        return GatewayStats(
            instruments={
                "dmm": InstrumentStats(online, 97, 3, 2, 0.25, 100),
                "psu": InstrumentStats(online, 10, 0, 0, 0.01, 10),
            },
            queue_depths={"web": 0, "mqtt": 17},
            queue_dropped={"web": 0, "mqtt": 5},
            spool_size=42,
            spool_dropped=1,
            sink_backlog={"sqlite": 42},
            sink_errors={"postgres": 4},
        )


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels): value}`` as prometheus_client parses the text."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def scrape(web: WebApp, hub: FakeHub, events: list[object]) -> str:
    transport = httpx.ASGITransport(app=web.asgi)
    async with running(web), httpx.AsyncClient(transport=transport, base_url=ORIGIN) as client:
        for event in events:
            await hub.publish(event)  # type: ignore[arg-type]
        with anyio.fail_after(5):
            while sum(web.state.readings.values()) < 3:
                await anyio.wait_all_tasks_blocked()
        await client.post(
            "/api/token", json={"name": "alice", "password": "wrong"}, headers={"host": HOST}
        )
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return response.text


def events() -> list[object]:
    now = time.time()

    def reading(seq: int, quality: Quality = Quality.GOOD) -> Reading:
        return Reading("gw", seq, "lab", "b1", "dmm", "volt", 1.0, "V", now - 0.003, quality)

    return [
        StatusEvent("dmm", InstrumentState.ONLINE, now),
        StatusEvent("dmm", InstrumentState.OFFLINE, now, "timeout"),
        StatusEvent("dmm", InstrumentState.ONLINE, now),
        reading(1),
        reading(2),
        reading(3, Quality.BAD),
        Alert("hot", "dmm", "volt", AlertState.FIRING, "warning", "hot", now),
        Alert("cold", "dmm", None, AlertState.PENDING, "info", "cold", now),
    ]


async def test_metrics_from_the_hub_alone(hub: FakeHub, users: tuple[User, ...]) -> None:
    web = WebApp(hub, WebSettings(allowed_hosts=(HOST,)), users)
    got = samples(await scrape(web, hub, events()))
    assert (
        got[
            (
                "aiotmc_gateway_info",
                (("gateway_id", "gw-test"), ("host", "bench1"), ("site", "lab")),
            )
        ]
        == 1
    )
    labels = (("channel", "volt"), ("instrument", "dmm"), ("quality", "good"))
    assert got[("aiotmc_readings_total", labels)] == 2
    assert got[("aiotmc_readings_total", (*labels[:2], ("quality", "bad")))] == 1
    assert got[("aiotmc_instrument_up", (("instrument", "dmm"),))] == 1
    assert got[("aiotmc_instrument_disconnects_total", (("instrument", "dmm"),))] == 1
    assert got[("aiotmc_instrument_reconnects_total", (("instrument", "dmm"),))] == 1
    assert got[("aiotmc_reading_age_seconds_count", (("instrument", "dmm"),))] == 3
    inf = got[("aiotmc_reading_age_seconds_bucket", (("instrument", "dmm"), ("le", "+Inf")))]
    assert inf == 3
    assert got[("aiotmc_alerts_firing", (("severity", "warning"),))] == 1
    assert got[("aiotmc_alert_transitions_total", (("state", "pending"),))] == 1
    assert got[("aiotmc_hub_dropped_total", (("subscriber", "web"),))] == 0
    assert got[("aiotmc_web_logins_total", (("result", "failed"),))] == 1
    assert got[("aiotmc_web_sessions", ())] == 0
    assert not any(name.startswith("aiotmc_spool") for name, _ in got)


async def test_metrics_with_the_gateway_stats(users: tuple[User, ...]) -> None:
    hub = StatsHub()
    web = WebApp(hub, WebSettings(allowed_hosts=(HOST,)), users)
    got = samples(await scrape(web, hub, events()))
    dmm = (("instrument", "dmm"),)
    assert got[("aiotmc_instrument_latency_seconds_count", dmm)] == 100
    assert got[("aiotmc_instrument_latency_seconds_sum", dmm)] == 0.25
    assert got[("aiotmc_instrument_readings_total", dmm)] == 97
    assert got[("aiotmc_instrument_errors_total", dmm)] == 3
    # reconnects come from the gateway's counters now, not from the status events
    assert got[("aiotmc_instrument_reconnects_total", dmm)] == 2
    assert got[("aiotmc_queue_depth", (("subscriber", "mqtt"),))] == 17
    assert got[("aiotmc_hub_dropped_total", (("subscriber", "mqtt"),))] == 5
    assert got[("aiotmc_spool_readings", ())] == 42
    assert got[("aiotmc_spool_dropped_total", ())] == 1
    assert got[("aiotmc_sink_backlog", (("sink", "sqlite"),))] == 42
    assert got[("aiotmc_sink_errors_total", (("sink", "postgres"),))] == 4
