"""Readings as InfluxDB line protocol over HTTP (InfluxDB 1.x/2.x, VictoriaMetrics).

One line per reading::

    aiotmc,site=lab,host=b1,instrument=dmm,channel=v,unit=V value=1.5,quality=0i 1796590937123456000

* tags ``site``, ``host``, ``instrument``, ``channel`` and ``unit`` (left out when empty);
* field ``value``: every number as a float (integers and booleans too, so that a
  channel's field type never changes, which InfluxDB would refuse); text goes to the
  string field ``text`` (``strings = true``); NaN, infinities and none leave it out;
* field ``quality``: an integer, 0 good, 1 bad, 2 stale (:data:`QUALITY_CODES`; a number
  because VictoriaMetrics stores numbers only);
* the timestamp in nanoseconds (the reading's time to the microsecond, so that a replay
  gives the same number).

Escaping follows the line-protocol spec: backslash, comma, space (and ``=`` in tags and
field keys) are escaped with a backslash; in string fields, backslash and double quote.
Line breaks cannot be carried by the protocol and become spaces.

**Idempotency** comes from the data model: a replayed reading gives the same series and
timestamp, and InfluxDB overwrites a point with the same series and timestamp.
VictoriaMetrics keeps duplicates unless started with ``-dedup.minScrapeInterval=1ms``
(then one sample per series and millisecond: the same overwrite semantics; its timestamps
are milliseconds, so two readings of one channel within 1 ms also collapse).

Network failures, 5xx, 429, and 401/403/404 (the store is misconfigured, not the data)
raise :class:`~aiotmc.SinkUnavailableError`: the spool keeps the batch. A request that is
too large (413) is split in halves. Data the store refuses (400/422: e.g. a field type
conflict with older points) would never be accepted on a retry: those lines are logged,
counted in :attr:`InfluxSink.rejected` and dropped (InfluxDB keeps the good lines of a
partial write).
"""

from __future__ import annotations

import functools
import logging
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any, Final

from ..._exceptions import ConfigError, SinkUnavailableError
from ..fields import Fields, Key
from ..model import Quality, Reading

__all__ = ["QUALITY_CODES", "InfluxSink", "encode", "from_config"]

logger = logging.getLogger("aiotmc.gateway.sinks.influx")

QUALITY_CODES: Final[Mapping[Quality, int]] = {Quality.GOOD: 0, Quality.BAD: 1, Quality.STALE: 2}

_BREAKS: Final = str.maketrans({"\n": " ", "\r": " "})
_MEASUREMENT: Final = str.maketrans({"\\": "\\\\", ",": "\\,", " ": "\\ "})
_KEY: Final = str.maketrans({"\\": "\\\\", ",": "\\,", "=": "\\=", " ": "\\ "})
_STRING: Final = str.maketrans({"\\": "\\\\", '"': '\\"'})
#: Error bodies are read up to this size, for the log.
_MAX_ERROR_BODY: Final = 4096


def escape_measurement(name: str) -> str:
    return name.translate(_BREAKS).translate(_MEASUREMENT)


def escape_key(text: str) -> str:
    """A tag key, tag value or field key."""
    return text.translate(_BREAKS).translate(_KEY)


def escape_string(text: str) -> str:
    """The inside of a string field value (without the quotes)."""
    return text.translate(_BREAKS).translate(_STRING)


def timestamp_ns(seconds: float) -> int:
    """Nanoseconds from Unix seconds, to the microsecond (a float holds no more)."""
    return round(seconds * 1_000_000) * 1000


@functools.lru_cache(maxsize=65536)
def _series(
    measurement: str, site: str, host: str, instrument: str, channel: str, unit: str
) -> str:
    """``measurement,tag=value,...``: escaped once per series (cached)."""
    parts = [escape_measurement(measurement)]
    for tag, text in (
        ("site", site),
        ("host", host),
        ("instrument", instrument),
        ("channel", channel),
        ("unit", unit),
    ):
        if text:  # the protocol has no empty tag values
            parts.append(f"{tag}={escape_key(text)}")
    return ",".join(parts)


def encode(reading: Reading, measurement: str = "aiotmc", *, strings: bool = True) -> str:
    """One line of line protocol (no trailing newline) for ``reading``."""
    series = _series(
        measurement, reading.site, reading.host, reading.instrument, reading.channel, reading.unit
    )
    fields = []
    value = reading.value
    try:
        number = reading.numeric()
    except OverflowError:  # an integer beyond a float's range
        number = None
    if number is not None:
        fields.append(f"value={number!r}")  # repr: the shortest form that reads back exactly
    elif strings and isinstance(value, str):
        fields.append(f'text="{escape_string(value)}"')
    fields.append(f"quality={QUALITY_CODES[reading.quality]}i")
    return f"{series} {','.join(fields)} {timestamp_ns(reading.timestamp)}"


