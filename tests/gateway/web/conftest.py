"""Fixtures for the web dashboard tests: a minimal in-test Hub and Controller (the real
ones live in aiotmc.gateway.hub and aiotmc.gateway.control), users with cheap argon2
hashes, and an ASGI client.

asyncio only: the gateway is an asyncio application (uvicorn), so these tests override
``anyio_backend``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from anyio.abc import ObjectReceiveStream
from anyio.streams.memory import MemoryObjectSendStream
from argon2 import PasswordHasher

from aiotmc.gateway.control import Refusal, refuse
from aiotmc.gateway.model import CommandRequest, CommandResult, Event
from aiotmc.gateway.web.app import WebApp
from aiotmc.gateway.web.settings import User, WebSettings

#: Cheap parameters: a test verifies in microseconds (the defaults take ~50 ms).
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
PASSWORDS = {"alice": "alice-secret", "bob": "bob-secret"}
HOST = "gw.test"
ORIGIN = f"http://{HOST}"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def users() -> tuple[User, ...]:
    return (
        User("alice", FAST_HASHER.hash(PASSWORDS["alice"]), ("operator",)),
        User("bob", FAST_HASHER.hash(PASSWORDS["bob"]), ("viewer",)),
    )


class FakeController:
    """Operators may ``set_voltage`` 0..30 V on ``psu``; everything else is refused, with
    the real controller's refusal reasons (:mod:`aiotmc.gateway.control`).

    It records every request (the real controller's audit log does that too) and, when
    given an instrument (an :class:`aiotmc.Instrument`), really sends the command to it.
    """

    def __init__(self, instrument: Any = None) -> None:
        self.instrument = instrument
        self.requests: list[CommandRequest] = []

    async def execute(self, request: CommandRequest) -> CommandResult:
        self.requests.append(request)
        if "operator" not in request.roles:
            return refuse(Refusal.NOT_ALLOWED, f"role(s) {list(request.roles)} may not control")
        if request.instrument != "psu" or request.operation != "set_voltage":
            message = f"{request.operation} on {request.instrument}: not allowed"
            return refuse(Refusal.NOT_ALLOWED, message)
        value = request.value
        if not isinstance(value, int | float) or isinstance(value, bool):
            return refuse(Refusal.BAD_VALUE, f"set_voltage {value!r}: not a number")
        if not 0 <= value <= 30:
            return refuse(Refusal.OUT_OF_LIMITS, f"set_voltage {value!r}: outside 0..30 V")
        if self.instrument is not None:
            await self.instrument.write(f"VOLT {value}")
            return CommandResult(True, "executed", await self.instrument.query("VOLT?"))
        return CommandResult(True, "executed", str(value))


@dataclass
class FakeHub:
    """The Hub protocol with drop-oldest bounded queues per subscriber."""

    controller: Any = field(default_factory=FakeController)
    gateway_id: str = "gw-test"
    site: str = "lab"
    host: str = "bench1"
    queues: dict[str, MemoryObjectSendStream[Event]] = field(default_factory=dict)
    receivers: dict[str, Any] = field(default_factory=dict)
    drops: dict[str, int] = field(default_factory=dict)
    changed: anyio.Event = field(default_factory=anyio.Event)

    @asynccontextmanager
    async def subscribe(
        self, name: str, *, maxsize: int = 1000
    ) -> AsyncIterator[ObjectReceiveStream[Event]]:
        send, receive = anyio.create_memory_object_stream[Event](maxsize)
        self.queues[name] = send
        self.receivers[name] = receive
        self.drops.setdefault(name, 0)
        self.changed.set()
        try:
            with send, receive:
                yield receive
        finally:
            del self.queues[name]
            del self.receivers[name]
            self.changed.set()

    async def publish(self, event: Event) -> None:
        for name, send in list(self.queues.items()):
            try:
                send.send_nowait(event)
            except anyio.WouldBlock:
                self.receivers[name].receive_nowait()  # drop the oldest
                self.drops[name] += 1
                send.send_nowait(event)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass

    def dropped(self, name: str) -> int:
        return self.drops[name]

    async def wait_subscribers(self, count: int) -> None:
        """Until exactly ``count`` subscriptions are open (bound it with fail_after)."""
        while len(self.queues) != count:
            self.changed = anyio.Event()
            await self.changed.wait()


@pytest.fixture
def hub() -> FakeHub:
    return FakeHub()


@asynccontextmanager
async def running(web: WebApp) -> AsyncIterator[None]:
    """Run the app's hub feed around the block."""
    async with anyio.create_task_group() as tg:
        await tg.start(web.feed)
        try:
            yield
        finally:
            with anyio.fail_after(5, shield=True):
                await web.close_clients()
            tg.cancel_scope.cancel()


def make_app(hub: FakeHub, users: tuple[User, ...], **settings: Any) -> WebApp:
    options: dict[str, Any] = {"allowed_hosts": (HOST, "localhost", "127.0.0.1")}
    options.update(settings)
    return WebApp(hub, WebSettings(**options), users)


@pytest.fixture
def web(hub: FakeHub, users: tuple[User, ...]) -> WebApp:
    return make_app(hub, users)


# -- a minimal ASGI WebSocket client -----------------------------------------------------------

Message = dict[str, Any]


class WebSocketRefused(Exception):
    """The app closed the WebSocket before accepting it (the server answers 403)."""


class AsgiWebSocket:
    """The client end of an in-process ASGI WebSocket."""

    def __init__(self, to_app: Any, from_app: Any) -> None:
        self.to_app = to_app
        self.from_app = from_app

    async def receive_json(self) -> Message:
        message = await self.from_app.receive()
        if message["type"] == "websocket.close":
            raise ConnectionError(f"closed with code {message.get('code')}")
        return json.loads(message["text"])  # type: ignore[no-any-return]


def ws_scope(path: str = "/ws", headers: dict[str, str] | None = None) -> Message:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "scheme": "ws",
        "server": (HOST, 80),
        "client": ("127.0.0.1", 50000),
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": raw,
        "subprotocols": [],
        "state": {},
    }


@asynccontextmanager
async def websocket(
    app: Any, headers: dict[str, str], *, buffer: int = 64
) -> AsyncIterator[AsgiWebSocket]:
    """Connect; raises :class:`WebSocketRefused` when the app closes before accepting.
    ``buffer``: messages the app can send before a send blocks (0: a client that never
    reads)."""
    to_app, app_inbox = anyio.create_memory_object_stream[Message](16)
    app_outbox, from_app = anyio.create_memory_object_stream[Message](buffer)
    with to_app, app_inbox, from_app:

        async def run_app() -> None:
            with app_outbox:
                await app(ws_scope(headers=headers), app_inbox.receive, app_outbox.send)

        refused: int | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_app)
            await to_app.send({"type": "websocket.connect"})
            with anyio.fail_after(5):
                first = await from_app.receive()
            if first["type"] == "websocket.close":
                refused = first.get("code", 1000)  # the app returns by itself
            else:
                assert first["type"] == "websocket.accept", first
                try:
                    yield AsgiWebSocket(to_app, from_app)
                finally:
                    to_app.send_nowait({"type": "websocket.disconnect", "code": 1000})
                    with anyio.fail_after(5, shield=True):
                        async for _ in from_app:
                            pass
        if refused is not None:
            raise WebSocketRefused(refused)
