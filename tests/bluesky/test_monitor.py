"""Monitoring SCPI signals: by service request where the instrument has them (in-process
simulator), by polling where it has not (a raw TCP socket to the simulator server).

asyncio only (ophyd-async); every wait is bounded, none is a sleep.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from ophyd_async.core import NotConnectedError, SignalR, observe_value

import aiotmc
from aiotmc import EventStatus, StatusByte
from aiotmc._background import running
from aiotmc.bluesky import Monitor, ScpiLink, ScpiSignalBackend, scpi_signal_r, scpi_signal_rw
from aiotmc.sim.devices import SimDmm
from aiotmc.sim.server import SimServer

WAIT = 5.0  # seconds: bound on each awaited update


def approx(reading: float) -> Any:
    """A simulated reading as the instrument prints it (10 significant digits)."""
    return pytest.approx(reading, rel=1e-9, abs=0)


class Updates:
    """Collects a signal's monitor callbacks; :meth:`next` waits (bounded) for one."""

    def __init__(self, signal: SignalR[Any]) -> None:
        self.signal = signal
        self.queue: asyncio.Queue[Any] = asyncio.Queue()

    def __call__(self, readings: dict[str, Any]) -> None:
        self.queue.put_nowait(readings[self.signal.name]["value"])

    async def next(self) -> Any:
        with anyio.fail_after(WAIT):
            return await self.queue.get()


@asynccontextmanager
async def subscribed(signal: SignalR[Any]) -> AsyncIterator[Updates]:
    updates = Updates(signal)
    signal.subscribe_reading(updates)
    try:
        yield updates
    finally:
        signal.clear_sub(updates)


def backend_of(signal: SignalR[Any]) -> ScpiSignalBackend[Any]:
    backend = signal._connector.backend
    assert isinstance(backend, ScpiSignalBackend)
    return backend


async def test_srq_monitor_reads_on_the_requests_it_is_told_about() -> None:
    sim = SimDmm(noise=1e-3, seed=5)
    async with aiotmc.open("SIM::bluesky::srq", device=sim) as inst:
        # OPC and EXE both raise ESB -> SRQ; each signal listens for one of them
        await inst.query("*ESE 17;*SRE 32;INIT;*OPC?;*ESR?")
        measured = scpi_signal_r(
            inst, "FETC?", float, monitor=Monitor(event_status=EventStatus.OPC), name="v"
        )
        errors = scpi_signal_r(
            inst, "SYST:ERR:COUN?", int, monitor=Monitor(event_status=EventStatus.EXE), name="e"
        )
        await measured.connect()
        await errors.connect()
        assert backend_of(measured).monitor_mode == "srq"
        async with subscribed(measured) as values, subscribed(errors) as counts:
            assert await values.next() == approx(sim.readings[0])  # the value when subscribing
            assert await counts.next() == 0
            for _ in range(3):
                await inst.write("INIT;*OPC")  # measurement done -> OPC -> SRQ
                assert await values.next() == approx(sim.readings[0])
            await inst.write("VOLT:RANG 5000")  # out of range -> EXE -> SRQ
            assert await counts.next() == 1
            assert values.queue.empty() and counts.queue.empty()
        assert backend_of(measured).monitor_error is None
    assert backend_of(measured).link is backend_of(errors).link is ScpiLink.of(inst)


async def test_any_service_request_rereads_with_the_default_monitor() -> None:
    sim = SimDmm(noise=1e-3, seed=6)
    async with aiotmc.open("SIM::bluesky::any", device=sim) as inst:
        await inst.query("*ESE 1;*SRE 32;INIT;*OPC?;*ESR?")
        signal = scpi_signal_r(inst, "FETC?", float, name="v")
        await signal.connect()
        async with subscribed(signal) as values:
            first = await values.next()
            await inst.write("INIT;*OPC")
            second = await values.next()
            assert second == approx(sim.readings[0]) != first
            await inst.query("*ESR?")  # clearing ESB is the user's job without event_status
            await inst.write("INIT;*OPC")
            assert await values.next() == approx(sim.readings[0]) != second