class InfluxSink:
    """Readings to the line-protocol write endpoint under ``url``.

    Without ``bucket``: the 1.x API, ``POST {url}/write?db=DATABASE&precision=ns`` (what
    VictoriaMetrics also serves; ``username``/``password`` as HTTP basic auth). With
    ``bucket``: the 2.x API, ``POST {url}/api/v2/write?org=ORG&bucket=BUCKET&precision=ns``
    with ``Authorization: Token TOKEN``. ``timeout`` bounds each request.
    """

    def __init__(
        self,
        url: str,
        *,
        name: str = "influx",
        measurement: str = "aiotmc",
        database: str | None = None,
        bucket: str | None = None,
        org: str | None = None,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        strings: bool = True,
        timeout: float = 10.0,
        max_lines: int = 5000,
    ) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"expected an http:// or https:// URL, got {url!r}")
        if not measurement or measurement.startswith("_"):
            raise ValueError("the measurement must not be empty or start with '_'")
        self.name = name
        self.measurement = measurement
        self.strings = strings
        self.timeout = timeout
        self.max_lines = max_lines
        base = url.rstrip("/")
        self._headers: dict[str, str] = {"Content-Type": "text/plain; charset=utf-8"}
        self._auth: tuple[str, str] | None = None
        if bucket is not None:
            self.endpoint = f"{base}/api/v2/write"
            self._params = {"bucket": bucket, "precision": "ns"}
            if org is not None:
                self._params["org"] = org
            if token is not None:
                self._headers["Authorization"] = f"Token {token}"
        else:
            self.endpoint = f"{base}/write"
            self._params = {"precision": "ns"}
            if database is not None:
                self._params["db"] = database
            if username is not None:
                self._auth = (username, password or "")
            if token is not None:  # InfluxDB 2's /write compatibility API
                self._headers["Authorization"] = f"Token {token}"
        #: The endpoint without any user:password@, for logs and errors.
        self.where = urllib.parse.urlunsplit(
            urllib.parse.urlsplit(self.endpoint)._replace(netloc=parsed.netloc.rpartition("@")[2])
        )
        #: Readings the store refused (400/422) and that were dropped.
        self.rejected = 0
        self._client: Any = None

    def __repr__(self) -> str:
        return f"<InfluxSink {self.name!r} {self.where}>"

    @classmethod
    def from_config(cls, section: Mapping[str, Any], key: Key) -> InfluxSink:
        """``[[sinks]] type = "influx"``: ``url`` (required), ``name`` (default "influx"),
        ``measurement`` ("aiotmc"), ``database`` (1.x), ``bucket``/``org`` (2.x), ``token``,
        ``username``/``password``, ``strings`` (true), ``timeout`` (10 s), ``max_lines``
        (5000 per request)."""
        fields = Fields(section, key)
        fields.string("type", "influx")
        name = fields.name("name", "influx")
        url = fields.string("url")
        options: dict[str, Any] = {
            "measurement": fields.string("measurement", "aiotmc"),
            "database": fields.string("database", None),
            "bucket": fields.string("bucket", None),
            "org": fields.string("org", None),
            "token": fields.string("token", None),
            "username": fields.string("username", None),
            "password": fields.string("password", None),
            "strings": fields.boolean("strings", True),
            "timeout": fields.number("timeout", 10.0, positive=True),
            "max_lines": fields.integer("max_lines", 5000, minimum=1),
        }
        fields.done()
        if options["password"] is not None and options["username"] is None:
            raise ConfigError("a password needs a username", key=fields.at("password"))
        if options["bucket"] is not None and options["database"] is not None:
            raise ConfigError(
                "give either database (InfluxDB 1.x API) or bucket (2.x API), not both",
                key=fields.at("bucket"),
            )
        try:
            return cls(url, name=name, **options)
        except ValueError as exc:
            where = "url" if "URL" in str(exc) else "measurement"
            raise ConfigError(str(exc), key=fields.at(where)) from exc

    async def open(self) -> None:
        """Make the HTTP client (no request: the first write finds out if the store is up)."""
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(
                timeout=self.timeout, headers=self._headers, auth=self._auth
            )

    async def write(self, batch: Sequence[Reading]) -> None:
        """Send ``batch`` in requests of at most ``max_lines`` lines, in order."""
        if not batch:
            return
        await self.open()
        lines = [encode(r, self.measurement, strings=self.strings) for r in batch]
        for start in range(0, len(lines), self.max_lines):
            await self._post(lines[start : start + self.max_lines])

    async def _post(self, lines: list[str]) -> None:
        import httpx

        # "replace": a lone surrogate (from a surrogateescape'd answer) becomes "?" rather
        # than an error that would block the spool
        body = ("\n".join(lines) + "\n").encode("utf-8", "replace")
        try:
            async with self._client.stream(
                "POST", self.endpoint, params=self._params, content=body
            ) as response:
                status = response.status_code
                if status < 300:
                    return
                detail = await _excerpt(response)
        except httpx.HTTPError as exc:
            reason = str(exc) or type(exc).__name__
            logger.warning("influx sink %r: %s", self.name, reason)
            raise SinkUnavailableError(
                f"influx sink {self.name!r} ({self.where}): {reason}"
            ) from exc
        if status == 413 and len(lines) > 1:
            half = len(lines) // 2
            await self._post(lines[:half])
            await self._post(lines[half:])
            return
        if status in (400, 413, 422):
            self.rejected += len(lines)
            logger.error(
                "influx sink %r: the store refused %d line(s) (HTTP %d), dropped: %s",
                self.name, len(lines), status, detail,
            )  # fmt: skip
            return
        logger.warning("influx sink %r: HTTP %d: %s", self.name, status, detail)
        raise SinkUnavailableError(
            f"influx sink {self.name!r} ({self.where}): HTTP {status}: {detail}"
        )

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            import anyio

            with anyio.CancelScope(shield=True):
                await client.aclose()


async def _excerpt(response: Any) -> str:
    """The start of an error body, read no further than ``_MAX_ERROR_BODY`` bytes."""
    data = b""
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) >= _MAX_ERROR_BODY:
            break
    text = data[:_MAX_ERROR_BODY].decode("utf-8", "replace").translate(_BREAKS).strip()
    return text[:300] or "(no body)"


#: The plug-in factory (``aiotmc.gateway.sinks.influx:from_config``).
from_config = InfluxSink.from_config
