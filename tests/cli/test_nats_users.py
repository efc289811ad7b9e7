"""``aiotmc nats-users``: the authorization block generated from gateway TOML files, loaded
by a real nats-server whose passwords come from its environment (and one bcrypt hash);
a role's user queries its instrument and is refused the others."""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

import aiotmc
from aiotmc.agent import Agent, AgentInstrument, live_agents
from aiotmc.cli import main
from aiotmc.cli._nats_users import password_variable
from aiotmc.gateway.model import Reading
from aiotmc.gateway.sinks.jetstream import JetStreamSink
from aiotmc.sim.devices import create_device
from aiotmc.transports.nats import NatsConnection, NatsServer
from aiotmc.transports.nats.jetstream import JetStream

from ..nats_server import RunningNats, running_nats

BENCH1 = """
[gateway]
host = "bench1"

[[instruments]]
name = "dmm"
resource = "SIM::dmm"
channels = [{ name = "volts", query = "MEAS:VOLT:DC?", period = 1.0 }]

[[instruments]]
name = "psu"
resource = "SIM::psu"
channels = [{ name = "volts", query = "MEAS:VOLT?", period = 1.0 }]

[[roles]]
name = "tech"
users = ["alice"]
scpi = true
instruments = ["dmm"]

[[roles]]
name = "watch"
users = ["bob"]
"""

#: bcrypt of "pw-bob" (cost 4: cheap to check), as ``nats server passwd`` would give.
BOB_HASH = "$2b$04$TeJskNJkFJe9rGkQ4ee50eMR1oNc9GN86E57JBpSQjTOd0edBSx9q"
SECRETS = {"bench1": "pw-bench1", "alice": "pw-alice"}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("nats-users")
    (workdir / "bench1.toml").write_text(BENCH1)
    (workdir / "passwords").write_text(f"# bcrypt hashes\nbob:{BOB_HASH}\n")
    out = workdir / "auth.conf"
    status = main(
        [
            "nats-users",
            str(workdir / "bench1.toml"),
            "--passwords",
            str(workdir / "passwords"),
            "--collector",
            "central",
            "--out",
            str(out),
        ]
    )
    assert status == 0
    return out


@pytest.fixture(scope="module")
def secured(generated: Path) -> Iterator[RunningNats]:
    with pytest.MonkeyPatch.context() as env:  # the server inherits the passwords
        for user, secret in SECRETS.items():
            env.setenv(password_variable(user), secret)
        env.setenv(password_variable("central"), "pw-central")
        store = str(generated.parent / "store")
        with running_nats(generated.parent, "-c", str(generated), "-js", "-sd", store) as server:
            env.undo()
            yield server


def test_the_generated_file_holds_no_clear_password(generated: Path) -> None:
    text = generated.read_text()
    assert os.stat(generated).st_mode & 0o777 == 0o600
    assert "pw-" not in text
    assert f'"password": ${password_variable("alice")},' in text  # unquoted: a variable
    assert f'"password": "{BOB_HASH}"' in text
    assert text.count('"user": ') == 4  # bench1, alice, bob, central


def test_json_lists_roles_and_where_passwords_come_from(
    generated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = generated.parent / "bench1.toml"
    assert main(["nats-users", f"lab1={config}", "--format", "json"]) == 0
    users = {u["user"]: u for u in json.loads(capsys.readouterr().out)["users"]}
    assert {n: u["role"] for n, u in users.items()} == {
        "lab1": "agent",
        "alice": "operator",
        "bob": "viewer",
    }
    assert users["alice"]["instruments"] == ["lab1/dmm"]
    assert users["alice"]["password"] == {"env": "AIOTMC_NATS_PASSWORD_ALICE"}


def test_bad_input_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bench1.toml"
    config.write_text(BENCH1)
    assert main(["nats-users", f"alice={config}"]) == 1  # an agent named like a user
    assert "agent and a user" in capsys.readouterr().err
    (tmp_path / "pw").write_text("no colon here\n")
    assert main(["nats-users", str(config), "--passwords", str(tmp_path / "pw")]) == 1
    assert "expected 'user:password'" in capsys.readouterr().err


def refused() -> pytest.RaisesContext[aiotmc.PermissionDeniedError]:
    """A request the server's permissions refuse (not a login refused)."""
    return pytest.raises(aiotmc.PermissionDeniedError, match=r"(?i)permissions violation")


async def test_nats_server_enforces_the_generated_users(secured: RunningNats) -> None:
    login = NatsServer("127.0.0.1", secured.port, user="bench1", password="pw-bench1")
    instruments = [
        AgentInstrument("dmm", "SIM::dmm::usersd", {"device": create_device("dmm")}),
        AgentInstrument("psu", "SIM::psu::usersp", {"device": create_device("psu")}),
    ]
    alice = {"user": "alice", "password": "pw-alice"}
    async with anyio.create_task_group() as tg:
        await tg.start(Agent(login, "bench1", instruments).run)
        async with aiotmc.open(f"{secured.url}/bench1/dmm", timeout=3, **alice) as dmm:
            assert "DMM" in (await dmm.query("*IDN?")).upper()  # allowed: alice's instrument
        with anyio.fail_after(5), refused():
            async with aiotmc.open(f"{secured.url}/bench1/psu", connect_timeout=3, **alice):
                pass  # refused: not one of the role's instruments
        bob = NatsServer("127.0.0.1", secured.port, user="bob", password="pw-bob")
        nc = await NatsConnection.connect(bob, timeout=3)  # the bcrypt hash checks out
        try:
            assert "bench1" in await live_agents(nc, wait=0.3)  # a viewer sees presence
        finally:
            await nc.aclose()
        with anyio.fail_after(5), refused():
            async with aiotmc.open(
                f"{secured.url}/bench1/dmm", connect_timeout=3, user="bob", password="pw-bob"
            ):
                pass  # a viewer sends nothing to an instrument
        tg.cancel_scope.cancel()


_SEQ = itertools.count(1)


async def test_an_agent_publishes_its_readings_only_into_the_collectors_stream(
    secured: RunningNats,
) -> None:
    central = NatsServer("127.0.0.1", secured.port, user="central", password="pw-central")
    nc = await NatsConnection.connect(central, timeout=3)
    try:  # the collector creates the stream; an agent may not, but may look it up
        await JetStream(nc).ensure_stream("AIOTMC_READINGS", ["aiotmc.readings.>"])
    finally:
        await nc.aclose()
    login = NatsServer("127.0.0.1", secured.port, user="bench1", password="pw-bench1")

    def readings(host: str) -> list[Reading]:
        now = time.time()
        return [Reading(host, next(_SEQ), "lab", host, "dmm", "volts", 1.0, "V", now)]

    sink = JetStreamSink([login])
    try:
        with anyio.fail_after(10):
            await sink.write(readings("bench1"))
            assert sink.published == 1
            with pytest.raises(aiotmc.SinkUnavailableError, match=r"(?i)permissions violation"):
                await sink.write(readings("bench2"))  # another agent's subject: refused
    finally:
        await sink.aclose()
