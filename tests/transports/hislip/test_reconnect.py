"""Automatic reconnection of the HiSLIP client (``aiotmc.open(..., reconnect=...)``)
against the simulator over real sockets: a FatalError, a server stopped and started
again on the same port; SRQ subscribers survive, held locks are reported lost."""

from __future__ import annotations

import anyio
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream

import aiotmc
from aiotmc.reconnect import Reconnect
from aiotmc.sim.hislip_server import HislipServer
from aiotmc.testing import conformance_device

POLICY = Reconnect(attempts=2, backoff=0.01, max_backoff=0.02)


async def _srq_arrives(
    inst: aiotmc.Instrument, events: MemoryObjectReceiveStream[aiotmc.ServiceRequest]
) -> None:
    """A service request on the current session reaches the subscription opened before."""
    await inst.write("*CLS;*ESE 1;*SRE 32;*OPC")
    event = await events.receive()
    assert int(event.status) & 0x60 == 0x60


@pytest.mark.parametrize("overlapped", [False, True], ids=["synchronized", "overlapped"])
async def test_policy_recovers_from_a_fatal_error(overlapped: bool) -> None:
    device = conformance_device()
    async with (
        HislipServer(device, overlapped=overlapped) as server,
        aiotmc.open(server.resource, timeout=5, reconnect=POLICY, overlapped=overlapped) as inst,
    ):
        link = inst.transport
        with anyio.fail_after(20):
            assert await inst.query("ECHO? 1") == "1"
            async with inst.service_requests() as events:
                server.fatal_next = "going down"
                with pytest.raises(aiotmc.SessionBrokenError, match="going down"):
                    await inst.query("ECHO? 2")  # on the wire: fails, never replayed
                assert await inst.query("ECHO? 3") == "3"  # a new session first
                assert link.reconnects == 1  # type: ignore[attr-defined]
                assert link.info.details["session_id"] == "2"
                assert link.info.details["mode"] == ("overlapped" if overlapped else "synchronized")
                await _srq_arrives(inst, events)
            if overlapped:  # the concurrent path restores too
                server.fatal_next = "again"
                async with inst.pipeline() as pipe:
                    with pytest.raises(aiotmc.SessionBrokenError, match="again"):
                        await pipe.query("ECHO? 4")
                    assert await pipe.query("ECHO? 5") == "5"
                assert link.reconnects == 2  # type: ignore[attr-defined]
    assert server.counters["id_gap"] == server.counters["rmt_extra"] == 0


async def test_policy_recovers_after_the_server_restarts_on_the_same_port() -> None:
    device = conformance_device()
    async with HislipServer(device) as first:
        port = first.port
        inst_cm = aiotmc.open(first.resource, timeout=5, reconnect=POLICY)
        inst = await inst_cm.__aenter__()
    try:
        with anyio.fail_after(20):
            async with inst.service_requests() as events:
                # the server is gone: whatever noticed it first (the operation or the
                # reader), the operation fails with a typed error
                with pytest.raises(aiotmc.TransportError):
                    await inst.query("ECHO? 1")
                # now the link knows: the policy tries twice, in vain
                with pytest.raises(aiotmc.ConnectError, match="2 attempt"):
                    await inst.query("ECHO? 2")
                async with HislipServer(device, port=port):
                    assert await inst.query("ECHO? 3") == "3"
                    assert inst.transport.reconnects == 1  # type: ignore[attr-defined]
                    assert await inst.read_stb() & 0x10 == 0
                    await _srq_arrives(inst, events)
    finally:
        await inst_cm.__aexit__(None, None, None)


async def test_without_a_policy_the_typed_error_stays() -> None:
    device = conformance_device()
    async with HislipServer(device) as server, aiotmc.open(server.resource, timeout=5) as inst:
        with anyio.fail_after(20):
            server.fatal_next = "bye"
            with pytest.raises(aiotmc.SessionBrokenError, match="bye"):
                await inst.query("ECHO? 1")
            with pytest.raises(aiotmc.SessionBrokenError):
                await inst.query("ECHO? 2")
            with pytest.raises(aiotmc.SessionBrokenError):
                await inst.read_stb()
            assert inst.transport.reconnects == 0  # type: ignore[attr-defined]
            await inst.reconnect()  # the explicit way still works
            assert await inst.query("ECHO? 3") == "3"


