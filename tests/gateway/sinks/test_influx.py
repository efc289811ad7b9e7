"""The InfluxDB line-protocol sink: the encoding against the spec (a parser written from
it, fed by hypothesis), HTTP error handling against a scripted receiver, and a real
VictoriaMetrics read back through its export API."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiotmc._exceptions import ConfigError, SinkUnavailableError
from aiotmc.gateway.model import Quality, Reading
from aiotmc.gateway.sinks import influx
from aiotmc.gateway.sinks.influx import QUALITY_CODES, InfluxSink, encode, timestamp_ns

from ..alerts.http_receiver import DROP, HttpReceiver
from .pgcluster import free_port
from .victoria import VictoriaMetrics


def reading(seq: int, value: object = 1.5, **kw: object) -> Reading:
    fields: dict[str, object] = dict(
        gateway_id="gw1", seq=seq, site="lab", host="bench", instrument="dmm",
        channel="volt", value=value, unit="V", timestamp=time.time() - 60 + seq * 0.01,
    )  # fmt: skip
    fields.update(kw)
    return Reading(**fields)  # type: ignore[arg-type]


# ------------------------------------------------------------------ a parser from the spec


def _split(text: str, sep: str, *, quotes: bool = False, maxsplit: int = -1) -> list[str]:
    """Split at unescaped ``sep`` (outside double quotes if ``quotes``), keeping escapes."""
    parts, current, i, quoted = [], "", 0, False
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            current += text[i : i + 2]
            i += 2
            continue
        if quotes and ch == '"':
            quoted = not quoted
        if ch == sep and not quoted and maxsplit != len(parts):
            parts.append(current)
            current = ""
        else:
            current += ch
        i += 1
    parts.append(current)
    return parts


def _unescape(text: str) -> str:
    out, i = "", 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            out += text[i + 1]
            i += 2
        else:
            out += text[i]
            i += 1
    return out


def parse_line(line: str) -> tuple[str, dict[str, str], dict[str, object], int]:
    """measurement, tags, fields (float, int from ``Ni``, str from quotes), timestamp."""
    assert "\n" not in line
    series, rest = _split(line, " ", maxsplit=1)  # quotes are literal in the series part
    fieldset, stamp = _split(rest, " ", quotes=True)
    measurement, *tag_parts = _split(series, ",")
    tags = {}
    for part in tag_parts:
        key, value = _split(part, "=")
        tags[_unescape(key)] = _unescape(value)
    fields: dict[str, object] = {}
    for part in _split(fieldset, ",", quotes=True):
        key, value = _split(part, "=", quotes=True)
        if value.startswith('"'):
            assert value.endswith('"') and len(value) >= 2
            fields[_unescape(key)] = _unescape(value[1:-1])
        elif value.endswith("i"):
            fields[_unescape(key)] = int(value[:-1])
        else:
            fields[_unescape(key)] = float(value)
    return _unescape(measurement), tags, fields, int(stamp)


def test_lines_look_like_the_spec_examples() -> None:
    r = reading(1, 2.5, timestamp=1796590937.123456, host="bench 2", unit="deg,C")
    assert encode(r) == (
        "aiotmc,site=lab,host=bench\\ 2,instrument=dmm,channel=volt,unit=deg\\,C"
        " value=2.5,quality=0i 1796590937123456000"
    )
    r = reading(2, 'say "hi"\\', unit="", quality=Quality.BAD, timestamp=1.5)
    assert encode(r, "my meas") == (
        'my\\ meas,site=lab,host=bench,instrument=dmm,channel=volt text="say \\"hi\\"\\\\",'
        "quality=1i 1500000000"
    )
    assert encode(r, strings=False).endswith(" quality=1i 1500000000")


names = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=12)
values = st.one_of(st.none(), st.booleans(), st.integers(-(10**20), 10**20), st.floats(), names)


@given(
    names, names, names, names, st.text(max_size=5), values,
    st.floats(0, 4e9, allow_nan=False), st.sampled_from(list(Quality)), names,
)  # fmt: skip
def test_every_reading_reads_back_through_a_spec_parser(
    site: str, host: str, instrument: str, channel: str, unit: str, value: object,
    timestamp: float, quality: Quality, measurement: str,
) -> None:  # fmt: skip
    if measurement.startswith("_"):
        measurement = "m" + measurement
    r = Reading("g", 1, site, host, instrument, channel, value, unit, timestamp, quality)  # type: ignore[arg-type]
    got_measurement, tags, fields, stamp = parse_line(encode(r, measurement))

    def flat(text: str) -> str:
        return text.replace("\n", " ").replace("\r", " ")

    assert got_measurement == flat(measurement)
    expected_tags = {"site": site, "host": host, "instrument": instrument, "channel": channel}
    if unit:
        expected_tags["unit"] = unit
    assert tags == {k: flat(v) for k, v in expected_tags.items()}
    assert fields["quality"] == QUALITY_CODES[quality]
    number = r.numeric()
    if number is not None:
        assert fields["value"] == number and isinstance(fields["value"], float)
    else:
        assert "value" not in fields
    if isinstance(value, str):
        assert fields["text"] == flat(value)
    assert stamp == timestamp_ns(timestamp) and abs(stamp / 1e9 - timestamp) < 1e-6


# ------------------------------------------------------------------ HTTP, scripted answers


async def test_requests_use_the_v1_api_with_precision_and_auth() -> None:
    batch = [reading(1), reading(2, "text")]
    async with HttpReceiver() as rx:
        sink = InfluxSink(rx.url + "/", database="lab", username="u", password="p")
        try:
            await sink.write(batch)
        finally:
            await sink.aclose()
        request = await rx.next()
    assert (request.method, request.target) == ("POST", "/write?precision=ns&db=lab")
    assert request.headers["authorization"] == "Basic dTpw"  # base64("u:p")
    assert request.body.decode() == "".join(encode(r) + "\n" for r in batch)


async def test_text_that_utf8_cannot_carry_is_replaced_not_refused() -> None:
    async with HttpReceiver() as rx:
        sink = InfluxSink(rx.url)
        try:
            await sink.write([reading(1, "x\udc80y", unit="\udcff")])
        finally:
            await sink.aclose()
        request = await rx.next()
    assert b',unit=? text="x?y",' in request.body


async def test_requests_use_the_v2_api_with_a_token() -> None:
    async with HttpReceiver() as rx:
        sink = InfluxSink(rx.url, bucket="b", org="o", token="s3cret", measurement="lab")
        try:
            await sink.write([reading(1)])
        finally:
            await sink.aclose()
        request = await rx.next()
    assert request.target == "/api/v2/write?bucket=b&precision=ns&org=o"
    assert request.headers["authorization"] == "Token s3cret"
    assert request.body.startswith(b"lab,site=lab,")


@pytest.mark.parametrize("status", [500, 503, 429, 401, 404, DROP])
async def test_store_trouble_raises_sink_unavailable(status: int) -> None:
    batch = [reading(1)]
    async with HttpReceiver([status]) as rx:
        sink = InfluxSink(rx.url)
        try:
            with pytest.raises(SinkUnavailableError, match="influx sink 'influx'"):
                await sink.write(batch)
            await sink.write(batch)  # the retry goes through
        finally:
            await sink.aclose()
    assert len(rx.requests) == 2 and rx.requests[0].body == rx.requests[1].body


@pytest.mark.parametrize(("status", "size"), [(400, 2), (422, 2), (413, 1)])
async def test_refused_data_is_dropped_and_counted(
    status: int, size: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Data a store refuses would be refused again: retrying would block the spool."""
    async with HttpReceiver([status]) as rx:
        sink = InfluxSink(rx.url)
        try:
            await sink.write([reading(i) for i in range(size)])
            await sink.write([reading(9)])
        finally:
            await sink.aclose()
    assert sink.rejected == size and len(rx.requests) == 2
    assert f"refused {size} line(s) (HTTP {status})" in caplog.text
    assert f"status {status}" in caplog.text  # the store's own words


