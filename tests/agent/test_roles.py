"""NATS users generated from the gateway's ``[[roles]]`` (aiotmc.agent.roles), enforced by
a real nats-server: a role with ``scpi = true`` uses its instruments and no others, any
other role sends nothing to an instrument."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import anyio
import pytest

import aiotmc
from aiotmc import ConfigError
from aiotmc.agent import Agent, AgentInstrument
from aiotmc.agent.auth import NatsUser, authorization_config
from aiotmc.agent.roles import users_from_roles
from aiotmc.gateway.config import GatewayConfig, parse_config
from aiotmc.sim.devices import create_device
from aiotmc.transports.nats import NatsServer

from ..nats_server import RunningNats, running_nats

PASSWORDS = {"bench1": "pw-bench1", "bench2": "pw-bench2", "alice": "pw-alice", "bob": "pw-bob"}


def agent_config(roles: str) -> GatewayConfig:
    return parse_config(
        """
[[instruments]]
name = "dmm"
resource = "SIM::dmm"
channels = [{ name = "volts", query = "MEAS:VOLT:DC?", period = 1.0 }]

[[instruments]]
name = "psu"
resource = "SIM::psu"
channels = [{ name = "volts", query = "MEAS:VOLT?", period = 1.0 }]
"""
        + roles
    )


BENCH1 = """
[[roles]]
name = "tech"
users = ["alice"]
scpi = true
instruments = ["dmm"]

[[roles]]
name = "watch"
users = ["bob"]
"""

BENCH2 = """
[[roles]]
name = "tech"
users = ["alice"]
scpi = true
"""


def test_roles_become_nats_users() -> None:
    users = users_from_roles(
        {"bench1": agent_config(BENCH1), "bench2": agent_config(BENCH2)},
        PASSWORDS,
        extra=[NatsUser("central", "pw", "collector")],
    )
    by_name = {u.name: u for u in users}
    assert {n: u.role for n, u in by_name.items()} == {
        "bench1": "agent",
        "bench2": "agent",
        "alice": "operator",
        "bob": "viewer",
        "central": "collector",
    }
    assert list(by_name["alice"].instruments) == ["bench1/dmm", "bench2/*"]
    assert list(by_name["bob"].instruments) == []


def test_missing_passwords_and_clashing_names_are_config_errors() -> None:
    config = agent_config(BENCH1)
    with pytest.raises(ConfigError, match="no password for NATS user 'bob'"):
        users_from_roles({"bench1": config}, {"bench1": "x", "alice": "y"})
    with pytest.raises(ConfigError, match="agent and a user"):
        users_from_roles({"alice": config}, PASSWORDS)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNats]:
    workdir = tmp_path_factory.mktemp("nats-roles")
    users = users_from_roles({"bench1": agent_config(BENCH1)}, PASSWORDS)
    config = workdir / "auth.conf"
    config.write_text(authorization_config(users))
    with running_nats(workdir, "-c", str(config)) as server:
        yield server


@asynccontextmanager
async def bench1(server: RunningNats) -> AsyncIterator[None]:
    login = NatsServer("127.0.0.1", server.port, user="bench1", password="pw-bench1")
    instruments = [
        AgentInstrument("dmm", "SIM::dmm::rolesd", {"device": create_device("dmm")}),
        AgentInstrument("psu", "SIM::psu::rolesp", {"device": create_device("psu")}),
    ]
    async with anyio.create_task_group() as tg:
        await tg.start(Agent(login, "bench1", instruments).run)
        yield
        tg.cancel_scope.cancel()


async def test_the_generated_permissions_are_enforced(secured: RunningNats) -> None:
    alice = {"user": "alice", "password": "pw-alice"}
    bob = {"user": "bob", "password": "pw-bob"}
    async with bench1(secured):
        async with aiotmc.open(f"{secured.url}/bench1/dmm", timeout=3, **alice) as dmm:
            assert "DMM" in (await dmm.query("*IDN?")).upper()
        with anyio.fail_after(5), pytest.raises(aiotmc.PermissionDeniedError):
            async with aiotmc.open(f"{secured.url}/bench1/psu", connect_timeout=3, **alice):
                pass
        with anyio.fail_after(5), pytest.raises(aiotmc.PermissionDeniedError):
            async with aiotmc.open(f"{secured.url}/bench1/dmm", connect_timeout=3, **bob):
                pass