async def test_locks_held_are_reported_lost_once() -> None:
    device = conformance_device()
    async with (
        HislipServer(device) as server,
        aiotmc.open(server.resource, timeout=5, reconnect=POLICY) as inst,
    ):
        link = inst.transport
        with anyio.fail_after(20):
            assert await link.lock(timeout=1.0)  # type: ignore[attr-defined]
            assert await link.lock(timeout=1.0, shared="bench")  # type: ignore[attr-defined]
            server.fatal_next = "lost"
            with pytest.raises(aiotmc.SessionBrokenError):
                await inst.query("ECHO? 1")
            with pytest.raises(aiotmc.LockLostError, match="exclusive, shared 'bench'"):
                await inst.query("ECHO? 2")  # the new session is up, the query not sent
            assert link.reconnects == 1  # type: ignore[attr-defined]
            assert await link.lock_info() == (False, 0)  # type: ignore[attr-defined]
            assert await inst.query("ECHO? 3") == "3"
            # an explicit reconnect reports them too, after the new session is up
            assert await link.lock(timeout=1.0)  # type: ignore[attr-defined]
            with pytest.raises(aiotmc.LockLostError):
                await inst.reconnect()
            assert await inst.query("ECHO? 4") == "4"
            assert link.reconnects == 2  # type: ignore[attr-defined]


async def test_a_status_query_restores_the_session_too() -> None:
    device = conformance_device()
    async with (
        HislipServer(device) as server,
        aiotmc.open(server.resource, timeout=5, reconnect=POLICY) as inst,
    ):
        with anyio.fail_after(20):
            server.fatal_next = "x"
            with pytest.raises(aiotmc.SessionBrokenError):
                await inst.query("ECHO? 1")
            assert await inst.read_stb() & 0x10 == 0  # asynchronous channel, new session
            assert inst.transport.reconnects == 1  # type: ignore[attr-defined]


async def test_an_idle_subscriber_hears_from_the_instrument_after_a_restart() -> None:
    """Under a policy the session comes back in the background: a subscriber on a link
    that runs no operation at all still gets the next service request."""
    device = conformance_device()
    patient = Reconnect(attempts=200, backoff=0.01, max_backoff=0.05)
    async with HislipServer(device) as first:
        port = first.port
        inst_cm = aiotmc.open(first.resource, timeout=5, reconnect=patient)
        inst = await inst_cm.__aenter__()
        assert await inst.query("ECHO? 1") == "1"
    try:
        with anyio.fail_after(20):
            async with inst.service_requests() as events, HislipServer(device, port=port) as second:
                await second.wait_sessions(1)  # the link's own, set up in the background
                async with aiotmc.open(second.resource, timeout=5) as other:
                    await other.write("*CLS;*ESE 1;*SRE 32;*OPC")
                    event = await events.receive()
                assert int(event.status) & 0x60 == 0x60
                assert inst.transport.reconnects == 1  # type: ignore[attr-defined]
                assert await inst.query("ECHO? 2") == "2"
    finally:
        await inst_cm.__aexit__(None, None, None)


async def test_locks_lost_in_a_background_reconnect_are_reported_once() -> None:
    device = conformance_device()
    patient = Reconnect(attempts=200, backoff=0.01, max_backoff=0.05)
    async with HislipServer(device) as first:
        port = first.port
        inst_cm = aiotmc.open(first.resource, timeout=5, reconnect=patient)
        inst = await inst_cm.__aenter__()
        assert await inst.transport.lock(timeout=1.0)  # type: ignore[attr-defined]
    try:
        with anyio.fail_after(20):
            async with HislipServer(device, port=port) as second:
                await second.wait_sessions(1)
                with pytest.raises(aiotmc.LockLostError, match="exclusive"):
                    await inst.query("ECHO? 1")
                assert await inst.query("ECHO? 2") == "2"
    finally:
        await inst_cm.__aexit__(None, None, None)