async def test_status_byte_filter_skips_other_requests() -> None:
    sim = SimDmm(noise=1e-3, seed=7)
    async with aiotmc.open("SIM::bluesky::stb", device=sim) as inst:
        await inst.query("*ESE 1;*SRE 32;INIT;*OPC?;*ESR?")
        quiet = scpi_signal_r(inst, "FETC?", float, monitor=Monitor(status=StatusByte.MAV))
        loud = scpi_signal_r(inst, "FETC?", float, monitor=Monitor(status=StatusByte.ESB))
        quiet.set_name("quiet")
        loud.set_name("loud")
        await quiet.connect()
        await loud.connect()
        async with subscribed(quiet) as q, subscribed(loud) as lo:
            await q.next()
            await lo.next()
            await inst.write("INIT;*OPC")
            assert await lo.next() == approx(sim.readings[0])
            await inst.query("*ESR?")
            await inst.write("INIT;*OPC")
            assert await lo.next() == approx(sim.readings[0])
            assert q.queue.empty()  # MAV never requested service


@asynccontextmanager
async def tcp_dmm(sim: SimDmm, **options: Any) -> AsyncIterator[aiotmc.Instrument]:
    async with SimServer(sim) as server, aiotmc.open(server.resource, **options) as inst:
        yield inst


async def test_polling_without_service_requests_delivers_changes() -> None:
    sim = SimDmm(input_voltage=0.5)
    async with tcp_dmm(sim) as inst:
        assert not inst.transport.info.capabilities.srq
        rng = scpi_signal_r(inst, "VOLT:RANG?", float, monitor=Monitor(poll_period=0.01))
        rng.set_name("range")
        await rng.connect()
        assert backend_of(rng).monitor_mode == "poll"
        async with subscribed(rng) as values:
            assert await values.next() == 1.0  # auto range for 0.5 V
            sim.input_voltage = 50.0  # the instrument changes by itself
            assert await values.next() == 100.0  # delivered once, when it changed
            sim.input_voltage = 5.0
            assert await values.next() == 10.0
        assert values.queue.empty()


async def test_observe_value_polls_a_read_write_signal() -> None:
    sim = SimDmm()
    async with tcp_dmm(sim) as inst:
        level = scpi_signal_rw(
            inst, "VOLT:RANG", float, monitor=Monitor(poll_period=0.01), name="level"
        )
        await level.connect()
        seen = []
        with anyio.fail_after(WAIT):
            async for value in observe_value(level):
                seen.append(value)
                if value == 1.0:  # auto range for the 1 V input
                    await level.set(100.0)  # put: VOLT:RANG 100;*OPC? then SYST:ERR?
                elif value == 100.0:
                    break
        assert seen == [1.0, 100.0]
        assert sim.range == 100.0 and not sim.auto_range


async def test_polled_service_requests_count_as_service_requests() -> None:
    """An instrument opened with srq_poll_interval has (polled) service requests: used."""
    sim = SimDmm(noise=1e-3, seed=8)
    async with tcp_dmm(sim, srq_poll_interval=0.01) as inst:
        await inst.query("*ESE 1;*SRE 32;INIT;*OPC?;*ESR?")
        signal = scpi_signal_r(
            inst, "FETC?", float, monitor=Monitor(event_status=EventStatus.OPC), name="v"
        )
        await signal.connect()
        assert backend_of(signal).monitor_mode == "srq"
        async with subscribed(signal) as values:
            await values.next()
            for _ in range(2):
                await inst.write("INIT;*OPC")
                assert await values.next() == approx(sim.readings[0])


