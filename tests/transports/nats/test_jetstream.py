"""JetStream through aiotmc's NATS client against a real nats-server -js."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from itertools import count
from pathlib import Path

import anyio
import pytest

from aiotmc import ResourceNotFoundError
from aiotmc.transports.nats import NatsConnection, NatsServer
from aiotmc.transports.nats.jetstream import JetStream, JetStreamError, KeyValue

from ...nats_server import RunningNats, running_nats

_NAMES = count(1)


@pytest.fixture(scope="module")
def js_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNats]:
    workdir = tmp_path_factory.mktemp("js")
    with running_nats(workdir, "-js", "-sd", str(workdir / "store")) as server:
        yield server


@asynccontextmanager
async def jetstream(server: RunningNats) -> AsyncIterator[JetStream]:
    nc = await NatsConnection.connect(NatsServer("127.0.0.1", server.port))
    try:
        yield JetStream(nc)
    finally:
        await nc.aclose()


async def test_publish_is_acknowledged_and_deduplicated(js_server: RunningNats) -> None:
    name = f"READINGS{next(_NAMES)}"
    async with jetstream(js_server) as js:
        info = await js.ensure_stream(name, [f"{name.lower()}.>"])
        assert info["config"]["name"] == name
        again = await js.ensure_stream(name, [f"{name.lower()}.>"])  # exists: kept
        assert again["config"]["name"] == name
        first = await js.publish(f"{name.lower()}.a", b"1", msg_id="gw:1")
        second = await js.publish(f"{name.lower()}.a", b"2", msg_id="gw:2")
        replay = await js.publish(f"{name.lower()}.a", b"1", msg_id="gw:1")
        assert (first.seq, second.seq) == (1, 2)
        assert replay.duplicate and replay.seq == 1
        state = (await js.api(f"STREAM.INFO.{name}"))["state"]
        assert state["messages"] == 2


async def test_a_durable_consumer_resumes_after_its_last_ack(js_server: RunningNats) -> None:
    name = f"LOG{next(_NAMES)}"
    subject = f"{name.lower()}.x"
    async with jetstream(js_server) as js:
        await js.ensure_stream(name, [f"{name.lower()}.>"])
        for i in range(5):
            await js.publish(subject, b"%d" % i, msg_id=f"k{i}")
        await js.ensure_consumer(name, "collector")
        batch = await js.pull(name, "collector", batch=3, expires=2)
        assert [m.data for m in batch] == [b"0", b"1", b"2"]
        assert [m.stream_seq for m in batch] == [1, 2, 3]
        for m in batch:
            await m.ack()
        await js.nc.flush()
    async with jetstream(js_server) as js:  # a restarted collector
        await js.ensure_consumer(name, "collector")
        rest = await js.pull(name, "collector", batch=10, expires=0.5)
        assert [m.data for m in rest] == [b"3", b"4"]
        for m in rest:
            await m.ack()
        await js.nc.flush()
        assert await js.pull(name, "collector", batch=10, expires=0.2) == []


async def test_key_value_entries_expire(js_server: RunningNats) -> None:
    bucket = f"presence{next(_NAMES)}"
    async with jetstream(js_server) as js:
        kv = await KeyValue.create(js, bucket, ttl=1.0)
        await kv.put("hostA", b'{"up": 1}')
        await kv.put("hostB", b"x")
        await kv.put("hostA", b'{"up": 2}')
        assert await kv.get("hostA") == b'{"up": 2}'
        assert await kv.get("nobody") is None
        assert await kv.keys() == ["hostA", "hostB"]
        with anyio.fail_after(10):  # the TTL (1 s), bounded: poll until it is applied
            for _ in range(100):
                if await kv.get("hostB") is None:
                    break
                await anyio.sleep(0.1)
        assert await kv.get("hostB") is None
        assert await kv.keys() == []


async def test_without_jetstream_a_typed_error(tmp_path: Path) -> None:
    with running_nats(tmp_path) as plain:
        async with jetstream(plain) as js:
            with pytest.raises(ResourceNotFoundError, match="-js"):
                await js.ensure_stream("X", ["x.>"])


async def test_a_refused_request_is_a_typed_error(js_server: RunningNats) -> None:
    async with jetstream(js_server) as js:
        with pytest.raises(JetStreamError):
            await js.api("STREAM.INFO.NO_SUCH_STREAM")