async def test_too_large_requests_are_split_in_order() -> None:
    batch = [reading(i) for i in range(7)]
    async with HttpReceiver([413]) as rx:
        sink = InfluxSink(rx.url, max_lines=4)
        try:
            await sink.write(batch)
        finally:
            await sink.aclose()
    sizes = [len(r.body.splitlines()) for r in rx.requests]
    assert sizes == [4, 2, 2, 3]  # 4 refused, then its halves; then the other 3
    delivered = b"".join(r.body for r in rx.requests[1:])
    assert delivered.decode().splitlines() == [encode(r) for r in batch]


async def test_nobody_listening_raises_sink_unavailable() -> None:
    sink = InfluxSink(f"http://127.0.0.1:{free_port()}", timeout=5)
    try:
        with pytest.raises(SinkUnavailableError):
            await sink.write([reading(1)])
    finally:
        await sink.aclose()
        await sink.aclose()


# ------------------------------------------------------------------ real VictoriaMetrics


@pytest.fixture(scope="module")
def victoria() -> Iterator[VictoriaMetrics]:
    vm = VictoriaMetrics()
    try:
        vm.start()
        yield vm
    finally:
        vm.destroy()


def samples(series: list[dict[str, object]]) -> dict[tuple[str, int], float]:
    found: dict[tuple[str, int], float] = {}
    for s in series:
        metric = s["metric"]
        assert isinstance(metric, dict)
        for stamp, value in zip(s["timestamps"], s["values"], strict=True):  # type: ignore[call-overload]
            key = (metric["instrument"], stamp)
            assert key not in found, f"{key} stored twice"
            found[key] = value
    return found


