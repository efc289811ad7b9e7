"""Store-and-forward: every reading is made durable here first, then delivered to sinks.

:meth:`Spool.append` gives a reading its ``seq`` and commits it to a SQLite file in WAL
mode (``spool.sqlite`` in ``data_dir``) before it returns: a reading exists for the rest
of the gateway (the hub, MQTT, sinks) only once it is on disk, so a ``kill -9`` loses no
reading that was acquired. Appends that arrive together share one transaction (group
commit): under load one commit carries hundreds of readings.

One forwarder per sink (:meth:`Spool.forward`) delivers batches in ``seq`` order from
its own persisted cursor, retries with exponential backoff while the sink raises
:class:`~aiotmc.SinkUnavailableError`, and after a restart carries on where its cursor
was; a batch that was stored but whose cursor was not yet saved is sent again, which
sinks ignore by key. Rows every sink has received are deleted. The readings of the last
commits also stay in memory: a forwarder that keeps up takes its batches from there
rather than reading them back from the file.

Bounded disk: at most ``max_readings`` rows are kept. When a sink is down long enough
for the spool to reach that, the oldest rows are deleted although undelivered (that sink
loses them; it is counted in :attr:`Spool.dropped` and logged): newest data wins, and
acquisition never stops.

The seq counter is stored with the rows and survives restarts. A new spool starts it at
the current time in microseconds, so that a gateway whose data directory was lost does
not reuse keys it has already sent to a central database.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final, Literal

import anyio
import anyio.lowlevel
import anyio.to_thread
from anyio.abc import TaskStatus

from .._exceptions import GatewayError, SinkUnavailableError
from .model import Quality, Reading, Sink, Value

__all__ = ["Spool"]

log = logging.getLogger("aiotmc.gateway.spool")

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS spool (
    seq INTEGER PRIMARY KEY,
    gateway_id TEXT NOT NULL,
    site TEXT NOT NULL,
    host TEXT NOT NULL,
    instrument TEXT NOT NULL,
    channel TEXT NOT NULL,
    value,
    is_bool INTEGER NOT NULL,
    unit TEXT NOT NULL,
    timestamp REAL NOT NULL,
    quality TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cursors (sink TEXT PRIMARY KEY, seq INTEGER NOT NULL);
"""
_INSERT: Final = "INSERT INTO spool VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_SELECT: Final = (
    "SELECT seq, gateway_id, site, host, instrument, channel, value, is_bool, unit, timestamp,"
    " quality FROM spool WHERE seq > ? ORDER BY seq LIMIT ?"
)

Row = tuple[str, str, str, str, str, Value, int, str, float, Quality]
_QUALITY: Final = {q.value: q for q in Quality}


class _Batch:
    __slots__ = ("done", "error", "first")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.first = 0
        self.error: BaseException | None = None


