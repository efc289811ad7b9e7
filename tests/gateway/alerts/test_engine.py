"""The rule engine as a Component on a hub: readings in, alerts published back, with its
timers (``for``, stale) run on the real clock."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from anyio.abc import ObjectReceiveStream

from aiotmc.gateway.alerts import Rule, RuleEngine, RuleKind
from aiotmc.gateway.model import (
    Alert,
    AlertState,
    Event,
    InstrumentState,
    Reading,
    StatusEvent,
)

from .minihub import MiniHub


def rd(value: float, channel: str = "volt") -> Reading:
    return Reading("gw", 0, "lab", "bench", "psu", channel, value, "V", time.time())


async def next_alert(events: ObjectReceiveStream[Event], timeout: float = 10) -> Alert:
    with anyio.fail_after(timeout):
        async for event in events:
            if isinstance(event, Alert):
                return event
    raise AssertionError("the hub closed")


@asynccontextmanager
async def running(engine: RuleEngine) -> AsyncIterator[tuple[MiniHub, ObjectReceiveStream[Event]]]:
    hub = MiniHub()
    async with hub.subscribe("test") as events, anyio.create_task_group() as tg:
        await tg.start(engine.run, hub)
        yield hub, events
        tg.cancel_scope.cancel()


async def test_pending_then_firing_after_for_then_resolved() -> None:
    engine = RuleEngine([Rule("hot", RuleKind.THRESHOLD, above=10, for_=0.3)])
    async with running(engine) as (hub, events):
        await hub.publish(rd(12))
        pending = await next_alert(events)
        assert pending.state is AlertState.PENDING
        assert [a.state for a in engine.active()] == [AlertState.PENDING]
        firing = await next_alert(events)  # no further reading: the engine's own timer
        assert firing.state is AlertState.FIRING
        assert firing.timestamp == pytest.approx(pending.timestamp + 0.3)
        assert time.time() >= firing.timestamp
        await hub.publish(rd(5))
        resolved = await next_alert(events)
        assert (resolved.state, resolved.value, resolved.labels) == (
            AlertState.RESOLVED, 5, {"site": "lab", "host": "bench"}
        )  # fmt: skip
    assert [type(e).__name__ for e in hub.published].count("Alert") == 3


async def test_a_silent_channel_goes_stale_on_time() -> None:
    rule = Rule("quiet", RuleKind.STALE, instrument="psu", channel="volt", after=0.3)
    started = time.monotonic()
    async with running(RuleEngine([rule])) as (hub, events):
        alert = await next_alert(events)
        assert alert.state is AlertState.FIRING and time.monotonic() - started >= 0.3
        await hub.publish(rd(1))
        assert (await next_alert(events)).state is AlertState.RESOLVED


async def test_offline_instrument_fires_and_comes_back() -> None:
    async with running(RuleEngine([Rule("gone", RuleKind.OFFLINE)])) as (hub, events):
        await hub.publish(StatusEvent("psu", InstrumentState.OFFLINE, time.time(), "EOF"))
        alert = await next_alert(events)
        assert (alert.state, alert.instrument, alert.summary) == (
            AlertState.FIRING, "psu", "psu is offline"
        )  # fmt: skip
        await hub.publish(StatusEvent("psu", InstrumentState.ONLINE, time.time()))
        assert (await next_alert(events)).state is AlertState.RESOLVED
