"""Fixtures for aiotmc.bluesky: a RunEngine on its own event-loop thread, a simulated DMM.

ophyd-async, and so aiotmc.bluesky, runs on asyncio only: the async tests of this folder
override ``anyio_backend`` to asyncio alone (trio is not a backend ophyd-async supports),
and bluesky's RunEngine runs its own asyncio loop in a thread, where devices connect.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterator
from typing import Any, TypeVar

import pytest
from bluesky import RunEngine
from ophyd_async.core import init_devices

from aiotmc.bluesky import ScpiDmm
from aiotmc.sim.devices import SimDmm

T = TypeVar("T")

RUN_TIMEOUT = 10.0  # seconds, for any coroutine run in the RunEngine's loop


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # ophyd-async supports asyncio only


@pytest.fixture(scope="module")
def RE() -> Iterator[RunEngine]:
    """A RunEngine (no SIGINT handler: pytest owns the main thread); its loop thread is
    stopped and the loop closed at the end of the module."""
    loop = asyncio.new_event_loop()
    engine = RunEngine({}, loop=loop, context_managers=[])
    try:
        yield engine
    finally:
        loop.call_soon_threadsafe(loop.stop)
        engine._th.join(timeout=5)
        assert not engine._th.is_alive()
        loop.close()


def in_loop(engine: RunEngine, coro: Awaitable[T]) -> T:
    """Run ``coro`` in the RunEngine's loop (where the devices live) and return its result."""
    future = asyncio.run_coroutine_threadsafe(coro, engine.loop)  # type: ignore[arg-type]
    return future.result(timeout=RUN_TIMEOUT)


def make_dmm(**sim_options: Any) -> tuple[ScpiDmm, SimDmm]:
    """A ScpiDmm on a fresh simulated DMM, named and connected by ``init_devices()`` in the
    RunEngine's loop (the RE fixture must exist)."""
    sim = SimDmm(**sim_options)
    with init_devices():
        dmm = ScpiDmm("SIM::bluesky::dmm", device=sim)
    return dmm, sim


@pytest.fixture
def dmm(RE: RunEngine) -> Iterator[tuple[ScpiDmm, SimDmm]]:
    device, sim = make_dmm(noise=1e-3, seed=11)
    try:
        yield device, sim
    finally:
        in_loop(RE, device.aclose())