def _connect(path: Path, sync: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={sync.upper()}")
        db.execute("PRAGMA busy_timeout=10000")
    except BaseException:
        db.close()
        raise
    return db


class Spool:
    """The durable queue between acquisition and storage (async context manager)."""

    def __init__(
        self,
        path: str | Path,
        *,
        gateway_id: str,
        site: str,
        host: str,
        sinks: Sequence[str] = (),
        max_readings: int = 10_000_000,
        sync: Literal["normal", "full"] = "normal",
        batch_size: int = 2000,
        retry_min: float = 0.2,
        retry_max: float = 30.0,
        linger: float = 0.1,
        write_timeout: float = 120.0,
        max_pending: int = 100_000,
        recent: int = 25_000,
        commit_interval: float = 0.0,
    ) -> None:
        self.path = Path(path)
        self.gateway_id = gateway_id
        self.site = site
        self.host = host
        self.sinks = tuple(sinks)
        self.max_readings = max_readings
        self.sync = sync
        self.batch_size = batch_size
        self.retry_min = retry_min
        self.retry_max = retry_max
        #: After a batch smaller than ``batch_size``, a forwarder waits this long before
        #: the next one: fewer, larger writes at low rates (sinks lag by at most this).
        self.linger = linger
        #: A sink's ``open`` + ``write`` taking longer than this counts as a failure.
        self.write_timeout = write_timeout
        #: At most this many readings wait for a commit (then producers wait for room).
        self.max_pending = max_pending
        #: A commit starts at least this long (seconds) after the previous one started:
        #: under load a steady trickle (hundreds of channels on their own schedules)
        #: makes a few large transactions instead of one small one per reading, while a
        #: reading after a quiet spell is committed at once; 0: commit at every wake-up.
        #: Readings reach the hub and the sinks at most this much later.
        self.commit_interval = commit_interval
        #: The last this many committed readings (to twice as many) stay in memory, so
        #: that a forwarder that keeps up does not read them back from the file.
        self.recent = recent
        #: Called with every reading once it is durable, in ``seq`` order (the gateway
        #: publishes it on its hub); it must not block.
        self.on_commit: Callable[[Reading], None] | None = None
        #: Readings deleted before every sink had them (the spool was full).
        self.dropped = 0
        #: Readings that could not be stored (the disk failed): lost.
        self.failed = 0
        self._db: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._write_limit = anyio.CapacityLimiter(1)
        self._read_limit = anyio.CapacityLimiter(1)
        self._next_seq = 0  # the seq the next reading gets
        self._low = 0  # the smallest seq still held
        #: The readings of the last commits, in seq order from ``_recent_first``: a
        #: forwarder that keeps up reads them here instead of from the file.
        self._recent: list[Reading] = []
        self._recent_first = 0
        self._cursors: dict[str, int] = {}
        self._errors: dict[str, int] = {}
        self._pending: list[Row] = []
        self._batch = _Batch()
        self._wake = anyio.Event()
        self._new_data = anyio.Event()
        self._progress = anyio.Event()
        self._next_warning = 0.0

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Spool:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def open(self) -> None:
        """Open (or create) the spool file and load the counters and cursors
        (``GatewayError`` naming the file when it cannot)."""
        try:
            await anyio.to_thread.run_sync(self._open_sync)
        except (OSError, sqlite3.Error) as exc:
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise GatewayError(f"cannot open the spool {self.path}: {detail}") from exc

    def _open_sync(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = _connect(self.path, self.sync)
        try:
            db.executescript(_SCHEMA)
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            if "next_seq" not in meta:
                meta = {"next_seq": time.time_ns() // 1000, "dropped": 0}
                with db:
                    db.execute("BEGIN")
                    db.executemany("INSERT INTO meta VALUES (?, ?)", list(meta.items()))
            (low,) = db.execute("SELECT min(seq) FROM spool").fetchone()
            cursors = dict(db.execute("SELECT sink, seq FROM cursors").fetchall())
        except BaseException:
            db.close()
            raise
        self._db = db
        self._reader = _connect(self.path, self.sync)
        self._next_seq = int(meta["next_seq"])
        self.dropped = int(meta["dropped"])
        self._low = self._next_seq if low is None else int(low)
        for sink in self.sinks:  # a new sink starts with what the spool still holds
            self._cursors[sink] = int(cursors.get(sink, self._low - 1))
            self._errors.setdefault(sink, 0)

    async def aclose(self) -> None:
        """Close the files (appends still waiting fail with ``GatewayError``)."""
        with anyio.CancelScope(shield=True):
            for db, limit in ((self._db, self._write_limit), (self._reader, self._read_limit)):
                if db is not None:
                    await anyio.to_thread.run_sync(db.close, limiter=limit)
        self._db = self._reader = None
        batch, self._batch = self._batch, _Batch()
        if not batch.done.is_set():
            batch.error = GatewayError("the spool was closed")
            batch.done.set()

    # -- metrics ----------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Readings held (not yet delivered to every sink, or not yet deleted)."""
        return max(0, self._next_seq - self._low)

    @property
    def last_seq(self) -> int:
        """The seq of the last reading made durable (``first seq - 1`` when none)."""
        return self._next_seq - 1

    def backlog(self) -> dict[str, int]:
        """Per sink: readings not yet delivered."""
        last = self._next_seq - 1
        return {s: max(0, last - max(c, self._low - 1)) for s, c in self._cursors.items()}

    def errors(self) -> dict[str, int]:
        """Per sink: failed deliveries since the gateway started."""
        return dict(self._errors)

    def cursor(self, sink: str) -> int:
        """The seq of the last reading ``sink`` has stored."""
        return self._cursors[sink]

    # -- appending --------------------------------------------------------------------------

    @property
    def full(self) -> bool:
        """Whether ``max_pending`` readings wait for a commit (:meth:`wait_room`)."""
        return len(self._pending) >= self.max_pending

    def append_nowait(
        self,
        instrument: str,
        channel: str,
        value: Value,
        unit: str,
        timestamp: float,
        quality: Quality = Quality.GOOD,
    ) -> None:
        """Queue a reading for the next commit (needs :meth:`run`); once it is durable it
        gets its ``seq`` and goes to :attr:`on_commit`. ``GatewayError`` when the spool is
        not open, or :attr:`full` (a producer awaits :meth:`wait_room` first)."""
        if self._db is None:
            raise GatewayError("the spool is not open")
        if len(self._pending) >= self.max_pending:
            raise GatewayError(f"the spool is full ({self.max_pending} readings wait for disk)")
        self._pending.append(
            (
                self.gateway_id,
                self.site,
                self.host,
                instrument,
                channel,
                value,
                int(isinstance(value, bool)),
                unit,
                timestamp,
                quality,
            )
        )
        self._wake.set()

    async def flush(self) -> None:
        """Return once everything appended so far is committed (needs :meth:`run`)."""
        while self._pending:
            await self._batch.done.wait()

    async def wait_room(self) -> None:
        """Return once the spool is not :attr:`full` (the disk caught up)."""
        while self.full:
            await self._batch.done.wait()

    async def append(
        self,
        instrument: str,
        channel: str,
        value: Value,
        unit: str,
        timestamp: float,
        quality: Quality = Quality.GOOD,
    ) -> Reading:
        """Make a reading durable and return it with its ``seq`` (needs :meth:`run`)."""
        await self.wait_room()
        batch = self._batch
        slot = len(self._pending)
        self.append_nowait(instrument, channel, value, unit, timestamp, quality)
        await batch.done.wait()
        if batch.error is not None:
            raise GatewayError(f"the reading could not be spooled: {batch.error}")
        return Reading(
            self.gateway_id,
            batch.first + slot,
            self.site,
            self.host,
            instrument,
            channel,
            value,
            unit,
            timestamp,
            quality,
        )

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The writer: commits what was appended, one transaction at a time, then hands
        each reading to :attr:`on_commit` in ``seq`` order."""
        task_status.started()
        started = -math.inf  # when the last commit started
        while True:
            await self._wake.wait()
            if self.commit_interval > 0 and len(self._pending) < self.max_pending:
                wait = started + self.commit_interval - anyio.current_time()
                if wait > 0:
                    await anyio.sleep(wait)  # appends go on meanwhile
            started = anyio.current_time()
            self._wake = anyio.Event()
            batch, rows = self._batch, self._pending
            self._batch, self._pending = _Batch(), []
            if not rows:
                continue
            first = self._next_seq
            try:
                low, dropped = await self._write(first, rows)
            except sqlite3.Error as exc:
                log.error("spool %s: cannot store %d readings: %s", self.path, len(rows), exc)
                self.failed += len(rows)
                batch.error = exc
                batch.done.set()
                continue
            self._next_seq = first + len(rows)
            self._low = low
            if dropped:
                self.dropped += dropped
                self._warn_dropped(low)
            batch.first = first
            batch.done.set()
            readings = [
                Reading(gateway_id, seq, site, host, instrument, channel, value, unit, ts, quality)
                for seq, (
                    gateway_id,
                    site,
                    host,
                    instrument,
                    channel,
                    value,
                    _,
                    unit,
                    ts,
                    quality,
                ) in enumerate(rows, first)
            ]
            self._remember(first, readings)
            new_data, self._new_data = self._new_data, anyio.Event()
            new_data.set()
            on_commit = self.on_commit
            if on_commit is not None:
                for reading in readings:
                    on_commit(reading)

    def _remember(self, first: int, readings: list[Reading]) -> None:
        """Keep the last ``recent`` committed readings (at least) for :meth:`read`."""
        recent = self._recent
        if not recent or self._recent_first + len(recent) != first:
            recent.clear()  # not contiguous (the first commit): start again
            self._recent_first = first
        recent += readings
        if len(recent) > 2 * self.recent:
            excess = len(recent) - self.recent
            del recent[:excess]
            self._recent_first += excess

    def _warn_dropped(self, low: int) -> None:
        """Log spool overflow: the first time, then at most once a minute."""
        now = time.monotonic()
        if now < self._next_warning:
            return
        self._next_warning = now + 60.0
        behind = [s for s, c in self._cursors.items() if c < low - 1]
        log.warning(
            "spool full (%d readings): %d oldest readings deleted so far, undelivered to %s",
            self.max_readings,
            self.dropped,
            ", ".join(behind) or "no sink",
        )

    async def _write(self, first: int, rows: list[Row]) -> tuple[int, int]:
        db = self._db
        if db is None:
            raise sqlite3.ProgrammingError("the spool is closed")
        end = first + len(rows)
        # rows [self._low, end) are all there: delete what every sink has, then, if still
        # more than max_readings, the oldest undelivered ones
        low = max(self._low, min(self._cursors.values(), default=end - 1) + 1)
        floor = end - self.max_readings
        dropped = max(0, floor - low)
        low = max(low, floor)

        def write() -> None:
            with db:
                db.execute("BEGIN")
                db.executemany(_INSERT, [(first + i, *row) for i, row in enumerate(rows)])
                db.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'", (end,))
                if dropped:
                    db.execute(
                        "UPDATE meta SET value = value + ? WHERE key = 'dropped'", (dropped,)
                    )
                if low > self._low:
                    db.execute("DELETE FROM spool WHERE seq < ?", (low,))

        await anyio.to_thread.run_sync(write, limiter=self._write_limit)
        return low, dropped

    # -- forwarding -------------------------------------------------------------------------

    async def read(self, after: int, limit: int) -> list[Reading]:
        """Up to ``limit`` readings with ``seq > after``, in order (from memory when they
        are among the last ``recent`` committed, else from the file)."""
        reader = self._reader
        if reader is None:
            raise GatewayError("the spool is not open")
        start = max(after + 1, self._low) - self._recent_first
        if 0 <= start < len(self._recent):
            await anyio.lowlevel.checkpoint()
            return self._recent[start : start + limit]

        def select() -> list[Reading]:  # rows to readings in the worker, off the loop
            rows = reader.execute(_SELECT, (after, limit)).fetchall()
            return [
                Reading(
                    gateway_id,
                    seq,
                    site,
                    host,
                    instrument,
                    channel,
                    bool(value) if is_bool else value,
                    unit,
                    timestamp,
                    _QUALITY[quality],
                )
                for (
                    seq,
                    gateway_id,
                    site,
                    host,
                    instrument,
                    channel,
                    value,
                    is_bool,
                    unit,
                    timestamp,
                    quality,
                ) in rows
            ]

        return await anyio.to_thread.run_sync(select, limiter=self._read_limit)

    async def _save_cursor(self, sink: str, seq: int) -> None:
        db = self._db
        if db is None:
            raise GatewayError("the spool is not open")

        def save() -> None:
            db.execute("INSERT OR REPLACE INTO cursors VALUES (?, ?)", (sink, seq))

        await anyio.to_thread.run_sync(save, limiter=self._write_limit)
        self._cursors[sink] = seq
        progress, self._progress = self._progress, anyio.Event()
        progress.set()

    async def wait_delivered(self, *sinks: str) -> None:
        """Return once ``sinks`` (default: all) have every reading appended so far (use a
        timeout)."""
        await self.flush()
        target = self._next_seq - 1
        names = sinks or tuple(self._cursors)
        while any(self._cursors[name] < target for name in names):
            await self._progress.wait()

    async def forward(
        self, sink: Sink, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Deliver everything to ``sink``, in order, forever (cancel to stop).

        ``sink.open()`` and ``sink.write()`` failing with ``SinkUnavailableError`` (or
        together taking longer than ``write_timeout``) are retried with exponential
        backoff (``retry_min`` doubling up to ``retry_max``); any other error is logged
        with its traceback and retried the same way. A sink with a ``batch_size`` or a
        ``linger`` attribute gets those instead of the spool's.
        """
        name = sink.name
        if name not in self._cursors:
            raise GatewayError(f"sink {name!r} was not declared when the spool was opened")
        # A sink may ask for other batches than the spool's defaults (SqliteSink does:
        # fewer, larger transactions cost it less CPU per reading).
        batch_size = int(getattr(sink, "batch_size", None) or self.batch_size)
        linger = getattr(sink, "linger", None)
        linger = self.linger if linger is None else float(linger)
        delay = self.retry_min
        opened = False
        task_status.started()
        while True:
            new_data = self._new_data
            batch = await self.read(self._cursors[name], batch_size)
            if not batch:
                await new_data.wait()
                continue
            try:
                with anyio.fail_after(self.write_timeout):
                    if not opened:
                        await sink.open()
                        opened = True
                    await sink.write(batch)
            except Exception as exc:
                self._errors[name] += 1
                if isinstance(exc, SinkUnavailableError | TimeoutError):
                    log.warning("sink %s unavailable, retry in %.1f s: %s", name, delay, exc)
                else:
                    log.exception("sink %s failed, retry in %.1f s", name, delay)
                await anyio.sleep(delay)
                delay = min(delay * 2, self.retry_max)
                continue
            delay = self.retry_min
            await self._save_cursor(name, batch[-1].seq)
            if len(batch) < batch_size and linger > 0:
                await anyio.sleep(linger)