async def test_polling_can_be_forced_and_read_errors_are_kept() -> None:
    sim = SimDmm()
    async with aiotmc.open("SIM::bluesky::forced", device=sim) as inst:
        bad = scpi_signal_r(
            inst, "*IDN?", float, monitor=Monitor(srq=False, poll_period=0.01), name="bad"
        )
        await bad.connect()
        backend = backend_of(bad)
        assert backend.monitor_mode == "poll"
        failures: asyncio.Queue[Exception] = asyncio.Queue()
        keep = backend._failed
        backend._failed = lambda exc: (keep(exc), failures.put_nowait(exc))  # type: ignore[method-assign]
        updates = Updates(bad)
        bad.subscribe_reading(updates)
        try:
            with anyio.fail_after(WAIT):
                first = await failures.get()
                second = await failures.get()  # the monitor goes on after a failed read
        finally:
            bad.clear_sub(updates)
        assert isinstance(first, aiotmc.RemoteProtocolError) and "SIM-DMM" in str(first)
        assert isinstance(second, aiotmc.RemoteProtocolError)
        assert backend.monitor_error is second
        assert updates.queue.empty()


async def test_closing_the_link_stops_the_monitors() -> None:
    before = running()
    link = ScpiLink("SIM::bluesky::closing", device=SimDmm())
    signal = scpi_signal_r(link, "VOLT:RANG?", float, monitor=Monitor(srq=False), name="r")
    await signal.connect()
    updates = Updates(signal)
    signal.subscribe_reading(updates)
    assert await updates.next() == 1.0
    assert running() > before
    await link.aclose()
    assert running() == before  # monitor and simulator clock tasks ended
    assert not link.is_open
    await link.aclose()  # idempotent


async def test_a_put_refreshes_a_monitored_signal() -> None:
    """No service request comes (none is enabled): the put itself reads the value back, so
    a staged signal's cache is never stale after a move."""
    async with aiotmc.open("SIM::bluesky::put", device=SimDmm()) as inst:
        level = scpi_signal_rw(inst, "VOLT:RANG", float, name="level")
        await level.connect()
        assert backend_of(level).monitor_mode == "srq"
        await level.stage()  # ophyd-async caches (monitors) a staged signal
        try:
            assert await level.get_value() == 1.0  # from the cache
            await level.set(100.0)
            reading = await level.read()  # from the cache too
            assert reading["level"]["value"] == 100.0
            assert await level.get_value(cached=False) == 100.0
        finally:
            await level.unstage()


async def test_a_monitor_stopped_mid_exchange_finishes_it() -> None:
    sim = SimDmm()
    reached = asyncio.Event()

    def slow(call: Any) -> int:
        reached.set()
        sim.delay_next_responses(0.05)  # the answer leaves 50 ms after the query arrived
        return 42

    sim.add_command("SLOW?", slow)
    async with aiotmc.open("SIM::bluesky::stop", device=sim) as inst:
        signal = scpi_signal_r(
            inst, "SLOW?", int, monitor=Monitor(srq=False, poll_period=0.001), name="slow"
        )
        await signal.connect()
        backend = backend_of(signal)
        reads = {"started": 0, "done": 0}
        read = backend.converter.read

        async def counted(instrument: aiotmc.Instrument, query: str) -> Any:
            reads["started"] += 1
            value = await read(instrument, query)
            reads["done"] += 1
            return value

        backend.converter.read = counted  # type: ignore[method-assign]
        updates = Updates(signal)
        signal.subscribe_reading(updates)
        assert await updates.next() == 42
        task = backend._task
        assert task is not None
        reached.clear()
        with anyio.fail_after(WAIT):
            await reached.wait()  # the next query is at the instrument, its answer pending
        signal.clear_sub(updates)  # stops the monitor now
        with anyio.fail_after(WAIT):
            await task.wait()
        assert reads["started"] == reads["done"] == 2  # the exchange ended, not cut
        assert updates.queue.empty()  # nothing delivered after the stop
        assert backend.monitor_error is None
        assert await inst.query("*IDN?") == "aiotmc,SIM-DMM,0001,0.1"  # in step


async def test_subscribing_before_connect_fails_at_once() -> None:
    signal = scpi_signal_r(ScpiLink("SIM::bluesky::unopened", device=SimDmm()), "X?", float)
    with pytest.raises(NotConnectedError):
        backend_of(signal).set_callback(lambda reading: None)


@pytest.mark.parametrize(
    "kwargs",
    [{"poll_period": p} for p in (0, -1.0, float("nan"), "1", True)],
)
def test_monitor_rejects_bad_periods(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="poll_period"):
        Monitor(**kwargs)
