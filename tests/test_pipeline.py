"""Instrument.pipeline / query_pipelined over HiSLIP overlapped mode: tasks query at once,
answers matched, cancellation drops only the cancelled task's answer."""

from __future__ import annotations

import anyio
import pytest

import aiotmc
from aiotmc.pipeline import Pipeline
from aiotmc.sim.hislip_server import HislipServer
from aiotmc.testing import conformance_device


async def test_query_pipelined_returns_answers_in_order() -> None:
    async with (
        HislipServer(conformance_device(), overlapped=True, strict=True) as server,
        aiotmc.open(server.resource, overlapped=True, timeout=10) as inst,
    ):
        assert inst.transport.info.capabilities.pipelining
        with anyio.fail_after(20):
            commands = [f"ECHO? {i}" for i in range(50)]
            assert await inst.query_pipelined(commands) == [str(i) for i in range(50)]
            assert await inst.query("ECHO? after") == "after"
    assert server.counters["id_gap"] == 0


async def test_tasks_do_not_wait_for_each_others_round_trip() -> None:
    device = conformance_device()
    async with (
        HislipServer(device, overlapped=True, strict=True) as server,
        aiotmc.open(server.resource, overlapped=True, timeout=10) as inst,
    ):
        overlap = inst.transport._overlap  # type: ignore[attr-defined]
        results: dict[int, str] = {}

        async def worker(pipe: Pipeline, index: int) -> None:
            results[index] = await pipe.query(f"ECHO? {index}")

        with anyio.fail_after(20):
            device.delay_next_responses(0.5)  # the first answer is slow: all go out meanwhile
            async with inst.pipeline() as pipe, anyio.create_task_group() as tg:
                for index in range(10):
                    tg.start_soon(worker, pipe, index)
        assert results == {i: str(i) for i in range(10)}
        assert overlap.peak == 10  # every query was in flight at once


async def test_cancelled_tasks_drop_only_their_answers() -> None:
    device = conformance_device()
    async with (
        HislipServer(device, overlapped=True, strict=True) as server,
        aiotmc.open(server.resource, overlapped=True, timeout=10) as inst,
    ):
        results: dict[int, str] = {}
        with anyio.fail_after(20):
            for round_ in range(5):
                device.delay_next_responses(0.05, count=3)
                async with inst.pipeline() as pipe, anyio.create_task_group() as tg:
                    doomed: list[anyio.CancelScope] = []

                    async def victim(index: int, doomed: list[anyio.CancelScope] = doomed) -> None:
                        with anyio.CancelScope() as scope:
                            doomed.append(scope)
                            await pipe.query(f"ECHO? lost{index}")

                    async def survivor(index: int) -> None:
                        results[index] = await pipe.query(f"ECHO? {index}")

                    for index in range(8):
                        tg.start_soon(victim if index % 2 else survivor, index)
                    await anyio.wait_all_tasks_blocked()
                    for scope in doomed:
                        scope.cancel()  # mid-flight: their answers come later and are dropped
                assert results == {i: str(i) for i in range(0, 8, 2)}, round_
                results.clear()
                assert await inst.query("ECHO? next") == "next"  # no stray answer
        assert await inst.query("ECHO? last") == "last"


async def test_short_timeouts_in_a_pipeline() -> None:
    device = conformance_device()
    async with (
        HislipServer(device, overlapped=True, strict=True) as server,
        aiotmc.open(server.resource, overlapped=True, timeout=10) as inst,
    ):
        with anyio.fail_after(20):
            device.delay_next_responses(0.3)
            async with inst.pipeline() as pipe:
                with pytest.raises(aiotmc.ReadTimeout):
                    await pipe.query("ECHO? slow", timeout=0.05)
                assert await pipe.query_many(["ECHO? a", "ECHO? b"]) == ["a", "b"]
            assert await inst.query("ECHO? c") == "c"


async def test_pipelining_needs_overlapped_mode() -> None:
    async with (
        HislipServer(conformance_device(), overlapped=True, strict=True) as server,
        aiotmc.open(server.resource) as inst,  # synchronized by default
    ):
        assert not inst.transport.info.capabilities.pipelining
        with pytest.raises(aiotmc.UnsupportedOperation, match="overlapped"):
            await inst.query_pipelined(["ECHO? 1"])
    async with aiotmc.open("SIM::dmm::INSTR") as inst:
        with pytest.raises(aiotmc.UnsupportedOperation):
            async with inst.pipeline():
                pass


def test_blocking_pipeline_from_threads() -> None:
    """aiotmc.sync: threads sharing one pipeline query at once."""
    import threading

    from anyio.from_thread import start_blocking_portal

    import aiotmc.sync

    with start_blocking_portal() as portal:
        server = HislipServer(conformance_device(), overlapped=True, strict=True)
        with (
            portal.wrap_async_context_manager(server),
            aiotmc.sync.open(server.resource, overlapped=True, timeout=10) as inst,
        ):
            assert inst.query_pipelined(["ECHO? 1", "ECHO? 2"]) == ["1", "2"]
            results: dict[int, str] = {}
            with inst.pipeline() as pipe:
                threads = [
                    threading.Thread(
                        target=lambda i=i: results.__setitem__(i, pipe.query(f"ECHO? {i}"))
                    )
                    for i in range(6)
                ]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join(20)
            assert results == {i: str(i) for i in range(6)}
            assert inst.query("ECHO? end") == "end"


async def test_pipeline_cancellation_storm() -> None:
    """Random timeouts and cancellations among concurrent pipelined queries: every answer
    that arrives is the one its task asked for, and the instrument stays usable."""
    import random

    rng = random.Random(20261206)
    device = conformance_device()
    async with (
        HislipServer(device, overlapped=True, strict=True) as server,
        aiotmc.open(server.resource, overlapped=True, timeout=10) as inst,
    ):
        outcomes = {"answered": 0, "stopped": 0}
        with anyio.fail_after(60):
            for round_ in range(60):
                device.delay_next_responses(rng.choice([0.0, 0.001, 0.005]), count=3)

                async def ask(pipe: Pipeline, tag: str, budget: float) -> None:
                    with anyio.move_on_after(budget) as scope:
                        answer = await pipe.query(f"ECHO? {tag}")
                    if scope.cancelled_caught:
                        outcomes["stopped"] += 1
                    else:
                        assert answer == tag
                        outcomes["answered"] += 1

                async with inst.pipeline() as pipe, anyio.create_task_group() as tg:
                    for index in range(rng.randint(1, 8)):
                        budget = rng.choice([0.0, 0.0005, 0.002, 0.01, 5.0])
                        tg.start_soon(ask, pipe, f"r{round_}q{index}", budget)
                assert await inst.query(f"ECHO? check{round_}") == f"check{round_}"
    assert outcomes["answered"] > 50 and outcomes["stopped"] > 20, outcomes
    assert server.counters["id_gap"] == 0, server.counters
