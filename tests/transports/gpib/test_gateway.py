"""GPIB through a VXI-11.2 LAN/GPIB gateway: the conformance kit on one of several
instruments behind the simulator's gateway, the same instruments as ``GPIB0::N::INSTR``
with the gateway as board 0, and the bus operations on the interface link."""

from __future__ import annotations

import anyio

import aiotmc
from aiotmc.protocol.vxi11 import BusStatus
from aiotmc.sim.devices import create_device
from aiotmc.sim.vxi11_server import Vxi11Server
from aiotmc.testing import CHECKS, check_transport, conformance_device
from aiotmc.transports.gpib import board
from aiotmc.transports.vxi11 import Vxi11Transport, gateway


def _devices() -> dict[str, aiotmc.sim.SimDevice]:
    return {
        "gpib0,5": create_device("dmm"),
        "gpib0,12": conformance_device(),
        "gpib0,22": create_device("psu"),
        "gpib0,9,2": conformance_device(),
    }


async def test_conformance_behind_a_gateway() -> None:
    async with Vxi11Server(_devices()) as server:
        with anyio.fail_after(150):
            report = await check_transport(
                lambda: aiotmc.open_transport(server.resource("gpib0,12"))
            )
    assert list(report) == list(CHECKS)
    assert report["cancellation"].cancelled > 50, report["cancellation"]


async def test_gpib_names_through_the_gateway_board() -> None:
    devices = _devices()
    async with Vxi11Server(devices) as server:
        with board(server.resource("gpib0")):
            async with (
                aiotmc.open("GPIB0::5::INSTR") as dmm,
                aiotmc.open("GPIB0::9::2::INSTR") as secondary,
                aiotmc.open("GPIB0::12::INSTR") as kit,
                aiotmc.open(server.resource("gpib0"), srq=False) as interface,
            ):
                assert isinstance(kit.transport, Vxi11Transport)
                assert await dmm.query("*IDN?") == devices["gpib0,5"].identity
                assert await secondary.query("ECHO? sad") == "sad"
                await kit.write("*CLS;*ESE 1;*SRE 32")
                async with kit.service_requests() as events:
                    await kit.write("*OPC")
                    with anyio.fail_after(10):
                        event = await events.receive()
                assert event.status & 0x40
                # the bus operations users need, on the gateway's interface link
                bus = interface.transport
                assert isinstance(bus, Vxi11Transport)
                await gateway.set_ren(bus, True)
                assert await gateway.bus_status(bus, BusStatus.REMOTE) == 1
                await gateway.interface_clear(bus)
                assert server.buses["gpib0"].listeners == set()
                assert await kit.query("ECHO? after IFC") == "after IFC"


async def test_cancellation_storm_behind_a_gateway() -> None:
    import random
    from contextlib import AsyncExitStack

    from ...hardening.storm import Storm, iterations

    devices = _devices()
    device = devices["gpib0,12"]
    async with Vxi11Server(devices) as server:

        async def opener(stack: AsyncExitStack) -> aiotmc.Instrument:
            return await stack.enter_async_context(
                aiotmc.open(server.resource("gpib0,12"), timeout=5)
            )

        storm = Storm(
            random.Random(20261207),
            opener,
            block_sizes=(64, 100_000),
            upload_sizes=(1000, 100_000),
            latency=lambda delay: device.delay_next_responses(delay),
        )
        with anyio.fail_after(90):
            report = await storm.run(iterations(300))
    assert report.outcomes["cancelled"] + report.outcomes["fail_after"] > 20
    assert not report.typed_errors, report.typed_errors
