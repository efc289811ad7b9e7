"""Distributed acquisition end to end, through a real nats-server with JetStream: agents
measure into the stream (through their spool), a collector gateway stores everything
once in SQLite and fires an offline alert for an agent that dies; the collector resumes
after its last acknowledgement; a NATS outage loses nothing. The gateway runs on asyncio.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, closing
from pathlib import Path

import anyio
import pytest

from aiotmc.agent.measure import run_measuring_agent
from aiotmc.gateway import Alert, AlertState
from aiotmc.gateway.app import Gateway
from aiotmc.gateway.config import parse_config
from aiotmc.transports.nats import NatsServer

from ..nats_server import RunningNats, running_nats


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def js(tmp_path: Path) -> Iterator[RunningNats]:
    with running_nats(tmp_path, "-js", "-sd", str(tmp_path / "js")) as server:
        yield server


def agent_config(nats: RunningNats, data: Path, instruments: int = 2) -> str:
    parts = [
        f'[gateway]\nsite = "lab"\ndata_dir = "{data}"\n',
        f'[[sinks]]\ntype = "jetstream"\nurl = "{nats.url}"\n',
    ]
    for i in range(instruments):
        parts.append(
            f'[[instruments]]\nname = "dmm{data.name}{i}"\nresource = "SIM::dmm::{data.name}{i}"\n'
            '[[instruments.channels]]\nname = "volts"\nquery = "MEAS:VOLT:DC?"\nunit = "V"\n'
            "period = 0.05\n"
        )
    return "\n".join(parts)


def collector_config(nats: RunningNats, data: Path) -> str:
    return f"""
[gateway]
site = "lab"
data_dir = "{data}"

[[sinks]]
type = "sqlite"
name = "db"

[collector]
url = "{nats.url}"
presence_ttl = 1.0

[[rules]]
name = "instrument_offline"
type = "offline"
"""


@asynccontextmanager
async def agent(nats: RunningNats, workdir: Path, name: str) -> AsyncIterator[None]:
    data = workdir / name
    config = parse_config(agent_config(nats, data))
    server = NatsServer("127.0.0.1", nats.port)
    async with anyio.create_task_group() as tg:
        await tg.start(
            lambda task_status: run_measuring_agent(
                config, server, name, heartbeat=0.2, task_status=task_status
            )
        )
        yield
        tg.cancel_scope.cancel()


def stored(db: Path) -> tuple[int, int, dict[str, list[int]]]:
    """Rows, distinct keys, and the sequence numbers per gateway in the database."""
    if not db.exists():
        return 0, 0, {}
    try:
        with closing(sqlite3.connect(db)) as conn:
            rows = conn.execute("SELECT gateway_id, seq FROM readings ORDER BY seq").fetchall()
    except sqlite3.OperationalError:  # created, but its table not yet
        return 0, 0, {}
    seqs: dict[str, list[int]] = {}
    for gateway, seq in rows:
        seqs.setdefault(gateway, []).append(seq)
    return len(rows), len(set(rows)), seqs


async def until(condition, within: float) -> None:  # type: ignore[no-untyped-def]
    """Poll ``condition()`` until true (bounded in time and count)."""
    with anyio.fail_after(within):
        for _ in range(10_000):
            if condition():
                return
            await anyio.sleep(0.05)  # a bounded poll of a database, not a synchronisation


async def test_agents_measure_into_the_collector(js: RunningNats, tmp_path: Path) -> None:
    collector = parse_config(collector_config(js, tmp_path / "central"))
    db = tmp_path / "central" / "readings.sqlite"
    async with (
        Gateway(collector) as central,
        central.hub.subscribe("test", maxsize=100_000) as events,
    ):
        async with agent(js, tmp_path, "benchA"), agent(js, tmp_path, "benchB"):
            await until(lambda: len(stored(db)[2]) == 2 and stored(db)[0] >= 40, 30)
        # both agents stopped: their instruments go offline after the presence TTL
        with anyio.fail_after(15):
            fired = set()
            async for event in events:
                if isinstance(event, Alert) and event.state is AlertState.FIRING:
                    fired.add(event.instrument)
                    if len(fired) == 4:
                        break
        assert fired == {"dmmbenchA0", "dmmbenchA1", "dmmbenchB0", "dmmbenchB1"}
    rows, keys, seqs = stored(db)
    assert rows == keys  # nothing stored twice
    for gateway, numbers in seqs.items():  # per agent: no reading lost in between
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), gateway


async def test_nothing_is_lost_while_the_server_is_away(js: RunningNats, tmp_path: Path) -> None:
    db = tmp_path / "central" / "readings.sqlite"
    async with agent(js, tmp_path, "benchC"):
        async with Gateway(parse_config(collector_config(js, tmp_path / "central"))):
            await until(lambda: stored(db)[0] >= 10, 30)
        # the collector is gone: readings wait in the stream; then the server goes too
        js.kill()
        await anyio.sleep(0.5)  # the agent measures on, into its spool, meanwhile
        js.start()
        async with Gateway(parse_config(collector_config(js, tmp_path / "central"))):
            before = stored(db)[0]
            await until(lambda: stored(db)[0] >= before + 20, 30)
    rows, keys, seqs = stored(db)
    assert rows == keys
    (numbers,) = seqs.values()
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))  # no gap
