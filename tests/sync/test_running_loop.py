"""aiotmc.sync called from a thread that runs its own event loop (as in Jupyter): the
caller's loop is never touched, and calling from the sync loop thread itself is refused."""

from __future__ import annotations

import asyncio

import pytest
import trio
import trio.lowlevel

import aiotmc.sync
from aiotmc.sim.devices import create_device
from aiotmc.sync._portal import portal_for


def _use() -> str:
    with aiotmc.sync.open("SIM::dmm::in-loop", device=create_device("dmm")) as inst:
        return inst.query("*IDN?")


def test_inside_a_running_asyncio_loop(sync_backend: str) -> None:
    async def cell() -> str:
        loop = asyncio.get_running_loop()
        answer = _use()  # blocking call from inside the running loop
        assert asyncio.get_running_loop() is loop
        return answer

    assert asyncio.run(cell()).startswith("aiotmc,SIM-DMM")


def test_inside_a_running_trio_loop(sync_backend: str) -> None:
    async def cell() -> str:
        return _use()

    assert trio.run(cell).startswith("aiotmc,SIM-DMM")


def test_calling_from_the_sync_loop_thread_is_refused(sync_backend: str) -> None:
    portal = portal_for()

    async def nested() -> None:
        await asyncio.sleep(0) if sync_backend == "asyncio" else await trio.lowlevel.checkpoint()

    def inside() -> None:
        portal.run(nested)

    with pytest.raises(RuntimeError, match="its own event-loop thread"):
        portal.call(inside)
