"""Remote instruments through a real nats-server and an in-process agent, both backends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from itertools import count

import anyio
import anyio.abc
import pytest

import aiotmc
from aiotmc.agent import Agent, AgentInstrument
from aiotmc.sim.devices import create_device
from aiotmc.testing import CHECKS, check_transport, conformance_device
from aiotmc.testing.device import check_payload
from aiotmc.transports.nats import NatsServer

from ...nats_server import RunningNats

_AGENTS = count(1)


@asynccontextmanager
async def serving(nats: RunningNats, **devices: object) -> AsyncIterator[str]:
    """An agent serving ``devices`` (name -> SimDevice); yields the agent's name."""
    name = f"agent{next(_AGENTS)}"
    instruments = [
        AgentInstrument(key, f"SIM::dmm::{key}", {"device": device})
        for key, device in devices.items()
    ]
    agent = Agent(NatsServer("127.0.0.1", nats.port), name, instruments)
    async with anyio.create_task_group() as tg:
        await tg.start(agent.run)
        yield name
        tg.cancel_scope.cancel()


async def test_query_through_an_agent(nats_server: RunningNats) -> None:
    async with (
        serving(nats_server, dmm=create_device("dmm")) as agent,
        aiotmc.open(f"{nats_server.url}/{agent}/dmm", timeout=5) as inst,
    ):
        idn = await inst.query("*IDN?")
        assert "DMM" in idn.upper()
        assert inst.resource == f"nats://127.0.0.1:{nats_server.port}/{agent}/dmm"
        value = float(await inst.query("MEAS:VOLT:DC?"))
        assert value == value  # a number, not NaN


async def test_unknown_instrument_is_a_typed_error(nats_server: RunningNats) -> None:
    async with serving(nats_server, dmm=create_device("dmm")) as agent:
        with anyio.fail_after(10), pytest.raises(aiotmc.ResourceNotFoundError, match="nosuch"):
            async with aiotmc.open(f"{nats_server.url}/{agent}/nosuch", connect_timeout=3):
                pass


async def test_conformance_over_nats(nats_server: RunningNats) -> None:
    async with serving(nats_server, kit=conformance_device()) as agent:
        resource = f"{nats_server.url}/{agent}/kit"
        with anyio.fail_after(240):
            report = await check_transport(lambda: aiotmc.open_transport(resource))
    for name, stats in report.items():
        print(name, stats)
    assert list(report) == list(CHECKS)
    sweep = report["cancellation"]
    assert sweep.cancelled > 50 and sweep.completed > 10, sweep


async def test_a_block_larger_than_a_nats_message_comes_in_chunks(
    nats_server: RunningNats,
) -> None:
    size = 3_000_017  # three chunks of at most the server's 1 MiB payload limit
    async with (
        serving(nats_server, kit=conformance_device()) as agent,
        aiotmc.open_transport(f"{nats_server.url}/{agent}/kit") as link,
    ):
        for into in (None, memoryview(bytearray(size + 5))):
            await link.send_message([b"BIN? %d,7\n" % size])
            view = await link.receive_block(into, max_size=size, deadline=anyio.current_time() + 20)
            check_payload(view, size, 7, binary=True)
        # a buffer too small: a typed local error, and the link stays in step
        await link.send_message([b"BIN? %d,8\n" % size])
        with pytest.raises(aiotmc.LocalProtocolError, match="does not fit"):
            await link.receive_block(memoryview(bytearray(10)), max_size=size)
        assert await link.exchange(b"ECHO? 9\n", max_size=100) == b"9\n"


async def test_a_lock_keeps_other_clients_out(nats_server: RunningNats) -> None:
    async with serving(nats_server, dmm=create_device("dmm")) as agent:
        resource = f"{nats_server.url}/{agent}/dmm"
        async with aiotmc.open(resource, timeout=5) as a, aiotmc.open(resource, timeout=5) as b:
            await a.lock_excl()
            assert "DMM" in (await a.query("*IDN?")).upper()
            with pytest.raises(aiotmc.ResourceBusyError):
                await b.query("*IDN?", timeout=0.3)
            with pytest.raises(aiotmc.ResourceBusyError):
                await b.lock_excl(0.1)
            await a.unlock()
            assert "DMM" in (await b.query("*IDN?")).upper()
            async with b.lock_context():
                with pytest.raises(aiotmc.ResourceBusyError):
                    await a.query("*IDN?", timeout=0.3)
            assert "DMM" in (await a.query("*IDN?")).upper()


async def test_a_closed_client_releases_its_lock(nats_server: RunningNats) -> None:
    async with serving(nats_server, dmm=create_device("dmm")) as agent:
        resource = f"{nats_server.url}/{agent}/dmm"
        async with aiotmc.open(resource, timeout=5) as b:
            async with aiotmc.open(resource, timeout=5) as a:
                await a.lock_excl()
            with anyio.fail_after(5):
                await b.lock_excl(3)  # granted once a's close reached the agent
            await b.unlock()


async def test_a_server_that_closes_during_the_handshake_is_a_connect_error() -> None:
    """A node stopping while a client connects: ConnectError (retried by agents), never
    an anyio stream error."""
    from aiotmc.transports.nats import NatsConnection

    async def hang_up(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await stream.send(b'INFO {"server_id":"x","max_payload":1048576}\r\n')

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, hang_up)
        with anyio.fail_after(10), pytest.raises(aiotmc.ConnectError, match="closed"):
            await NatsConnection.connect(NatsServer("127.0.0.1", port), timeout=5)
        tg.cancel_scope.cancel()
