"""HiSLIP locks between two sessions on the simulator: exclusive, shared, waiting, info."""

from __future__ import annotations

import anyio
import pytest

import aiotmc
from aiotmc.sim.hislip_server import HislipServer
from aiotmc.testing import conformance_device
from aiotmc.transports.hislip import HislipTransport


async def test_exclusive_and_shared_locks_between_sessions() -> None:
    async with (
        HislipServer(conformance_device()) as server,
        aiotmc.open_transport(server.resource) as first,
        aiotmc.open_transport(server.resource) as second,
    ):
        assert isinstance(first, HislipTransport) and isinstance(second, HislipTransport)
        with anyio.fail_after(10):
            assert await first.lock_info() == (False, 0)
            assert await first.lock(timeout=0)
            assert await first.lock_info() == (True, 1)
            assert not await second.lock(timeout=0.05)  # held: the server gives up
            assert not await second.lock(timeout=0, shared="grp")
            await first.unlock()
            assert await first.lock(shared="grp")
            assert await second.lock(shared="grp")  # same name: shared
            assert await second.lock_info() == (False, 2)
            await second.unlock()
            await first.unlock()
            with pytest.raises(aiotmc.LocalProtocolError, match="no lock"):
                await first.unlock()
            # a waiting request is granted when the holder releases
            assert await first.lock()
            async with anyio.create_task_group() as tg:
                granted: list[bool] = []

                async def wait_for_it() -> None:
                    granted.append(await second.lock(timeout=5))

                tg.start_soon(wait_for_it)
                await server.wait_sessions(2, lock_waiters=1)
                assert granted == []
                await first.unlock()
            assert granted == [True]
            await second.unlock()


async def test_a_closed_session_releases_its_locks() -> None:
    async with HislipServer(conformance_device()) as server:
        async with aiotmc.open_transport(server.resource) as holder:
            assert isinstance(holder, HislipTransport)
            assert await holder.lock()
        async with aiotmc.open_transport(server.resource) as other:
            assert isinstance(other, HislipTransport)
            with anyio.fail_after(10):
                await server.wait_sessions(1)
                assert await other.lock(timeout=0)
