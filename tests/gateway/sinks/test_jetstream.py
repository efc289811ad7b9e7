"""The JetStream sink: its payloads are exactly ``json.dumps(reading.to_json())``, and a
batch is stored once however often it is sent (real nats-server -js)."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator

import pytest

from aiotmc.gateway.model import Quality, Reading
from aiotmc.gateway.sinks.jetstream import JetStreamSink
from aiotmc.transports.nats import NatsConnection, NatsServer
from aiotmc.transports.nats.jetstream import JetStream

from ...nats_server import RunningNats, running_nats

VALUES = [
    1.25,
    -0.0,
    1e-300,
    12345678901234567890.0,
    math.nan,
    math.inf,
    -math.inf,
    7,
    True,
    False,
    None,
    "3.5 V",
    'quote " and \\ back',
    "naïve µV",
    "",
]


_STREAMS = itertools.count(1)


def reading(seq: int, value: object = 1.5, **fields: object) -> Reading:
    base: dict[str, object] = {
        "gateway_id": "bench1",
        "seq": seq,
        "site": "lab",
        "host": "bench1",
        "instrument": "dmm 1",
        "channel": "volts.dc",
        "value": value,
        "unit": "V",
        "timestamp": 1765000000.123456,
        "quality": Quality.GOOD,
    }
    base.update(fields)
    return Reading(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_a_payload_is_the_readings_json_byte_for_byte(value: object) -> None:
    sink = JetStreamSink([NatsServer()])
    for r in (
        reading(1, value),
        reading(2**40, value, quality=Quality.BAD, unit='"quoted"', site="é"),
        reading(3, value, timestamp=math.nan),
    ):
        for _ in range(2):  # the template, then from the cache
            assert sink.payload_of(r) == json.dumps(r.to_json()).encode()
    assert sink.subject_of(reading(1)) == "aiotmc.readings.bench1.dmm_1.volts_dc"


@pytest.fixture(scope="module")
def js_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNats]:
    workdir = tmp_path_factory.mktemp("jssink")
    with running_nats(workdir, "-js", "-sd", str(workdir / "store")) as server:
        yield server


async def test_a_batch_is_stored_once_however_often_it_is_sent(js_server: RunningNats) -> None:
    server = NatsServer("127.0.0.1", js_server.port)
    stream = f"SINK{next(_STREAMS)}"
    sink = JetStreamSink([server], stream=stream, subject=stream.lower())
    batch = [reading(i, float(i), instrument=f"dmm{i % 7}") for i in range(1, 1201)]
    try:
        await sink.write(batch)  # about 300 kB: several socket writes, 1200 acks
        first = sink.published
        await sink.write(batch)  # a replay, as after a crash before the cursor moved
    finally:
        await sink.aclose()
    assert (first, sink.published, sink.duplicates) == (1200, 2400, 1200)
    nc = await NatsConnection.connect(server, timeout=5)
    try:
        info = await JetStream(nc).api(f"STREAM.INFO.{stream}")
    finally:
        await nc.aclose()
    assert info["state"]["messages"] == 1200
