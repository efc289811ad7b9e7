"""The spool: durable appends with seq, in-order delivery per sink, retries, replay."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest

from aiotmc import SinkUnavailableError
from aiotmc.gateway import Quality, Reading
from aiotmc.gateway.sinks.sqlite import SqliteSink
from aiotmc.gateway.spool import Spool


class RecordingSink:
    """Stores batches in memory; ``down`` batches fail with SinkUnavailableError first."""

    def __init__(self, name: str = "mem", *, down: int = 0) -> None:
        self.name = name
        self.down = down
        self.stored: list[Reading] = []
        self.attempts = 0
        self._waiters: list[tuple[int, anyio.Event]] = []

    async def open(self) -> None:
        pass

    async def write(self, batch: Sequence[Reading]) -> None:
        self.attempts += 1
        if self.down > 0:
            self.down -= 1
            raise SinkUnavailableError("down for the test")
        self.stored.extend(batch)
        for count, event in self._waiters:
            if len(self.stored) >= count:
                event.set()

    async def aclose(self) -> None:
        pass

    async def wait_for(self, count: int) -> None:
        if len(self.stored) < count:
            event = anyio.Event()
            self._waiters.append((count, event))
            await event.wait()


def _spool(path: Path, sinks: Sequence[str] = ("mem",), **kwargs: object) -> Spool:
    return Spool(
        path, gateway_id="gw", site="lab", host="h", sinks=sinks, retry_min=0.001, **kwargs
    )  # type: ignore[arg-type]


async def _append(spool: Spool, count: int, start: int = 0) -> list[Reading]:
    return [
        await spool.append("dmm", "v", float(start + i), "V", 1000.0 + start + i)
        for i in range(count)
    ]


async def test_appends_get_consecutive_seqs_and_reach_the_sink_in_order(tmp_path: Path) -> None:
    sink = RecordingSink()
    async with _spool(tmp_path / "spool.sqlite") as spool, anyio.create_task_group() as group:
        await group.start(spool.run)
        await group.start(spool.forward, sink)
        # concurrent appends share transactions but keep one seq each
        results: list[Reading] = []

        async def producer(index: int) -> None:
            for i in range(20):
                reading = await spool.append(f"i{index}", "v", i, "", 1.0, Quality.GOOD)
                results.append(reading)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as producers:
                for index in range(5):
                    producers.start_soon(producer, index)
            await sink.wait_for(100)
            await spool.wait_delivered()
        group.cancel_scope.cancel()
    seqs = sorted(r.seq for r in results)
    assert seqs == list(range(seqs[0], seqs[0] + 100))
    assert [r.seq for r in sink.stored] == seqs  # in order, once each
    assert {r.key for r in sink.stored} == {r.key for r in results}
    assert spool.backlog() == {"mem": 0}


async def test_a_restart_resumes_seq_and_delivery_from_the_saved_cursor(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    first = RecordingSink()
    async with _spool(path) as spool, anyio.create_task_group() as group:
        await group.start(spool.run)
        written = await _append(spool, 10)
        async with anyio.create_task_group() as forwarding:
            await forwarding.start(spool.forward, first)
            with anyio.fail_after(10):
                await spool.wait_delivered()
            forwarding.cancel_scope.cancel()
        written += await _append(spool, 5, start=10)  # appended, never forwarded
        group.cancel_scope.cancel()
    assert [r.seq for r in first.stored] == [r.seq for r in written[:10]]

    second = RecordingSink()
    async with _spool(path) as spool, anyio.create_task_group() as group:
        assert spool.last_seq == written[-1].seq  # the counter survived
        assert spool.size == 5 and spool.backlog() == {"mem": 5}
        await group.start(spool.run)
        await group.start(spool.forward, second)
        more = await _append(spool, 1, start=15)
        with anyio.fail_after(10):
            await second.wait_for(6)
        group.cancel_scope.cancel()
    assert more[0].seq == written[-1].seq + 1
    # the replay: exactly what the first run did not deliver, in order, then the new one
    assert second.stored == [*written[10:], *more]


async def test_an_unavailable_sink_gets_everything_in_order_once_back(tmp_path: Path) -> None:
    sink = RecordingSink(down=3)
    async with _spool(tmp_path / "spool.sqlite") as spool, anyio.create_task_group() as group:
        await group.start(spool.run)
        await group.start(spool.forward, sink)
        written = await _append(spool, 30)
        with anyio.fail_after(10):
            await sink.wait_for(30)
        group.cancel_scope.cancel()
    assert sink.stored == written
    assert spool.errors() == {"mem": 3}


async def test_the_spool_is_bounded_and_drops_the_oldest_undelivered(tmp_path: Path) -> None:
    up = RecordingSink("up")  # "down" has no forwarder: it is down throughout
    path = tmp_path / "spool.sqlite"
    async with _spool(path, sinks=("down", "up"), max_readings=10) as spool:
        async with anyio.create_task_group() as group:
            await group.start(spool.run)
            await group.start(spool.forward, up)
            written = await _append(spool, 25)
            with anyio.fail_after(10):
                await spool.wait_delivered("up")
            group.cancel_scope.cancel()
        assert spool.size == 10
        assert spool.dropped == 15
        assert spool.backlog() == {"down": 10, "up": 0}
    # the down sink comes back (after a restart): it gets the newest ten, in order
    back = RecordingSink("down")
    async with _spool(path, sinks=("down", "up"), max_readings=10) as spool:
        assert spool.dropped == 15  # persisted
        async with anyio.create_task_group() as group:
            await group.start(spool.run)
            await group.start(spool.forward, back)
            with anyio.fail_after(10):
                await back.wait_for(10)
            group.cancel_scope.cancel()
    assert back.stored == written[15:]
    rows = sqlite3.connect(path).execute("SELECT count(*) FROM spool").fetchone()
    assert rows == (10,)


async def test_values_keep_their_types_through_the_spool(tmp_path: Path) -> None:
    sink = RecordingSink()
    values: list[object] = [1.5, 7, "text", True, False, None]
    async with _spool(tmp_path / "spool.sqlite") as spool, anyio.create_task_group() as group:
        await group.start(spool.run)
        await group.start(spool.forward, sink)
        for value in values:
            await spool.append("x", "c", value, "", 1.0, Quality.BAD)  # type: ignore[arg-type]
        with anyio.fail_after(10):
            await sink.wait_for(len(values))
        group.cancel_scope.cancel()
    assert [r.value for r in sink.stored] == values
    assert [type(r.value) for r in sink.stored] == [type(v) for v in values]
    assert {r.quality for r in sink.stored} == {Quality.BAD}


async def test_the_sqlite_sink_is_idempotent_by_key(tmp_path: Path) -> None:
    sink = SqliteSink(tmp_path / "db" / "readings.sqlite")
    batch = [Reading("gw", seq, "lab", "h", "dmm", "v", seq * 1.0, "V", 1.0) for seq in (1, 2, 3)]
    try:
        await sink.write(batch)
        await sink.write([*batch[1:], Reading("gw", 4, "lab", "h", "dmm", "v", True, "", 2.0)])
    finally:
        await sink.aclose()
        await sink.aclose()  # idempotent
    db = sqlite3.connect(tmp_path / "db" / "readings.sqlite")
    rows = db.execute("SELECT seq, value FROM readings ORDER BY seq").fetchall()
    assert rows == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 1)]


async def test_the_sqlite_sink_writes_in_a_lower_priority_thread_of_its_own(
    tmp_path: Path,
) -> None:
    """Its transactions must not take a busy core from the event loop (Linux: nice)."""
    import os
    import sys
    import threading

    from aiotmc.gateway.sinks.sqlite import THREAD_NICENESS

    def where() -> tuple[int, int]:
        tid = threading.get_native_id()
        return tid, os.getpriority(os.PRIO_PROCESS, tid) if sys.platform == "linux" else 0

    sink = SqliteSink(tmp_path / "readings.sqlite", name="prio")
    try:
        await sink.write([Reading("gw", 1, "lab", "h", "dmm", "v", 1.0, "V", 1.0)])
        tid, nice = await sink._in_thread(where)
        assert tid != threading.get_native_id()
        if sys.platform == "linux":
            mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
            assert nice == min(19, mine + THREAD_NICENESS) > mine
        assert any(t.name.startswith("aiotmc-sqlite-prio") for t in threading.enumerate())
    finally:
        await sink.aclose()
    assert not any(t.name.startswith("aiotmc-sqlite-prio") for t in threading.enumerate())


async def test_appending_to_a_closed_spool_is_a_gateway_error(tmp_path: Path) -> None:
    from aiotmc import GatewayError

    spool = _spool(tmp_path / "spool.sqlite")
    with pytest.raises(GatewayError, match="not open"):
        await spool.append("x", "c", 1.0, "", 1.0)


class HangingSink(RecordingSink):
    """Its first write never returns (a stalled network peer)."""

    async def write(self, batch: Sequence[Reading]) -> None:
        if self.attempts == 0:
            self.attempts += 1
            await anyio.sleep_forever()
        await super().write(batch)


async def test_a_stalled_sink_write_times_out_and_is_retried(tmp_path: Path) -> None:
    sink = HangingSink()
    spool = _spool(tmp_path / "spool.sqlite", write_timeout=0.05)
    async with spool, anyio.create_task_group() as group:
        await group.start(spool.run)
        await group.start(spool.forward, sink)
        written = await _append(spool, 5)
        with anyio.fail_after(10):
            await sink.wait_for(5)
        group.cancel_scope.cancel()
    assert sink.stored == written
    assert spool.errors() == {"mem": 1}


async def test_append_nowait_publishes_once_durable_and_flush_waits_for_it(tmp_path: Path) -> None:
    published: list[Reading] = []
    async with _spool(tmp_path / "spool.sqlite") as spool, anyio.create_task_group() as group:
        spool.on_commit = published.append
        await group.start(spool.run)
        for i in range(50):
            spool.append_nowait("dmm", "v", float(i), "V", 1.0)
        assert published == []  # nothing is published before it is on disk
        with anyio.fail_after(10):
            await spool.flush()
        group.cancel_scope.cancel()
    assert [r.value for r in published] == [float(i) for i in range(50)]
    assert [r.seq for r in published] == list(range(published[0].seq, published[0].seq + 50))
    assert spool.last_seq == published[-1].seq
    rows = sqlite3.connect(tmp_path / "spool.sqlite").execute("SELECT count(*) FROM spool")
    assert rows.fetchone() == (50,)


async def test_a_full_spool_makes_producers_wait_for_room(tmp_path: Path) -> None:
    from aiotmc import GatewayError

    async with _spool(tmp_path / "spool.sqlite", max_pending=3) as spool:
        for i in range(3):
            spool.append_nowait("dmm", "v", float(i), "V", 1.0)
        assert spool.full
        with pytest.raises(GatewayError, match="full"):
            spool.append_nowait("dmm", "v", 3.0, "V", 1.0)
        async with anyio.create_task_group() as group:
            await group.start(spool.run)
            with anyio.fail_after(10):
                await spool.wait_room()
            assert not spool.full
            group.cancel_scope.cancel()


def _count_commits(spool: Spool) -> list[tuple[float, int]]:
    """(start time, readings) of every commit the spool makes from now on."""
    commits: list[tuple[float, int]] = []
    write = spool._write

    async def counting(first: int, rows: list[object]) -> tuple[int, int]:
        commits.append((anyio.current_time(), len(rows)))
        return await write(first, rows)  # type: ignore[arg-type]

    spool._write = counting  # type: ignore[method-assign,assignment]
    return commits


async def test_a_reading_after_a_quiet_spell_is_committed_at_once(tmp_path: Path) -> None:
    """The commit interval spaces commits under load; it never delays the first one."""
    async with _spool(tmp_path / "spool.sqlite") as spool, anyio.create_task_group() as group:
        commits = _count_commits(spool)
        spool.commit_interval = 3600.0
        await group.start(spool.run)
        spool.append_nowait("dmm", "v", 1.0, "V", 1.0)
        with anyio.fail_after(10):  # waiting out the interval would time out here
            await spool.flush()
        group.cancel_scope.cancel()
    assert [n for _, n in commits] == [1]


async def test_under_load_a_commit_starts_at_most_once_per_interval(tmp_path: Path) -> None:
    """A trickle arriving while the interval runs goes into one transaction."""
    published: list[Reading] = []
    interval = 0.3
    async with _spool(tmp_path / "spool.sqlite") as spool, anyio.create_task_group() as group:
        commits = _count_commits(spool)
        spool.commit_interval = interval
        spool.on_commit = published.append
        await group.start(spool.run)
        spool.append_nowait("dmm", "v", -1.0, "V", 1.0)
        with anyio.fail_after(10):
            await spool.flush()
        for i in range(20):  # one reading at a time, the writer free to run in between
            spool.append_nowait("dmm", "v", float(i), "V", 1.0)
            await anyio.lowlevel.checkpoint()
        with anyio.fail_after(10):
            await spool.flush()
        group.cancel_scope.cancel()
    assert [n for _, n in commits] == [1, 20]
    assert commits[1][0] - commits[0][0] >= interval
    assert [r.value for r in published] == [-1.0, *(float(i) for i in range(20))]


async def test_a_sink_may_choose_its_batch_size_and_linger(tmp_path: Path) -> None:
    """A sink's own ``batch_size`` and ``linger`` replace the spool's (SqliteSink asks
    for larger, rarer transactions); delivery stays complete and in order."""
    sink = RecordingSink()
    sink.batch_size = 7  # type: ignore[attr-defined]
    sink.linger = 0  # type: ignore[attr-defined]
    sizes: list[int] = []
    write = sink.write

    async def recorded(batch: Sequence[Reading]) -> None:
        sizes.append(len(batch))
        await write(batch)

    sink.write = recorded  # type: ignore[method-assign]
    async with (
        _spool(tmp_path / "spool.sqlite", linger=60.0) as spool,
        anyio.create_task_group() as group,
    ):
        await group.start(spool.run)
        for i in range(30):
            spool.append_nowait("dmm", "v", float(i), "V", 1.0)
        await spool.flush()
        await group.start(spool.forward, sink)
        with anyio.fail_after(10):  # the spool's own linger (60 s) would not finish
            await sink.wait_for(30)
        group.cancel_scope.cancel()
    assert sizes == [7, 7, 7, 7, 2]
    assert [r.value for r in sink.stored] == [float(i) for i in range(30)]


async def test_recent_readings_are_read_from_memory_as_from_the_file(tmp_path: Path) -> None:
    """A forwarder that keeps up gets the last commits from memory: the same readings,
    seqs and types a reader of the file gets; older ones come from the file."""
    path = tmp_path / "spool.sqlite"
    async with _spool(path, recent=10) as spool, anyio.create_task_group() as group:
        await group.start(spool.run)
        values: list[float | int | str | bool | None] = [1.5, 7, "x", True, None] * 10
        for value in values:
            spool.append_nowait("dmm", "v", value, "V", 1.0, Quality.GOOD)
            await spool.flush()  # one commit each: memory keeps the last 10 to 20
        first = spool.last_seq - len(values) + 1
        async with _spool(path) as cold:  # nothing in memory: every read is from the file
            for after in (first - 1, first + 20, spool.last_seq - 12, spool.last_seq - 3):
                hot = await spool.read(after, 8)
                assert hot == await cold.read(after, 8)
                assert [type(r.value) for r in hot] == [
                    type(r.value) for r in await cold.read(after, 8)
                ]
            assert await spool.read(spool.last_seq, 8) == []
        assert len(spool._recent) <= 20
        group.cancel_scope.cancel()
