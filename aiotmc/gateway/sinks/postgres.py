"""Readings into PostgreSQL (psycopg 3, async), idempotent by key.

The table (``readings`` unless configured) is created if missing, with primary key
``(gateway_id, seq)``: the reading's idempotent key. A batch is one ``INSERT ... SELECT
FROM unnest(...) ON CONFLICT DO NOTHING`` (one round trip, one transaction), so a batch
replayed from the spool after an outage or a crash stores only the readings not already
there. Numbers (booleans as 0/1, NaN and infinities included) go to ``value``, text to
``value_text``; ``timestamp`` is a ``timestamptz``. The session runs with
``synchronous_commit = on`` whatever the server's default: a batch acknowledged to the
spool is durable, since the spool then forgets it.

Any failure worth retrying (server down or restarting, connection lost, timeout) closes
the connection and raises :class:`~aiotmc.SinkUnavailableError`; the next ``write``
reconnects. psycopg's async connection runs on asyncio only, like the gateway app.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

import anyio

from ..._exceptions import ConfigError, SinkUnavailableError
from ..fields import Fields, Key
from ..model import Reading

__all__ = ["PostgresSink", "from_config"]

logger = logging.getLogger("aiotmc.gateway.sinks.postgres")

_IDENT: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS {table} (
    gateway_id text NOT NULL,
    seq bigint NOT NULL,
    site text NOT NULL,
    host text NOT NULL,
    instrument text NOT NULL,
    channel text NOT NULL,
    "timestamp" timestamptz NOT NULL,
    value double precision,
    value_text text,
    unit text NOT NULL,
    quality text NOT NULL,
    PRIMARY KEY (gateway_id, seq)
);
CREATE INDEX IF NOT EXISTS {index} ON {table} (instrument, channel, "timestamp");
"""

_INSERT: Final = """
INSERT INTO {table} (gateway_id, seq, site, host, instrument, channel, "timestamp",
                     value, value_text, unit, quality)
SELECT g, s, si, h, i, c, to_timestamp(t), v, vt, u, q
FROM unnest(%s::text[], %s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[],
            %s::float8[], %s::float8[], %s::text[], %s::text[], %s::text[])
     AS r(g, s, si, h, i, c, t, v, vt, u, q)
ON CONFLICT (gateway_id, seq) DO NOTHING
"""


def _text(value: str) -> str:
    """``value`` as PostgreSQL text can hold it: no NUL, no lone surrogate (a value that
    cannot be stored would block the spool forever); anything else as given."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value.replace("\x00", "\ufffd")


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, float):
        return value
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    return None


def columns(batch: Sequence[Reading]) -> list[list[Any]]:
    """The batch as one list per column, in ``_INSERT``'s order."""
    cols: list[list[Any]] = [[] for _ in range(11)]
    for r in batch:
        row = (
            _text(r.gateway_id),
            r.seq,
            _text(r.site),
            _text(r.host),
            _text(r.instrument),
            _text(r.channel),
            r.timestamp,
            _number(r.value),
            _text(r.value) if isinstance(r.value, str) else None,
            _text(r.unit),
            r.quality.value,
        )
        for col, item in zip(cols, row, strict=True):
            col.append(item)
    return cols


