"""Service requests everywhere: native fan-out, the opt-in *STB? poller on raw sockets,
and the *OPC completion helper (by SRQ, by polled SRQ, by *OPC? fallback)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream

import aiotmc
from aiotmc import EventStatus, ServiceRequest, StatusByte
from aiotmc.sim.device import SimDevice
from aiotmc.sim.devices import create_device
from aiotmc.sim.server import SimServer
from aiotmc.srq_poll import SrqPoller, poll_service_requests

from .conftest import OpenSim

SRQ_SETUP = "*CLS;*ESE 1;*SRE 32"


@asynccontextmanager
async def open_tcp(device: SimDevice, **options: Any) -> AsyncIterator[aiotmc.Instrument]:
    async with SimServer(device) as server, aiotmc.open(server.resource, **options) as inst:
        yield inst


async def scope_srq(
    inst: aiotmc.Instrument, events: MemoryObjectReceiveStream[ServiceRequest]
) -> ServiceRequest:
    """Run one :SINGle acquisition ending in *OPC -> ESB -> SRQ and receive the event."""
    await inst.write(":SINGle;*OPC")
    await inst.trigger()
    with anyio.fail_after(5):
        return await events.receive()


# -- the poller on raw sockets ---------------------------------------------------------------


async def test_polling_delivers_srq_over_tcp() -> None:
    scope = create_device("scope", acquisition_time=0.0)
    async with open_tcp(scope, srq_poll_interval=0.01) as inst:
        poller = inst.srq_poller
        assert isinstance(poller, SrqPoller)
        await inst.write(SRQ_SETUP)
        async with inst.service_requests() as events:
            event = await scope_srq(inst, events)
        assert StatusByte.RQS in event.status and StatusByte.ESB in event.status
        assert event.source == inst.resource
        assert event.monotonic > 0 and event.wall > 0
        async with inst.lock():  # clear ESB; a poll cannot slip in before rearm()
            assert EventStatus.OPC in EventStatus(int(await inst.query("*ESR?")))
            poller.rearm()
        assert poller.polls >= 1 and poller.failures == 0
        # wait_for_srq works the same way
        async with anyio.create_task_group() as tg:

            async def later() -> None:
                await anyio.wait_all_tasks_blocked()
                await inst.write(":SINGle;*OPC")
                await inst.trigger()

            tg.start_soon(later)
            srq = await inst.wait_for_srq(timeout=5)
        assert StatusByte.RQS in srq.status
    assert inst.srq_poller is None  # stopped with the instrument


async def test_without_polling_tcp_has_no_srq() -> None:
    async with open_tcp(create_device("scope")) as inst:
        assert inst.srq_poller is None
        with pytest.raises(aiotmc.UnsupportedOperation, match="srq_poll_interval"):
            inst.service_requests()
        with pytest.raises(aiotmc.UnsupportedOperation, match="service-request"):
            await inst.wait_for_srq(timeout=1)


async def test_polling_is_ignored_where_srq_is_native() -> None:
    async with aiotmc.open(
        "SIM::scope::native", device=create_device("scope"), srq_poll_interval=0.01
    ) as inst:
        assert inst.srq_poller is None
        assert inst.transport.srq is not None


async def test_poller_ends_subscriptions_when_instrument_closes() -> None:
    async with open_tcp(create_device("dmm"), srq_poll_interval=0.01) as inst:
        async with inst.service_requests() as events:
            await inst.aclose()
            with anyio.fail_after(5):
                async for _ in events:
                    pytest.fail("no service request expected")  # pragma: no cover
        assert inst.srq_poller is not None
        assert inst.srq_poller.broadcaster.subscriber_count == 0


async def test_poller_survives_failed_polls() -> None:
    scope = create_device("scope", acquisition_time=0.0)
    async with SimServer(scope) as server, aiotmc.open(server.resource) as inst:
        await inst.write(SRQ_SETUP)
        await inst.query("*OPC?")
        scope.delay_next_responses(float("inf"))  # the first poll never gets an answer
        async with poll_service_requests(inst, 0.01, timeout=0.05) as poller:
            with pytest.raises(RuntimeError, match="already polled"):
                async with poll_service_requests(inst, 0.01):
                    pass  # pragma: no cover
            async with inst.service_requests() as events:
                event = await scope_srq(inst, events)
            assert StatusByte.ESB in event.status
            assert poller.failures >= 1 and isinstance(poller.last_error, aiotmc.ReadTimeout)
        assert inst.srq_poller is None
        with pytest.raises(aiotmc.UnsupportedOperation):
            inst.service_requests()


async def test_poll_interval_must_be_positive() -> None:
    async with open_tcp(create_device("dmm")) as inst:
        with pytest.raises(ValueError, match="positive"):
            async with poll_service_requests(inst, 0):
                pass  # pragma: no cover
    async with SimServer(create_device("dmm")) as server:
        with pytest.raises(ValueError, match="positive"):
            async with aiotmc.open(server.resource, srq_poll_interval=-1):
                pass  # pragma: no cover


async def test_poller_edge_logic() -> None:
    async with open_tcp(create_device("dmm")) as inst:
        poller = SrqPoller(inst, 1.0)
        assert not poller._serial_poll  # *STB?: MSS is a level
        mss = int(StatusByte.RQS | StatusByte.ESB)
        for status in (0, mss, mss, mss | int(StatusByte.MAV), 0, mss):
            poller._observe(status)
        assert poller.broadcaster.published == 2  # two rising edges
        poller.rearm()  # status cleared under the lock: the next MSS is a new request
        poller._observe(mss)
        assert poller.broadcaster.published == 3
        poller._serial_poll = True  # a serial poll clears RQS: every RQS read is new
        poller._observe(mss)
        poller._observe(mss)
        assert poller.broadcaster.published == 5


# -- native fan-out --------------------------------------------------------------------------


async def test_fan_out_slow_subscriber_does_not_block() -> None:
    scope = create_device("scope", acquisition_time=0.0)
    async with aiotmc.open("SIM::scope::fanout", device=scope) as inst:
        srq = inst.transport.srq
        assert srq is not None
        await inst.write(SRQ_SETUP)
        async with (
            inst.service_requests(buffer=8) as fast1,
            inst.service_requests(buffer=8) as fast2,
            inst.service_requests(buffer=1) as slow,  # never read until the end
        ):
            assert srq.subscriber_count == 3
            for _ in range(3):
                await scope_srq(inst, fast1)
                await inst.query("*ESR?")  # clear ESB: the next completion is a new request
            with anyio.fail_after(5):
                got2 = [await fast2.receive() for _ in range(3)]
            assert all(StatusByte.ESB in e.status for e in got2)
            assert srq.dropped == 2  # the slow subscriber missed two, nobody waited
            first = slow.receive_nowait()
            assert first.monotonic <= got2[1].monotonic
            with pytest.raises(anyio.WouldBlock):
                slow.receive_nowait()
        assert srq.subscriber_count == 0


# -- the completion helper -------------------------------------------------------------------


async def test_wait_operation_complete_by_srq(open_sim: OpenSim) -> None:
    async with open_sim(device=create_device("scope", acquisition_time=0.0)) as inst:
        await inst.write(":TRIG:SOUR IMM")
        with anyio.fail_after(10):
            timing = await inst.wait_operation_complete(":SINGle", timeout=5)
        if open_sim.via == "tcp":  # type: ignore[attr-defined]
            assert timing.method == "opc?" and timing.status is None
        else:
            assert timing.method == "srq"
            assert timing.status is not None and StatusByte.ESB in timing.status
        assert EventStatus.OPC in timing.event_status
        assert timing.completed >= timing.started and timing.elapsed >= 0
        assert int(await inst.query("*ESR?")) == 0  # cleared by the helper
        assert int(await inst.query(":ACQ:NUM?")) == 1
        assert await inst.errors() == []


async def test_operation_block_triggers_before_waiting(open_sim: OpenSim) -> None:
    async with open_sim("scope") as inst:  # :TRIG:SOUR BUS: completes after the trigger
        with anyio.fail_after(10):
            async with inst.operation(":SINGle", timeout=5) as op:
                assert op.uses_srq == (open_sim.via != "tcp")  # type: ignore[attr-defined]
                await inst.trigger()
            assert op.timing is not None
            assert EventStatus.OPC in op.timing.event_status
            # wait() is idempotent once done
            assert await op.wait() is op.timing
        assert int(await inst.query(":ACQ:NUM?")) == 1


async def test_wait_operation_complete_by_polled_srq() -> None:
    scope = create_device("scope", acquisition_time=0.02)
    async with open_tcp(scope, srq_poll_interval=0.005) as inst:
        for expected in (1, 2):  # twice: the second must see a fresh edge
            with anyio.fail_after(10):
                async with inst.operation(":SINGle", timeout=5) as op:
                    assert op.uses_srq
                    await inst.trigger()
            assert op.timing is not None and op.timing.method == "srq"
            assert op.timing.elapsed >= 0.02
            assert int(await inst.query(":ACQ:NUM?")) == expected


async def test_wait_operation_complete_by_opc_query_fallback() -> None:
    dmm = create_device("dmm", measurement_time=0.01)
    async with open_tcp(dmm) as inst:
        with anyio.fail_after(10):
            timing = await inst.wait_operation_complete(["TRIG:SOUR IMM", "INIT"], timeout=5)
        assert timing.method == "opc?" and timing.elapsed >= 0.01
        assert EventStatus.OPC in timing.event_status
        assert float(await inst.query("FETC?")) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("poll", [False, True])
async def test_operation_timeout(poll: bool) -> None:
    dmm = create_device("dmm")
    options = {"srq_poll_interval": 0.01} if poll else {}
    async with open_tcp(dmm, **options) as inst:
        await inst.write("TRIG:SOUR BUS")
        with anyio.fail_after(10), pytest.raises(aiotmc.ReadTimeout):
            await inst.wait_operation_complete("INIT", timeout=0.2)  # never triggered
        if not poll:
            # the instrument still executes *OPC? (a raw socket has no device clear): it is
            # busy until the operation ends; here the front panel's "clear" ends it
            dmm.device_clear()
        with anyio.fail_after(10):
            assert "SIM-DMM" in await inst.query("*IDN?")  # usable afterwards


async def test_operation_timeout_native_srq() -> None:
    async with aiotmc.open("SIM::dmm::timeout", device=create_device("dmm")) as inst:
        await inst.write("TRIG:SOUR BUS")
        with anyio.fail_after(10), pytest.raises(aiotmc.ReadTimeout, match="no service request"):
            await inst.wait_operation_complete("INIT", timeout=0.1)
