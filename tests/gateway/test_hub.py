"""The hub: every subscriber its own bounded queue; a full one drops its oldest event."""

from __future__ import annotations

import anyio
import pytest

from aiotmc import GatewayError
from aiotmc.gateway import CommandRequest, InstrumentState, Reading, StatusEvent
from aiotmc.gateway.hub import GatewayHub


def _reading(seq: int) -> Reading:
    return Reading("gw", seq, "lab", "host", "dmm", "volts", float(seq), "V", 1000.0 + seq)


async def test_a_full_queue_drops_its_oldest_for_that_subscriber_only() -> None:
    hub = GatewayHub(gateway_id="gw", site="lab", host="host")
    async with hub.subscribe("slow", maxsize=3) as slow, hub.subscribe("fast", maxsize=100) as fast:
        for seq in range(1, 11):
            await hub.publish(_reading(seq))
        # the slow one kept the newest three, the others were dropped and counted
        kept = [slow.receive_nowait() for _ in range(3)]
        assert [r.seq for r in kept if isinstance(r, Reading)] == [8, 9, 10]
        with pytest.raises(anyio.WouldBlock):
            slow.receive_nowait()
        assert hub.dropped("slow") == 7
        assert hub.dropped("fast") == 0
        assert hub.queue_depth("fast") == 10
        got = [fast.receive_nowait() for _ in range(10)]
        assert [r.seq for r in got if isinstance(r, Reading)] == list(range(1, 11))
        stats = hub.stats()
        assert stats.queue_dropped == {"slow": 7, "fast": 0}
        assert stats.queue_depths == {"slow": 0, "fast": 0}
    # counted after leaving too; a new subscriber only sees what comes next
    assert hub.dropped("slow") == 7
    async with hub.subscribe("late", maxsize=1) as late:
        await hub.publish(StatusEvent("dmm", InstrumentState.OFFLINE, 2000.0, "gone"))
        event = late.receive_nowait()
        assert isinstance(event, StatusEvent) and event.state is InstrumentState.OFFLINE
    assert hub.states == {"dmm": InstrumentState.OFFLINE}
    assert hub.latest["lab/host/dmm/volts"].seq == 10


async def test_a_blocked_consumer_never_blocks_publish() -> None:
    hub = GatewayHub(gateway_id="gw", site="lab", host="host")
    async with hub.subscribe("stuck", maxsize=1):
        with anyio.fail_after(5):
            for seq in range(1000):
                await hub.publish(_reading(seq))
        assert hub.dropped("stuck") == 999


async def test_names_are_unique_and_unknown_instruments_are_refused() -> None:
    hub = GatewayHub(gateway_id="gw", site="lab", host="host")
    async with hub.subscribe("web"):
        with pytest.raises(GatewayError, match="exists already"):
            async with hub.subscribe("web"):
                pass  # pragma: no cover
    with pytest.raises(ValueError, match="maxsize"):
        hub.subscribe("x", maxsize=0)
    with pytest.raises(GatewayError, match="no instrument named 'dmm'"):
        hub.instrument("dmm")
    result = await hub.controller.execute(CommandRequest("alice", "dmm", "scpi", "*RST"))
    assert not result.ok and "not configured" in result.detail
