"""The default sink: a local SQLite database of readings, idempotent by key.

Table ``readings``, primary key ``(gateway_id, seq)`` (the reading's idempotent key), so
a batch replayed from the spool after a crash is stored once: ``INSERT ... ON CONFLICT
DO NOTHING``. ``value`` is stored as SQLite gives it (REAL, INTEGER, TEXT; booleans as
0/1; NULL for none). WAL mode, so readers (the web dashboard, ``sqlite3`` on the command
line) never block the gateway.

This is also the reference for sink conventions: no I/O in the constructor; blocking
calls run in a worker thread, one at a time; a store that fails in a way worth retrying
raises :class:`~aiotmc.SinkUnavailableError`, which makes the spool keep the batch and
retry with backoff.

Its thread runs at a lower scheduling priority (:data:`THREAD_NICENESS`, Linux): a
transaction of thousands of readings and its checkpoints take tens of milliseconds of
CPU, and on a busy core they would take it from the event loop, delaying every reading
behind them (docs/gateway.md, Performance). Storage that is a little later costs
nothing; it still gets every cycle the loop leaves idle.
"""

from __future__ import annotations

import operator
import os
import sqlite3
import sys
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.to_thread

from ..._exceptions import SinkUnavailableError
from ..fields import Fields, Key
from ..model import Reading

__all__ = ["SCHEMA", "SqliteSink"]

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS readings (
    gateway_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    site TEXT NOT NULL,
    host TEXT NOT NULL,
    instrument TEXT NOT NULL,
    channel TEXT NOT NULL,
    value,
    unit TEXT NOT NULL,
    timestamp REAL NOT NULL,
    quality TEXT NOT NULL,
    PRIMARY KEY (gateway_id, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS readings_series ON readings (instrument, channel, timestamp);
"""

#: The page cache of the sink's connection, in KiB (SQLite's default is 2 MiB).
CACHE_KIB: Final = 65_536
#: WAL pages between automatic checkpoints (SQLite's default is 1,000).
CHECKPOINT_PAGES: Final = 10_000

#: How much lower the sink thread's priority is (``nice``, Linux; 0: the same).
THREAD_NICENESS: Final = 10

#: A row's ``readings_series`` index key: instrument, channel, timestamp.
_SERIES_ORDER: Final = operator.itemgetter(4, 5, 8)

_INSERT: Final = (
    "INSERT INTO readings (gateway_id, seq, site, host, instrument, channel, value, unit,"
    " timestamp, quality) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (gateway_id, seq) DO NOTHING"
)


class SqliteSink:
    """Readings into the SQLite file ``path`` (created with its directory)."""

    #: Readings per transaction at most, and the wait after a smaller batch (for the
    #: spool's forwarder): every transaction touches a page of the series index per
    #: channel, so fewer, larger ones cost less CPU per reading (docs/gateway.md).
    batch_size: Final = 20_000
    linger: Final = 0.5

    def __init__(self, path: str | Path, *, name: str = "sqlite") -> None:
        self.name = name
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        self._limiter = anyio.CapacityLimiter(1)
        self._thread: ThreadPoolExecutor | None = None  # started by the first call

    def __repr__(self) -> str:
        return f"<SqliteSink {self.name!r} {str(self.path)!r}>"

    @classmethod
    def from_config(cls, section: Mapping[str, Any], key: Key) -> SqliteSink:
        """``[[sinks]] type = "sqlite"``: ``name`` (default "sqlite"), ``path`` (default
        ``readings.sqlite``, relative to the gateway's ``data_dir``)."""
        fields = Fields(section, key)
        fields.string("type")
        name = fields.name("name", "sqlite")
        path = fields.string("path", "readings.sqlite")
        fields.done()
        return cls(Path(path).expanduser(), name=name)

    def under(self, data_dir: Path) -> SqliteSink:
        """The same sink with a relative path taken under ``data_dir``."""
        return SqliteSink(data_dir / self.path, name=self.name)

    async def open(self) -> None:
        if self._db is None:
            self._db = await self._run(self._connect)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=5000")
            # Each batch touches one leaf of the series index per channel (a thousand
            # channels: a thousand pages, 4 MB): a cache that holds them and fewer,
            # larger checkpoints halve the CPU per reading (docs/gateway.md, Performance).
            db.execute(f"PRAGMA cache_size={-CACHE_KIB}")
            db.execute(f"PRAGMA wal_autocheckpoint={CHECKPOINT_PAGES}")
            db.executescript(SCHEMA)
        except BaseException:
            db.close()
            raise
        return db

    async def write(self, batch: Sequence[Reading]) -> None:
        if not batch:
            return
        if self._db is None:
            await self.open()
        db = self._db
        assert db is not None

        def insert() -> None:
            rows = [
                (
                    r.gateway_id,
                    r.seq,
                    r.site,
                    r.host,
                    r.instrument,
                    r.channel,
                    r.value,
                    r.unit,
                    r.timestamp,
                    r.quality,
                )
                for r in batch
            ]
            # In the series index's order: consecutive rows of a channel land on the
            # index page the previous one touched (about 3 µs less per reading with a
            # thousand channels, docs/gateway.md, Performance).
            rows.sort(key=_SERIES_ORDER)
            with db:  # one transaction: all or nothing
                db.execute("BEGIN")
                db.executemany(_INSERT, rows)

        await self._run(insert)

    async def _run(self, func: Any) -> Any:
        try:
            return await self._in_thread(func)
        except sqlite3.Error as exc:
            raise SinkUnavailableError(f"sqlite {self.path}: {exc}") from exc
        except OSError as exc:
            raise SinkUnavailableError(f"sqlite {self.path}: {exc.strerror or exc}") from exc

    async def _in_thread(self, func: Any) -> Any:
        """``func()`` in the sink's own lower-priority thread (an anyio worker waits for
        it, idle, so that cancellation and the limiter work as for any blocking call)."""
        thread = self._thread
        if thread is None:
            thread = self._thread = ThreadPoolExecutor(
                1, thread_name_prefix=f"aiotmc-sqlite-{self.name}", initializer=_lower_priority
            )
        return await anyio.to_thread.run_sync(
            lambda: thread.submit(func).result(), limiter=self._limiter
        )

    async def aclose(self) -> None:
        db, self._db = self._db, None
        with anyio.CancelScope(shield=True):
            if db is not None:
                await self._in_thread(db.close)
            thread, self._thread = self._thread, None
            if thread is not None:
                await anyio.to_thread.run_sync(thread.shutdown)


def _lower_priority() -> None:
    """Lower the calling thread's priority by :data:`THREAD_NICENESS` (Linux: a nice
    value per thread; elsewhere it would be the whole process's, so nothing changes)."""
    if sys.platform != "linux" or not THREAD_NICENESS:
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + THREAD_NICENESS)
    except OSError:  # not allowed here (a sandbox): run at the normal priority
        pass
