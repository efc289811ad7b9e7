"""The issue's scale test: 5 ``aiotmc agent --config`` processes x 10 simulated
instruments measuring into JetStream, one collector gateway storing into SQLite, and the
faults: one agent killed (``kill -9``) -> its 10 instruments offline and an ``offline``
alert within the presence TTL; the NATS server killed and restarted -> agents and
collector reconnect and no reading is lost (sequence numbers per agent contiguous) or
stored twice (the stream holds exactly what the database holds). The gateway runs on
asyncio; the agents are real processes.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, closing
from pathlib import Path

import anyio
import pytest

from aiotmc.gateway import Alert, AlertState
from aiotmc.gateway.app import Gateway
from aiotmc.gateway.config import parse_config
from aiotmc.transports.nats import NatsServer
from aiotmc.transports.nats.connection import NatsConnection
from aiotmc.transports.nats.jetstream import JetStream

from ..nats_server import RunningNats, running_nats

AGENTS = 5
INSTRUMENTS = 10
PERIOD = 0.25  # seconds per reading per channel: 5 x 10 x 4 = 200 readings/s in all
PRESENCE_TTL = 1.5
HEARTBEAT = 0.2


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def js(tmp_path: Path) -> Iterator[RunningNats]:
    with running_nats(tmp_path, "-js", "-sd", str(tmp_path / "js")) as server:
        yield server


def agent_config(nats: RunningNats, name: str, data: Path) -> str:
    parts = [
        f'[gateway]\nsite = "lab"\ndata_dir = "{data}"\n',
        f'[[sinks]]\ntype = "jetstream"\nurl = "{nats.url}"\n',
    ]
    for i in range(INSTRUMENTS):
        parts.append(
            f'[[instruments]]\nname = "{name}dmm{i}"\nresource = "SIM::dmm::{name}{i}"\n'
            '[[instruments.channels]]\nname = "volts"\nquery = "MEAS:VOLT:DC?"\nunit = "V"\n'
            f"period = {PERIOD}\n"
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
presence_ttl = {PRESENCE_TTL}
ack_wait = 2.0

[[rules]]
name = "instrument_offline"
type = "offline"
"""


def start_agent(
    nats: RunningNats, workdir: Path, name: str, stack: ExitStack
) -> subprocess.Popen[bytes]:
    config = workdir / f"{name}.toml"
    config.write_text(agent_config(nats, name, workdir / name))
    log = stack.enter_context((workdir / f"{name}.log").open("wb"))  # stdout and stderr
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aiotmc",
            "agent",
            "--nats",
            nats.url,
            "--name",
            name,
            "--heartbeat",
            str(HEARTBEAT),
            "--config",
            str(config),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def stop() -> None:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)

    stack.callback(stop)
    return proc


def counts(db: Path) -> dict[str, int]:
    """Readings stored per agent (empty while the database or its table is not there)."""
    if not db.exists():
        return {}
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
            rows = conn.execute("SELECT gateway_id, COUNT(*) FROM readings GROUP BY 1").fetchall()
    except sqlite3.OperationalError:
        return {}
    return {str(g): int(n) for g, n in rows}


def sequences(db: Path) -> dict[str, list[int]]:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
        rows = conn.execute("SELECT gateway_id, seq FROM readings ORDER BY 1, 2").fetchall()
    seqs: dict[str, list[int]] = {}
    for gateway, seq in rows:
        seqs.setdefault(str(gateway), []).append(int(seq))
    return seqs


def instruments(db: Path) -> dict[str, int]:
    """How many distinct instruments each agent's readings came from."""
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
        sql = "SELECT gateway_id, COUNT(DISTINCT instrument) FROM readings GROUP BY 1"
        return {str(g): int(n) for g, n in conn.execute(sql).fetchall()}


async def until(what: str, condition, within: float, logs: Path) -> None:  # type: ignore[no-untyped-def]
    """Poll ``condition()`` until true (bounded in time and count)."""
    with anyio.move_on_after(within):
        for _ in range(10_000):
            if condition():
                return
            await anyio.sleep(0.1)  # a bounded poll of a database, not a synchronisation
    tails = "\n".join(
        f"--- {p.name}:\n{p.read_text(errors='replace')[-1500:]}"
        for p in sorted(logs.glob("*.log"))  # noqa: ASYNC240 - the test failed already
    )
    raise AssertionError(f"not within {within} s: {what}\n{tails}")


