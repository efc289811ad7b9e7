"""NatsConnection: a server that goes away while we connect is a ConnectError (so that
agents and collectors try the next node or again), and publish_many sends a batch."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from anyio.abc import SocketStream

from aiotmc import ConnectError, ConnectionLostError
from aiotmc.transports.nats import NatsConnection, NatsServer

from ...nats_server import RunningNats

INFO = b'INFO {"server_id":"x","version":"2.10.0","max_payload":1048576}\r\n'


@asynccontextmanager
async def closing_server(greeting: bytes) -> AsyncIterator[int]:
    """A TCP server that sends ``greeting`` and closes each connection at once."""

    async def handle(stream: SocketStream) -> None:
        async with stream:
            if greeting:
                await stream.send(greeting)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        yield int(listener.extra(anyio.abc.SocketAttribute.local_port))
        tg.cancel_scope.cancel()


@pytest.mark.parametrize("greeting", [b"", INFO], ids=["before INFO", "after INFO"])
async def test_a_server_closing_while_we_connect_is_a_connect_error(greeting: bytes) -> None:
    async with closing_server(greeting) as port:
        with anyio.fail_after(5), pytest.raises(ConnectError, match="closed the connection"):
            await NatsConnection.connect(NatsServer("127.0.0.1", port), timeout=3)


async def test_publish_many_delivers_a_batch_in_order(nats_server: RunningNats) -> None:
    server = NatsServer("127.0.0.1", nats_server.port)
    receiver = await NatsConnection.connect(server, timeout=5)  # no echo: another connection
    sender = await NatsConnection.connect(server, timeout=5)
    try:
        sub = await receiver.subscribe("batch.test", maxsize=5000)
        await receiver.flush()  # the subscription is in place
        messages = [("batch.test", b"%d" % i, None, {"n": str(i)}) for i in range(3000)]
        await sender.publish_many(messages)  # about 100 kB: more than one write
        with anyio.fail_after(10):
            got = [await sub.messages.receive() for _ in range(3000)]
        assert [m.payload for m in got] == [b"%d" % i for i in range(3000)]
        assert got[-1].headers["n"] == "2999"
        await sub.unsubscribe()
    finally:
        await sender.aclose()
        await receiver.aclose()


async def test_a_reply_group_collects_the_answers_of_a_batch(nats_server: RunningNats) -> None:
    server = NatsServer("127.0.0.1", nats_server.port)
    responder = await NatsConnection.connect(server, timeout=5)
    sender = await NatsConnection.connect(server, timeout=5)
    try:
        sub = await responder.subscribe("group.echo", maxsize=1000)
        await responder.flush()

        async def answer() -> None:
            async for msg in sub.messages:
                assert msg.reply is not None
                await responder.publish(msg.reply, b"re:" + msg.payload)

        async with anyio.create_task_group() as tg:
            tg.start_soon(answer)
            group = sender.open_group()
            requests = [("group.echo", b"%d" % i, group.subject(i), None) for i in range(500)]
            await sender.publish_many(requests)
            with anyio.fail_after(10):
                await group.wait(500)
            assert [group.replies[i].payload for i in range(500)] == [
                b"re:%d" % i for i in range(500)
            ]
            sender.close_group(group)
            tg.cancel_scope.cancel()
        await sub.unsubscribe()
    finally:
        await sender.aclose()
        await responder.aclose()


async def test_a_reply_group_fails_when_the_connection_is_lost() -> None:
    async def handle(stream: SocketStream) -> None:
        async with stream:  # log the client in, then hang up at its first publish
            await stream.send(INFO)
            seen = b""
            while b"PUB " not in seen:  # bounded by the test's fail_after
                seen += await stream.receive()
                if b"CONNECT" in seen and b"PING\r\n" in seen and b"PONG" not in seen:
                    await stream.send(b"PONG\r\n")
                    seen += b"PONG"

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        port = int(listener.extra(anyio.abc.SocketAttribute.local_port))
        nc = await NatsConnection.connect(NatsServer("127.0.0.1", port), timeout=5)
        try:
            group = nc.open_group()
            await nc.publish_many([("x", b"1", group.subject(0), None)])
            with anyio.fail_after(5), pytest.raises(ConnectionLostError):
                await group.wait(1)
        finally:
            await nc.aclose()
        tg.cancel_scope.cancel()
