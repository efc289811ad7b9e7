"""Fixtures for aiotmc.sync: a blocking instrument over SIM:: and over TCP (the SimServer
runs in the sync event-loop thread), on each sync backend (asyncio, trio)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest

import aiotmc.sync
from aiotmc.sim.device import SimDevice
from aiotmc.sim.devices import create_device
from aiotmc.sim.server import SimServer
from aiotmc.sync._portal import portal_for

OpenSync = Callable[..., AbstractContextManager[aiotmc.sync.SyncInstrument]]


@pytest.fixture(params=["asyncio", "trio"])
def sync_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The sync event loop's backend for this test (one loop thread per backend)."""
    backend = str(request.param)
    monkeypatch.setenv("AIOTMC_SYNC_BACKEND", backend)
    return backend


@pytest.fixture(params=["sim", "tcp"])
def open_sync(request: pytest.FixtureRequest, sync_backend: str) -> OpenSync:
    """``with open_sync("dmm") as inst`` through SIM:: or TCP, on the current backend."""
    via = str(request.param)

    @contextmanager
    def opener(
        model: str = "dmm", *, device: SimDevice | None = None, **options: Any
    ) -> Iterator[aiotmc.sync.SyncInstrument]:
        dev = device or create_device(model)
        if via == "sim":
            with aiotmc.sync.open("SIM::sync::test", device=dev, **options) as inst:
                yield inst
        else:
            with (
                portal_for(sync_backend).hold(SimServer(dev)) as server,
                aiotmc.sync.open(server.resource, **options) as inst,
            ):
                yield inst

    return opener
