"""The PostgreSQL sink against a real PostgreSQL 15 cluster started for this module.

asyncio only: psycopg's async connection (and the gateway app) run on asyncio.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import anyio
import psycopg
import pytest

from aiotmc._exceptions import ConfigError, SinkUnavailableError
from aiotmc.gateway.model import Quality, Reading
from aiotmc.gateway.sinks import postgres
from aiotmc.gateway.sinks.postgres import PostgresSink

from .pgcluster import PgCluster, free_port


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    pg = PgCluster()
    try:
        pg.start()
        yield pg
    finally:
        pg.destroy()


@pytest.fixture
def table(request: pytest.FixtureRequest) -> str:
    """A table of its own for each test (one cluster serves them all)."""
    return "t_" + request.node.name.split("[")[0].removeprefix("test_")[:50]


def reading(seq: int, value: object = 1.5, **kw: object) -> Reading:
    fields: dict[str, object] = dict(
        gateway_id="gw1", seq=seq, site="lab", host="bench", instrument="dmm",
        channel="volt", value=value, unit="V", timestamp=1_800_000_000.25 + seq,
    )  # fmt: skip
    fields.update(kw)
    return Reading(**fields)  # type: ignore[arg-type]


def rows(cluster: PgCluster, table: str, what: str = "*") -> list[tuple[object, ...]]:
    with psycopg.connect(cluster.dsn) as conn:
        return conn.execute(f"SELECT {what} FROM {table} ORDER BY seq").fetchall()  # type: ignore[arg-type]


def counts_by_key(cluster: PgCluster, table: str) -> dict[int, int]:
    found = rows(cluster, table, "seq, count(*) OVER (PARTITION BY gateway_id, seq)")
    return {int(seq): int(n) for seq, n in found}  # type: ignore[call-overload]


async def test_creates_its_table_and_stores_every_kind_of_value(
    cluster: PgCluster, table: str
) -> None:
    batch = [
        reading(1, 2.5),
        reading(2, 7),
        reading(3, True, unit=""),
        reading(4, "OVLD\x00x", quality=Quality.BAD),
        reading(5, None, quality=Quality.STALE),
        reading(6, math.nan),
        reading(7, -math.inf, instrument="psu 'a'", channel='ch"1'),
        reading(8, 10**400),
        reading(9, "bad \udc80 byte", unit="\udcff"),
    ]
    sink = PostgresSink(cluster.dsn, table=table)
    await sink.open()
    try:
        await sink.write(batch)
    finally:
        await sink.aclose()
    got = rows(cluster, table, "gateway_id, seq, site, host, instrument, channel, "
               "extract(epoch FROM \"timestamp\"), value, value_text, unit, quality")  # fmt: skip
    assert [g[1] for g in got] == [r.seq for r in batch]
    for row, r in zip(got, batch, strict=True):
        assert row[:6] == (r.gateway_id, r.seq, r.site, r.host, r.instrument, r.channel)
        assert float(row[6]) == pytest.approx(r.timestamp, abs=1e-6)  # type: ignore[arg-type]
        assert row[10] == r.quality.value
    assert [row[9] for row in got[:8]] == [r.unit for r in batch[:8]]
    assert [row[7] for row in got[:3]] == [2.5, 7.0, 1.0]
    assert got[3][7:9] == (None, "OVLD\ufffdx")  # text; NUL cannot be stored as such
    assert got[4][7:9] == (None, None)
    assert math.isnan(got[5][7])  # type: ignore[arg-type]
    assert got[6][7] == -math.inf and got[7][7] == math.inf
    assert (got[8][8], got[8][9]) == ("bad ? byte", "?")  # lone surrogates cannot be stored


async def test_a_replayed_batch_is_stored_once(cluster: PgCluster, table: str) -> None:
    sink = PostgresSink(cluster.dsn, table=table)
    try:
        await sink.write([reading(i) for i in range(10)])
        await sink.write([reading(i) for i in range(5, 15)])  # overlaps the first
        await sink.write([reading(i) for i in range(15)])  # all again
    finally:
        await sink.aclose()
    assert counts_by_key(cluster, table) == {i: 1 for i in range(15)}


async def test_schema_qualified_table_and_a_second_gateway(cluster: PgCluster) -> None:
    with psycopg.connect(cluster.dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS lab")
    sink = PostgresSink(cluster.dsn, table="lab.readings")
    try:
        await sink.write([reading(1), reading(1, gateway_id="gw2")])
        await sink.write([reading(1)])
    finally:
        await sink.aclose()
    assert rows(cluster, "lab.readings", "gateway_id, seq") == [("gw1", 1), ("gw2", 1)]


async def test_unreachable_server_raises_sink_unavailable() -> None:
    sink = PostgresSink(f"host=127.0.0.1 port={free_port()} user=postgres", connect_timeout=5)
    with pytest.raises(SinkUnavailableError, match="connect failed"):
        await sink.open()
    with pytest.raises(SinkUnavailableError):
        await sink.write([reading(1)])
    await sink.aclose()
    await sink.aclose()  # idempotent
    assert "port=" not in repr(sink)


async def test_a_hung_server_times_out_as_unavailable(cluster: PgCluster, table: str) -> None:
    sink = PostgresSink(cluster.dsn, table=table, timeout=0.5)
    try:
        await sink.write([reading(1)])
        cluster.pause()  # SIGSTOP: the connection stays up, nothing answers
        try:
            with pytest.raises(SinkUnavailableError, match=r"no answer within 0\.5 s"):
                await sink.write([reading(2)])
        finally:
            cluster.resume()
        await sink.write([reading(2), reading(3)])  # reconnects
    finally:
        await sink.aclose()
    assert counts_by_key(cluster, table) == {1: 1, 2: 1, 3: 1}


async def test_kill_9_mid_run_then_restart_loses_and_duplicates_nothing(
    cluster: PgCluster, table: str
) -> None:
    """Batches are written like the spool's forwarder does (a failed batch is retried until
    it is acknowledged); PostgreSQL is SIGKILLed while they flow and restarted. Every key
    is stored exactly once, including the batch that was in flight at the crash."""
    sink = PostgresSink(cluster.dsn, table=table, timeout=5, connect_timeout=2)
    written: list[Reading] = []
    unavailable = 0
    ten_acked = anyio.Event()
    killed = anyio.Event()
    failed_meanwhile = anyio.Event()
    restarted = anyio.Event()

    async def forward(batch: Sequence[Reading]) -> None:
        nonlocal unavailable
        for _ in range(500):  # bounded retries, as the forwarder's backoff would be
            try:
                await sink.write(batch)
                return
            except SinkUnavailableError:
                unavailable += 1
                if killed.is_set():
                    failed_meanwhile.set()
                await anyio.sleep(0.02)
        raise AssertionError("the batch was never accepted")

    async def crash_and_restart() -> None:
        await ten_acked.wait()  # the writer goes on: the crash lands mid-batch or between
        cluster.kill9()
        killed.set()
        await failed_meanwhile.wait()  # the sink said so while the server was down
        await anyio.to_thread.run_sync(cluster.start)
        restarted.set()

    try:
        with anyio.fail_after(40):
            async with anyio.create_task_group() as tg:
                tg.start_soon(crash_and_restart)
                # batches keep coming until the server is back and took 5 more after it
                acked, after = 0, 0
                while after < 5 and acked < 5000:
                    batch = [reading(acked * 20 + i) for i in range(20)]
                    await forward(batch)
                    written += batch
                    acked += 1
                    after += restarted.is_set()
                    if acked == 10:
                        ten_acked.set()
    finally:
        await sink.aclose()
    assert unavailable >= 1 and restarted.is_set()
    assert counts_by_key(cluster, table) == {r.seq: 1 for r in written}


@pytest.mark.parametrize(
    ("section", "key", "message"),
    [
        ({"type": "postgres"}, ("sinks", 0, "dsn"), "missing required field 'dsn'"),
        ({"dsn": "host=x", "table": "a;b"}, ("sinks", 0, "table"), "SCHEMA.NAME"),
        ({"dsn": "host=x", "table": "a.b.c"}, ("sinks", 0, "table"), "SCHEMA.NAME"),
        ({"dsn": "host = = x"}, ("sinks", 0, "dsn"), "conninfo"),
        ({"dsn": "host=x", "timeout": 0}, ("sinks", 0, "timeout"), "greater than 0"),
        ({"dsn": "host=x", "tabel": "x"}, ("sinks", 0, "tabel"), "unknown field"),
        ({"dsn": "host=x", "name": "a b"}, ("sinks", 0, "name"), "letters"),
    ],
)
def test_config_errors_name_the_field(
    section: dict[str, object], key: tuple[str | int, ...], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        postgres.from_config(section, ("sinks", 0))
    assert info.value.key == key


def test_config_builds_the_sink() -> None:
    sink = postgres.from_config(
        {"type": "postgres", "name": "central", "dsn": "postgresql://u:secret@db:5433/lab",
         "table": "lab.readings", "timeout": 3},
        ("sinks", 1),
    )  # fmt: skip
    assert isinstance(sink, PostgresSink)
    assert (sink.name, sink.table, sink.timeout) == ("central", "lab.readings", 3.0)
    assert "secret" not in repr(sink) and "db:5433" in repr(sink)