class PostgresSink:
    """Readings into ``table`` of the PostgreSQL database at ``dsn`` (a libpq conninfo
    string or a ``postgresql://`` URI; passwords may also come from ``PGPASSWORD`` or
    ``~/.pgpass``). ``timeout`` bounds each connect and each write."""

    def __init__(
        self,
        dsn: str,
        *,
        name: str = "postgres",
        table: str = "readings",
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
    ) -> None:
        import psycopg.conninfo
        from psycopg import sql

        self.name = name
        self.dsn = dsn
        parts = table.split(".")
        if len(parts) > 2 or not all(_IDENT.fullmatch(p) for p in parts):
            raise ValueError(f"table {table!r}: expected NAME or SCHEMA.NAME (letters, digits, _)")
        self.table = table
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        params = psycopg.conninfo.conninfo_to_dict(dsn)  # ProgrammingError on bad syntax
        self._where = f"{params.get('host', 'localhost')}:{params.get('port', 5432)}"
        ident = sql.Identifier(*parts)
        index = sql.Identifier(f"{parts[-1]}_series_time")
        self._schema = sql.SQL(_SCHEMA).format(table=ident, index=index)
        self._insert = sql.SQL(_INSERT).format(table=ident)
        self._conn: Any = None

    def __repr__(self) -> str:  # never the DSN: it may hold a password
        return f"<PostgresSink {self.name!r} {self._where} table={self.table!r}>"

    @classmethod
    def from_config(cls, section: Mapping[str, Any], key: Key) -> PostgresSink:
        """``[[sinks]] type = "postgres"``: ``dsn`` (required), ``name`` (default
        "postgres"), ``table`` (default "readings", or "schema.table"), ``timeout`` and
        ``connect_timeout`` (seconds, defaults 30 and 10)."""
        fields = Fields(section, key)
        fields.string("type", "postgres")
        name = fields.name("name", "postgres")
        dsn = fields.string("dsn")
        table = fields.string("table", "readings")
        timeout = fields.number("timeout", 30.0, positive=True)
        connect_timeout = fields.number("connect_timeout", 10.0, positive=True)
        fields.done()
        try:
            return cls(
                dsn, name=name, table=table, timeout=timeout, connect_timeout=connect_timeout
            )
        except ValueError as exc:
            raise ConfigError(str(exc), key=fields.at("table")) from exc
        except Exception as exc:  # psycopg.ProgrammingError: conninfo syntax
            message = f"not a valid libpq conninfo or URI: {exc}"
            raise ConfigError(message, key=fields.at("dsn")) from exc

    async def open(self) -> None:
        """Connect and create the table if missing (``SinkUnavailableError`` if down)."""
        if self._conn is None:
            with self._unavailable("connect"):
                with anyio.fail_after(self.connect_timeout):
                    await self._connect()

    async def _connect(self) -> None:
        import psycopg

        conn = await psycopg.AsyncConnection.connect(
            self.dsn,
            autocommit=False,
            connect_timeout=max(1, math.ceil(self.connect_timeout)),
            application_name="aiotmc-gateway",
        )
        try:
            async with conn.transaction():
                # An acknowledged batch leaves the spool: it must survive a server crash
                # even where the server's default is synchronous_commit = off.
                await conn.execute("SET SESSION synchronous_commit = on")
            try:
                async with conn.transaction():
                    await conn.execute(self._schema)
            except psycopg.errors.UniqueViolation:
                pass  # another gateway created it at the same moment
        except BaseException:
            await _close(conn)
            raise
        self._conn = conn

    async def write(self, batch: Sequence[Reading]) -> None:
        """Store ``batch`` in one transaction; readings already stored are skipped."""
        if not batch:
            return
        await self.open()
        cols = columns(batch)
        with self._unavailable("write"):
            with anyio.fail_after(self.timeout):
                async with self._conn.transaction():
                    await self._conn.execute(self._insert, cols)

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with anyio.CancelScope(shield=True):
                await _close(conn)

    @contextlib.contextmanager
    def _unavailable(self, what: str) -> Iterator[None]:
        """Map connection-level failures to ``SinkUnavailableError``; any failure (also a
        cancellation: a connection interrupted mid-query is in an unknown state) drops
        the connection, and the next call reconnects."""
        import psycopg

        try:
            yield
        except BaseException as exc:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.pgconn.finish()  # synchronous, no I/O wait
            if isinstance(exc, TimeoutError):  # anyio.fail_after (before OSError: a subclass)
                limit = self.timeout if what == "write" else self.connect_timeout
                reason = f"no answer within {limit:g} s"
            elif isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError | OSError):
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            else:
                raise  # a bug, or a refusal that retrying will not cure
            logger.warning("postgres sink %r: %s failed: %s", self.name, what, reason)
            raise SinkUnavailableError(
                f"postgres sink {self.name!r} ({self._where}): {what} failed: {reason}"
            ) from exc


async def _close(conn: Any) -> None:
    try:
        await conn.close()
    except Exception:  # the server is gone already: nothing left to release
        conn.pgconn.finish()


#: The plug-in factory (``aiotmc.gateway.sinks.postgres:from_config``).
from_config = PostgresSink.from_config
