"""Overlapped mode: mode negotiation at device clear, pipelined queries matched by
MessageID, the conformance kit in overlapped mode, cancellation of a pipeline."""

from __future__ import annotations

import anyio
import pytest

import aiotmc
from aiotmc.sim.hislip_server import HislipServer
from aiotmc.testing import CHECKS, check_transport, conformance_device
from aiotmc.transports.hislip import HislipTransport


async def test_conformance_in_overlapped_mode() -> None:
    device = conformance_device()
    async with HislipServer(device, overlapped=True) as server:
        with anyio.fail_after(180):
            report = await check_transport(
                lambda: aiotmc.open_transport(server.resource, overlapped=True)
            )
    assert list(report) == list(CHECKS)
    sweep = report["cancellation"]
    assert sweep.cancelled > 50 and sweep.completed > 10, sweep
    assert server.counters["interrupted"] == 0  # overlapped: nothing is interrupted
    assert server.counters["rmt_extra"] == server.counters["id_gap"] == 0, server.counters


async def test_pipeline_matches_answers_by_message_id() -> None:
    async with (
        HislipServer(conformance_device(), overlapped=True) as server,
        aiotmc.open_transport(server.resource, overlapped=True) as link,
    ):
        assert isinstance(link, HislipTransport)
        assert link.overlapped and link.info.details["mode"] == "overlapped"
        with anyio.fail_after(20):
            queries = [b"ECHO? %d\n" % i for i in range(100)]
            answers = await link.pipeline(queries, max_size=100)
            assert answers == [b"%d\n" % i for i in range(100)]
            big = await link.pipeline([b"TEXT? 3000000,12345678\n", b"ECHO? x\n"], max_size=4 << 20)
            assert big[0] == b"12345678" * 375_000 + b"\n" and big[1] == b"x\n"
            assert await link.exchange(b"ECHO? after\n", max_size=100) == b"after\n"


async def test_a_stopped_pipeline_never_crosses_answers() -> None:
    async with (
        HislipServer(conformance_device(), overlapped=True) as server,
        aiotmc.open_transport(server.resource, overlapped=True) as link,
    ):
        assert isinstance(link, HislipTransport)
        with anyio.fail_after(20):
            for steps in range(0, 12):
                with anyio.CancelScope() as scope:

                    async def stop_after(n: int = steps) -> None:
                        for _ in range(n):
                            await anyio.lowlevel.checkpoint()
                        scope.cancel()

                    async with anyio.create_task_group() as tg:
                        tg.start_soon(stop_after)
                        await link.pipeline([b"ECHO? a%d\n" % i for i in range(20)], max_size=100)
                answer = await link.exchange(b"ECHO? b%d\n" % steps, max_size=100)
                assert answer == b"b%d\n" % steps
            with pytest.raises(aiotmc.ReadTimeout):
                await link.pipeline(
                    [b"SLOW? 0.5,late\n"], max_size=100, deadline=anyio.current_time() + 0.05
                )
            assert await link.exchange(b"ECHO? on time\n", max_size=100) == b"on time\n"


async def test_mode_follows_what_both_sides_want() -> None:
    async with (
        HislipServer(conformance_device(), overlapped=True) as server,
        aiotmc.open_transport(server.resource) as link,  # the server prefers overlapped
    ):
        assert isinstance(link, HislipTransport)
        assert not link.overlapped  # ... the client asked for synchronized at open
        with pytest.raises(aiotmc.UnsupportedOperation, match="overlapped"):
            await link.pipeline([b"ECHO? 1\n"], max_size=100)
        assert await link.exchange(b"ECHO? 2\n", max_size=100) == b"2\n"
    async with (
        HislipServer(conformance_device()) as server,
        aiotmc.open_transport(server.resource, overlapped=True) as link,
    ):
        assert isinstance(link, HislipTransport)
        assert not link.overlapped  # not offered by this server
        await link.clear()
        assert not link.overlapped
