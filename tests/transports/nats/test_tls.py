"""NATS over TLS with a throwaway CA (trustme): verified by default, typed errors otherwise."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import trustme

import aiotmc
from aiotmc.agent import Agent, AgentInstrument
from aiotmc.sim.devices import create_device
from aiotmc.transports.nats import NatsConnection, NatsServer

from ...nats_server import RunningNats, running_nats


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_nats(tmp_path_factory: pytest.TempPathFactory, ca: trustme.CA) -> Iterator[RunningNats]:
    workdir = tmp_path_factory.mktemp("nats-tls")
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_pem.write_to_path(str(workdir / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(workdir / "cert.pem"))
    args = ("--tls", "--tlscert", str(workdir / "cert.pem"), "--tlskey", str(workdir / "key.pem"))
    with running_nats(workdir, *args) as server:
        yield server


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def test_remote_instrument_over_tls(
    tls_nats: RunningNats, ca: trustme.CA, tmp_path: Path
) -> None:
    login = NatsServer("127.0.0.1", tls_nats.port, tls=client_context(ca))
    serving = Agent(
        login, "tls1", [AgentInstrument("dmm", "SIM::dmm::tls", {"device": create_device("dmm")})]
    )
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    async with anyio.create_task_group() as tg:
        await tg.start(serving.run)
        async with aiotmc.open(f"{tls_nats.url}/tls1/dmm", timeout=5, tls_ca=str(ca_file)) as dmm:
            assert "DMM" in (await dmm.query("*IDN?")).upper()
        tg.cancel_scope.cancel()


async def test_a_server_that_requires_tls_refuses_plain_clients(tls_nats: RunningNats) -> None:
    with pytest.raises(aiotmc.ConnectError, match="requires TLS"):
        await NatsConnection.connect(NatsServer("127.0.0.1", tls_nats.port), timeout=5)


async def test_an_unknown_certificate_authority_is_refused(tls_nats: RunningNats) -> None:
    other = client_context(trustme.CA())
    with pytest.raises(aiotmc.ConnectError, match="TLS"):
        await NatsConnection.connect(NatsServer("127.0.0.1", tls_nats.port, tls=other), timeout=5)
