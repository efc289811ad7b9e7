"""Instrument sources against the simulators: in-process (SIM::) and a real TCP server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import ObjectReceiveStream

import aiotmc
from aiotmc.gateway import Event, InstrumentState, Quality, Reading, StatusEvent
from aiotmc.gateway.config import ChannelConfig, InstrumentConfig, InstrumentDirectory
from aiotmc.gateway.hub import GatewayHub
from aiotmc.gateway.sources import InstrumentSource, parse_value
from aiotmc.gateway.spool import Spool
from aiotmc.sim.devices import SimDmm
from aiotmc.sim.server import SimServer


@asynccontextmanager
async def running(
    tmp_path: Path, instrument: InstrumentConfig, **kwargs: Any
) -> AsyncIterator[tuple[InstrumentSource, ObjectReceiveStream[Event]]]:
    """A source with its spool and hub, started; yields it and a hub subscription."""
    hub = GatewayHub(gateway_id="gw", site="lab", host="h")
    directory = InstrumentDirectory({instrument.name})
    async with Spool(tmp_path / "spool.sqlite", gateway_id="gw", site="lab", host="h") as spool:
        spool.on_commit = hub.publish_nowait
        source = InstrumentSource(instrument, spool=spool, hub=hub, directory=directory, **kwargs)
        hub.add_source(source)
        async with anyio.create_task_group() as group, hub.subscribe("test") as events:
            await group.start(spool.run)
            await group.start(source.run)
            yield source, events
            group.cancel_scope.cancel()


async def next_matching(
    events: ObjectReceiveStream[Event], predicate: Callable[[Event], bool], limit: int = 10_000
) -> Event:
    """The next event that satisfies ``predicate`` (bounded in count; use under a timeout)."""
    for _ in range(limit):
        event = await events.receive()
        if predicate(event):
            return event
    raise AssertionError(f"no matching event among {limit}")


def _status(state: InstrumentState) -> Callable[[Event], bool]:
    return lambda e: isinstance(e, StatusEvent) and e.state is state


def _reading(channel: str, quality: Quality = Quality.GOOD) -> Callable[[Event], bool]:
    return lambda e: isinstance(e, Reading) and e.channel == channel and e.quality is quality


def test_parse_value() -> None:
    assert parse_value("+1.5E+00\n", "float") == 1.5
    assert parse_value("+7", "int") == 7 and parse_value("7.0", "int") == 7
    assert parse_value("ON", "bool") is True and parse_value("0", "bool") is False
    assert parse_value('"hello"', "str") == "hello"
    for text, kind in (("abc", "float"), ("7.5", "int"), ("maybe", "bool")):
        with pytest.raises(ValueError):
            parse_value(text, kind)


async def test_periodic_channels_of_a_sim_instrument(tmp_path: Path) -> None:
    config = InstrumentConfig(
        name="psu",
        resource="SIM::psu::sources",
        setup=("APPL 5.0,0.5", "OUTP ON"),
        channels=(
            ChannelConfig("voltage", "MEAS:VOLT?", unit="V", period=0.01),
            ChannelConfig("output", "OUTP?", parse="bool", period=0.01),
            ChannelConfig("idn", "*IDN?", parse="float", period=0.01),  # never a number
        ),
    )
    async with running(tmp_path, config) as (source, events):
        with anyio.fail_after(10):
            online = await next_matching(events, _status(InstrumentState.ONLINE))
            assert isinstance(online, StatusEvent) and online.detail == "SIM::psu::sources"
            volts = [await next_matching(events, _reading("voltage")) for _ in range(3)]
            output = await next_matching(events, _reading("output"))
            bad = await next_matching(events, _reading("idn", Quality.BAD))
        assert source.current is not None  # the controller's way in
        async with source.hub.instrument("psu") as inst:
            assert await inst.query("VOLT?") == "+5.000000000E+00"
    assert all(isinstance(r, Reading) and r.value == 5.0 and r.unit == "V" for r in volts)
    seqs = [r.seq for r in volts if isinstance(r, Reading)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    assert isinstance(output, Reading) and output.value is True
    assert isinstance(bad, Reading) and bad.value is None
    stats = source.stats()
    assert stats.state is InstrumentState.ONLINE and stats.readings >= 5 and stats.errors >= 1


async def test_a_tcp_instrument_that_disconnects_goes_offline_then_back(tmp_path: Path) -> None:
    device = SimDmm()
    async with SimServer(device) as server:
        config = InstrumentConfig(
            name="dmm",
            resource=server.resource,
            channels=(ChannelConfig("volts", "MEAS:VOLT?", unit="V", period=0.02),),
            retry_min=0.01,
        )
        async with running(tmp_path, config) as (source, events):
            with anyio.fail_after(10):
                await next_matching(events, _status(InstrumentState.ONLINE))
                await next_matching(events, _reading("volts"))
                server.disconnect_all()  # TCP reset under the instrument
                offline = await next_matching(events, _status(InstrumentState.OFFLINE))
                assert source.current is None
                await next_matching(events, _status(InstrumentState.ONLINE))
                after = await next_matching(events, _reading("volts"))
            assert isinstance(offline, StatusEvent) and "ConnectionLost" in offline.detail
            assert isinstance(after, Reading) and after.value == pytest.approx(1.0, abs=1e-3)
            assert source.stats().reconnects == 1


async def test_an_unreachable_instrument_is_offline_and_its_channels_go_stale(
    tmp_path: Path,
) -> None:
    async with SimServer(SimDmm()) as server:
        resource = server.resource  # then closed: nothing listens there any more
    config = InstrumentConfig(
        name="dmm",
        resource=resource,
        channels=(ChannelConfig("volts", "MEAS:VOLT?", period=0.05, stale_after=0.2),),
        retry_min=0.01,
        retry_max=0.05,
    )
    async with running(tmp_path, config) as (source, events):
        with anyio.fail_after(10):
            offline = await next_matching(events, _status(InstrumentState.OFFLINE))
            stale = await next_matching(events, _reading("volts", Quality.STALE))
    assert isinstance(offline, StatusEvent) and "Connect" in offline.detail
    assert isinstance(stale, Reading) and stale.value is None
    assert source.stats().errors >= 1 and source.stats().state is InstrumentState.OFFLINE


async def test_on_srq_channels_read_when_the_instrument_requests_service(tmp_path: Path) -> None:
    device = SimDmm(measurement_time=0.02, input_voltage=2.5)

    def opener(resource: str, **options: Any) -> Any:
        return aiotmc.open(resource, device=device, **options)

    config = InstrumentConfig(
        name="dmm",
        resource="SIM::dmm::srq",
        setup=("*CLS", "*ESE 1", "*SRE 32"),
        channels=(ChannelConfig("volts", "FETC?", on_srq=True, arm="*CLS;INIT;*OPC"),),
    )
    async with running(tmp_path, config, opener=opener) as (_source, events):
        with anyio.fail_after(10):
            readings = [await next_matching(events, _reading("volts")) for _ in range(3)]
    assert [r.value for r in readings if isinstance(r, Reading)] == [
        pytest.approx(2.5, abs=1e-3)
    ] * 3


@asynccontextmanager
async def served(kind: str, device: SimDmm) -> AsyncIterator[str]:
    """``device`` behind a real attachment of kind ``kind``; yields its resource name."""
    if kind == "sim":
        yield "SIM::dmm::gateway-transports"
    elif kind == "tcp":
        async with SimServer(device) as server:
            yield server.resource
    elif kind == "vxi11":
        from aiotmc.sim.vxi11_server import serve_vxi11

        async with serve_vxi11([device]) as (_, resources):
            yield resources[0]
    elif kind == "hislip":
        from aiotmc.sim.hislip_server import HislipServer

        async with HislipServer(device) as hislip:
            yield hislip.resource
    elif kind == "serial":
        from aiotmc.sim.pty_server import PtyServer

        async with PtyServer(device) as pty:
            yield pty.resource
    elif kind == "gpib":
        from aiotmc.sim.prologix_server import PrologixServer

        async with PrologixServer({7: device}) as adapter:
            yield adapter.resource(7)
    else:
        from ..conftest import fake_usb_bus

        with fake_usb_bus({"GW1": device}) as resources:
            yield resources["GW1"]


@pytest.mark.parametrize("kind", ["sim", "tcp", "vxi11", "hislip", "serial", "gpib", "usb"])
async def test_instruments_of_every_transport(tmp_path: Path, kind: str) -> None:
    device = SimDmm(input_voltage=3.25)
    if kind == "sim":
        from aiotmc.transports.sim import shared_device

        shared = shared_device("dmm", "gateway-transports")
        assert isinstance(shared, SimDmm)
        shared.input_voltage = 3.25
    async with served(kind, device) as resource:
        config = InstrumentConfig(
            name="dmm",
            resource=resource,
            channels=(ChannelConfig("volts", "MEAS:VOLT?", unit="V", period=0.05),),
        )
        async with running(tmp_path, config) as (_source, events):
            with anyio.fail_after(15):
                online = await next_matching(events, _status(InstrumentState.ONLINE))
                reading = await next_matching(events, _reading("volts"))
    assert isinstance(online, StatusEvent) and online.detail == resource
    assert isinstance(reading, Reading) and reading.value == pytest.approx(3.25, abs=1e-3)


async def test_on_srq_over_a_raw_socket_by_polling(tmp_path: Path) -> None:
    # measurements finish at once: the request clears (*CLS) and sets again between two
    # polls, which only the rearm after each arm makes visible
    device = SimDmm(measurement_time=0.0, input_voltage=4.5)
    async with SimServer(device) as server:
        config = InstrumentConfig(
            name="dmm",
            resource=server.resource,
            options={"srq_poll_interval": 0.01},
            setup=("*CLS", "*ESE 1", "*SRE 32"),
            channels=(ChannelConfig("volts", "FETC?", on_srq=True, arm="*CLS;INIT;*OPC"),),
        )
        async with running(tmp_path, config) as (_source, events):
            with anyio.fail_after(10):
                readings = [await next_matching(events, _reading("volts")) for _ in range(3)]
    assert [r.value for r in readings if isinstance(r, Reading)] == [
        pytest.approx(4.5, abs=1e-3)
    ] * 3