async def test_victoria_metrics_stores_each_reading_once(
    victoria: VictoriaMetrics, anyio_backend: str
) -> None:
    channel = f"ch_{anyio_backend}"
    batch = [
        reading(i, 0.5 * i, channel=channel, instrument=f"psu {i % 2},x=y", unit="deg C")
        for i in range(20)
    ] + [reading(99, "OVLD", channel=channel, quality=Quality.BAD, instrument="psu 0,x=y")]
    sink = InfluxSink(victoria.url, database="ignored", strings=False)
    try:
        await sink.write(batch[:12])
        await sink.write(batch)  # a replay overlapping the first batch
    finally:
        await sink.aclose()
    start, end = batch[0].timestamp - 1, batch[-1].timestamp + 1
    selector = f'{{__name__="aiotmc_value",channel="{channel}"}}'
    series = await anyio.to_thread.run_sync(victoria.wait_for_samples, selector, start, end, 20)
    assert {(s["metric"]["unit"], s["metric"]["site"]) for s in series} == {("deg C", "lab")}
    expected = {(r.instrument, timestamp_ns(r.timestamp) // 1_000_000): r.value for r in batch[:20]}
    assert samples(series) == expected
    quality = f'{{__name__="aiotmc_quality",channel="{channel}"}}'
    codes = await anyio.to_thread.run_sync(victoria.wait_for_samples, quality, start, end, 21)
    assert sorted(samples(codes).values()) == [0.0] * 20 + [1.0]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # one restart of the server is enough
async def test_victoria_metrics_down_then_back(victoria: VictoriaMetrics) -> None:
    batch = [reading(i, float(i), channel="restart") for i in range(5)]
    sink = InfluxSink(victoria.url, timeout=5)
    try:
        await sink.write(batch[:2])
        await anyio.to_thread.run_sync(victoria.stop)
        with pytest.raises(SinkUnavailableError):
            await sink.write(batch)
        await anyio.to_thread.run_sync(victoria.start)
        await sink.write(batch)  # the replay of the refused batch
    finally:
        await sink.aclose()
    selector = '{__name__="aiotmc_value",channel="restart"}'
    start, end = batch[0].timestamp - 1, batch[-1].timestamp + 1
    series = await anyio.to_thread.run_sync(victoria.wait_for_samples, selector, start, end, 5)
    assert sorted(samples(series).values()) == [float(i) for i in range(5)]
    assert not any(math.isnan(v) for v in samples(series).values())


# ------------------------------------------------------------------ configuration


@pytest.mark.parametrize(
    ("section", "field", "message"),
    [
        ({"type": "influx"}, "url", "missing required field 'url'"),
        ({"url": "ftp://x"}, "url", "http:// or https://"),
        ({"url": "http://x", "measurement": "_m"}, "measurement", "start with '_'"),
        ({"url": "http://x", "password": "p"}, "password", "needs a username"),
        ({"url": "http://x", "database": "d", "bucket": "b"}, "bucket", "not both"),
        ({"url": "http://x", "max_lines": 0}, "max_lines", "at least 1"),
        ({"url": "http://x", "strings": "yes"}, "strings", "true or false"),
        ({"url": "http://x", "urll": "x"}, "urll", "unknown field"),
    ],
)
def test_config_errors_name_the_field(section: dict[str, object], field: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        influx.from_config(section, ("sinks", 3))
    assert info.value.key == ("sinks", 3, field)


def test_config_builds_the_sink() -> None:
    sink = influx.from_config(
        {"type": "influx", "name": "vm", "url": "http://127.0.0.1:8428", "strings": False},
        ("sinks", 0),
    )
    assert isinstance(sink, InfluxSink)
    assert (sink.name, sink.endpoint, sink.strings) == ("vm", "http://127.0.0.1:8428/write", False)
    secret = InfluxSink("http://user:pw@127.0.0.1:8086/", database="d")
    assert repr(secret) == "<InfluxSink 'influx' http://127.0.0.1:8086/write>"
