"""Service requests on a Prologix bus: ``++srq`` polled while subscribed, the requester
found by serial polls, the event delivered to that instrument only."""

from __future__ import annotations

import anyio
import pytest

import aiotmc
from aiotmc.sim.prologix_server import PrologixServer
from aiotmc.testing import conformance_device
from aiotmc.transports.prologix import PrologixTransport


async def test_the_requester_is_found_and_others_stay_quiet() -> None:
    devices = {5: conformance_device(), 12: conformance_device(), 20: conformance_device()}
    async with (
        PrologixServer(devices) as server,
        aiotmc.open(server.resource(5), srq_interval=0.01) as five,
        aiotmc.open(server.resource(12)) as twelve,
    ):
        assert five.transport.info.capabilities.srq
        assert isinstance(twelve.transport, PrologixTransport)
        poller = twelve.transport.adapter.srq_poller
        await five.write("*CLS;*ESE 1;*SRE 32")
        await twelve.write("*CLS;*ESE 1;*SRE 32")
        assert not any(c == "srq" for c in server.commands)  # nobody subscribed: no polls
        async with five.service_requests() as to_five, twelve.service_requests() as to_twelve:
            await twelve.write("*OPC")
            with anyio.fail_after(10):
                event = await to_twelve.receive()
            assert event.status & 0x60 == 0x60  # RQS and ESB
            assert event.source == server.resource(12)
            with pytest.raises(anyio.WouldBlock):
                to_five.receive_nowait()
            assert not devices[12].requesting_service  # the serial poll released SRQ
        # an instrument not open here (20) asserting SRQ: a round finds no requester
        # (the poller then slows down) and cannot release the line
        devices[20].write(b"*ESE 1;*SRE 32;*OPC\n")
        assert devices[20].requesting_service
        with anyio.fail_after(10):
            assert await poller._round() is True
        assert devices[20].requesting_service
        assert poller.failures == 0 and poller.published == 1
    assert poller._task is None  # stopped with the adapter's last instrument


async def test_wait_for_srq() -> None:
    device = conformance_device()
    async with (
        PrologixServer({12: device}) as server,
        aiotmc.open(server.resource(12), srq_interval=0.01) as inst,
    ):
        await inst.write("*CLS;*ESE 1;*SRE 32")

        async def later() -> None:
            await inst.write("*OPC")

        async with anyio.create_task_group() as tg:
            with anyio.fail_after(10):
                tg.start_soon(later)
                event = await inst.wait_for_srq(timeout=10)
        assert event.status & 0x40


async def test_srq_interval_is_checked() -> None:
    async with PrologixServer({12: conformance_device()}) as server:
        with pytest.raises(ValueError, match="srq_interval"):
            async with aiotmc.open(server.resource(12), srq_interval=0):
                pass  # pragma: no cover