async def stream_messages(nats: RunningNats) -> tuple[int, int, int]:
    """The stream's message count, and the collector's pending and unacknowledged."""
    nc = await NatsConnection.connect(NatsServer("127.0.0.1", nats.port), timeout=5)
    try:
        js = JetStream(nc)
        stream = await js.api("STREAM.INFO.AIOTMC_READINGS")
        consumer = await js.api("CONSUMER.INFO.AIOTMC_READINGS.collector")
    finally:
        await nc.aclose()
    return (
        int(stream["state"]["messages"]),
        int(consumer["num_pending"]),
        int(consumer["num_ack_pending"]),
    )


@pytest.mark.timeout(90)
async def test_five_agents_fifty_instruments_with_faults(js: RunningNats, tmp_path: Path) -> None:
    names = [f"soak{i}" for i in range(AGENTS)]
    db = tmp_path / "central" / "readings.sqlite"
    alerts: dict[str, float] = {}  # instrument -> when its offline alert fired (monotonic)
    with ExitStack() as stack:
        procs = {name: start_agent(js, tmp_path, name, stack) for name in names}
        async with (
            Gateway(parse_config(collector_config(js, tmp_path / "central"))) as central,
            central.hub.subscribe("soak", maxsize=1_000_000) as events,
            anyio.create_task_group() as tg,
        ):

            async def watch() -> None:
                async for event in events:
                    if isinstance(event, Alert) and event.state is AlertState.FIRING:
                        alerts.setdefault(event.instrument, time.monotonic())

            tg.start_soon(watch)

            # every agent's readings arrive, from every one of its instruments
            await until(
                "readings of all 5 agents",
                lambda: len(c := counts(db)) == AGENTS and min(c.values()) >= 2 * INSTRUMENTS,
                25,
                tmp_path,
            )

            # one agent killed without a word: its 10 instruments offline within the TTL
            victim = names[0]
            os.kill(procs[victim].pid, signal.SIGKILL)
            killed = time.monotonic()
            expected = {f"{victim}dmm{i}" for i in range(INSTRUMENTS)}
            await until("offline alerts", lambda: expected <= alerts.keys(), 10, tmp_path)
            late = max(alerts[n] for n in expected) - killed
            # the TTL, plus the last heartbeat's age and one pull of the collector (1 s)
            assert late <= PRESENCE_TTL + HEARTBEAT + 1.5, late
            assert set(alerts) == expected  # the others stay online

            # the NATS server killed and restarted: everyone reconnects, nothing lost
            before = counts(db)
            js.kill()
            await anyio.sleep(0.5)  # the agents measure on into their spools meanwhile
            js.start()
            alive = names[1:]
            await until(
                "readings after the restart",
                lambda: all(counts(db).get(n, 0) >= before[n] + 2 * INSTRUMENTS for n in alive),
                20,
                tmp_path,
            )
            # stop the agents; the collector stores everything left in the stream
            for name in alive:
                procs[name].send_signal(signal.SIGTERM)
            for name in alive:
                await anyio.to_thread.run_sync(procs[name].wait, 10)

            async def drained() -> int:
                """Wait until the database holds every reading in the stream."""
                state = (0, 0, 0)
                with anyio.move_on_after(20):
                    for _ in range(200):
                        state = await stream_messages(js)
                        if state[1] == 0 and state[0] == sum(counts(db).values()):
                            return state[0]
                        await anyio.sleep(0.1)  # a bounded poll of the consumer's state
                stored = sum(counts(db).values())
                raise AssertionError(f"stream, pending, unacked: {state}; stored {stored}")

            in_stream = await drained()
            tg.cancel_scope.cancel()

    seqs = sequences(db)
    assert set(seqs) == set(names)
    assert sum(map(len, seqs.values())) == in_stream  # each reading once in the log, once stored
    for name, numbers in seqs.items():  # per agent: no reading lost in between
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), name
    assert instruments(db) == {n: INSTRUMENTS for n in names}  # every instrument measured
