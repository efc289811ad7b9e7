"""Hand-over by I/O on a raw socket (``transports/tcp/_early.py``), against a scripted
peer on loopback: the releaser sends the next caller's query and that caller wakes with
its answer; a deadline, a cancellation, a hang-up or a close while it waits; a send the
socket does not take whole."""

from __future__ import annotations

import functools
import importlib
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from anyio.abc import SocketStream

import aiotmc
from aiotmc.transports._receivers import AnyioReceiver
from aiotmc.transports.tcp import SocketTransport
from aiotmc.transports.tcp._early import SocketEarlyExchange

from .test_tcp import per_command, raw_peer


@dataclass
class Script:
    """The peer: answers ``X?`` with ``x``, ``A?`` once ``go`` is set; ``B?`` as ``b``."""

    b: str = "answer"  # "answer", "never", "hang up" or "later" (once go_b is set)
    go: anyio.Event = field(default_factory=anyio.Event)
    go_b: anyio.Event = field(default_factory=anyio.Event)
    saw_a: anyio.Event = field(default_factory=anyio.Event)
    saw_b: anyio.Event = field(default_factory=anyio.Event)
    commands: list[bytes] = field(default_factory=list)

    async def __call__(self, stream: SocketStream, command: bytes) -> bool | None:
        self.commands.append(command)
        if command == b"A?\n":
            self.saw_a.set()
            await self.go.wait()
        if command == b"B?\n":
            self.saw_b.set()
            if self.b == "never":
                return None
            if self.b == "hang up":
                return False
            if self.b == "later":
                await self.go_b.wait()
        await stream.send(command[:1].lower() + b"\n")
        return None


@asynccontextmanager
async def holding(script: Script) -> AsyncIterator[tuple[aiotmc.Instrument, list[bool]]]:
    """An instrument whose lock ``A?`` holds (until ``script.go``), and the results of
    every early start."""
    starts: list[bool] = []
    original = SocketEarlyExchange.start

    def start(self: SocketEarlyExchange) -> bool:
        starts.append(original(self))
        return starts[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SocketEarlyExchange, "start", start)
        async with (
            raw_peer(per_command(script)) as port,
            aiotmc.open(f"TCPIP::127.0.0.1::{port}::SOCKET") as inst,
        ):
            assert await inst.query("X?") == "x"  # connected, receiver made
            yield inst, starts


async def _queue_b_behind_a(
    inst: aiotmc.Instrument, script: Script, tg: Any, got: dict[str, object], **options: Any
) -> None:
    async def ask(name: str, **options: Any) -> None:
        try:
            got[name] = await inst.query(f"{name}?", **options)
        except Exception as exc:
            got[name] = exc

    tg.start_soon(ask, "A")
    await script.saw_a.wait()
    tg.start_soon(functools.partial(ask, "B", **options))
    await anyio.wait_all_tasks_blocked()
    assert inst._lock.waiting == 1


async def _a_then_b(inst: aiotmc.Instrument, script: Script, **options: Any) -> dict[str, object]:
    """``A?`` holds the lock while ``B?`` queues behind it, then ``A?`` is answered: what
    each call returned or raised."""
    got: dict[str, object] = {}
    async with anyio.create_task_group() as tg:
        await _queue_b_behind_a(inst, script, tg, got, **options)
        script.go.set()
    return got


async def test_the_releaser_sends_the_next_query_and_the_answer_wakes_its_caller() -> None:
    script = Script()
    got: dict[str, object] = {}
    with anyio.fail_after(10):
        async with holding(script) as (inst, starts):
            async with anyio.create_task_group() as tg:
                await _queue_b_behind_a(inst, script, tg, got)
                assert script.commands == [b"X?\n", b"A?\n"]  # B? waits in line
                script.go.set()
            assert got == {"A": "a", "B": "b"}
            assert starts == [True]
            assert script.commands == [b"X?\n", b"A?\n", b"B?\n"]
            assert isinstance(inst.transport, SocketTransport)
            assert inst.transport.reconnects == 0
            assert await inst.query("X?") == "x"


async def test_a_started_query_times_out_and_the_next_one_reconnects() -> None:
    script = Script(b="never")
    with anyio.fail_after(10):
        async with holding(script) as (inst, starts):
            got = await _a_then_b(inst, script, timeout=0.3)
            assert got["A"] == "a"
            assert isinstance(got["B"], aiotmc.ReadTimeout)
            assert starts == [True]
            assert await inst.query("X?") == "x"
            assert isinstance(inst.transport, SocketTransport)
            assert inst.transport.reconnects == 1


async def test_a_started_query_cancelled_leaves_the_turn_and_no_crossed_answer() -> None:
    script = Script(b="never")
    got: dict[str, object] = {}
    with anyio.fail_after(10):
        async with holding(script) as (inst, starts):
            async with anyio.create_task_group() as tg:
                doomed = anyio.CancelScope()

                async def ask_b() -> None:
                    with doomed:
                        got["B"] = await inst.query("B?")

                async def ask_a() -> None:
                    got["A"] = await inst.query("A?")

                tg.start_soon(ask_a)
                await script.saw_a.wait()
                tg.start_soon(ask_b)
                await anyio.wait_all_tasks_blocked()
                tg.start_soon(inst.query, "X?")  # in line behind B
                await anyio.wait_all_tasks_blocked()
                script.go.set()
                await script.saw_b.wait()  # B?'s query went out: its caller is armed
                await anyio.wait_all_tasks_blocked()
                doomed.cancel()
            assert got == {"A": "a"}
            assert starts[0] is True  # B's start; the X? behind it found the link stale
            assert await inst.query("X?") == "x"
            assert isinstance(inst.transport, SocketTransport)
            assert inst.transport.reconnects == 1


async def test_a_hang_up_while_a_started_query_waits_is_a_lost_connection() -> None:
    script = Script(b="hang up")
    with anyio.fail_after(10):
        async with holding(script) as (inst, starts):
            got = await _a_then_b(inst, script)
            assert isinstance(got["B"], aiotmc.ConnectionLostError)
            assert starts == [True]
            assert await inst.query("X?") == "x"


async def test_closing_while_a_started_query_waits_wakes_it() -> None:
    script = Script(b="never")
    got: dict[str, object] = {}
    with anyio.fail_after(10):
        async with holding(script) as (inst, starts):
            async with anyio.create_task_group() as tg:
                await _queue_b_behind_a(inst, script, tg, got)
                script.go.set()
                await script.saw_b.wait()
                await anyio.wait_all_tasks_blocked()
                await inst.aclose()
            assert got["A"] == "a"
            assert isinstance(got["B"], anyio.ClosedResourceError)
            assert starts == [True]


class _ShortSends(socket.socket):
    """A socket whose next ``short`` sends take one byte only."""

    short = 0

    def send(self, data: Any, flags: int = 0) -> int:
        if self.short:
            self.short -= 1
            return super().send(memoryview(data)[:1], flags)
        return super().send(data, flags)


async def test_a_query_the_socket_takes_only_in_part_is_finished_by_its_caller() -> None:
    script = Script()
    got: dict[str, object] = {}
    with anyio.fail_after(10):
        async with holding(script) as (inst, starts):
            transport = inst.transport
            assert isinstance(transport, SocketTransport)
            old = transport._sock
            assert old is not None and transport._receiver is not None
            transport._receiver.close()
            transport._receiver = None
            sock = _ShortSends(old.family, old.type, old.proto, fileno=old.detach())
            sock.setblocking(False)
            transport._sock = sock
            async with anyio.create_task_group() as tg:
                await _queue_b_behind_a(inst, script, tg, got)
                sock.short = 1  # the releaser's send of B?
                script.go.set()
            assert got == {"A": "a", "B": "b"}
            assert starts == [False]  # B's caller was woken to send the rest itself
            assert script.commands[-1] == b"B?\n"
            assert transport.reconnects == 0


async def _b_gets_a_plain_turn() -> None:
    """B's query is not started for it: B is woken to do its own exchange, and gets its
    answer."""
    script = Script()
    with anyio.fail_after(10):
        async with holding(script) as (inst, starts):
            assert await _a_then_b(inst, script) == {"A": "a", "B": "b"}
            assert starts == [False]


async def test_a_receiver_that_cannot_arm_gives_a_plain_turn() -> None:
    """The portable receiver (a loop without ``add_reader``) cannot wake another task:
    the next caller is woken to do its own exchange."""
    with pytest.MonkeyPatch.context() as patch:
        for module in ("_core", "transport", "_early"):
            patch.setattr(f"aiotmc.transports.tcp.{module}.receiver_for", AnyioReceiver)
        await _b_gets_a_plain_turn()


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_without_trios_epoll_manager_the_turn_is_plain(anyio_backend: str) -> None:
    """Where trio's private I/O manager is not what aiotmc reads (another trio, another
    platform), nothing breaks: the hand-over wakes the next task as before."""
    trio_ = importlib.import_module("aiotmc._loops.trio_")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trio_, "epoll_manager", lambda: None)
        await _b_gets_a_plain_turn()


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_a_stale_wake_up_waits_for_the_answer(anyio_backend: str) -> None:
    """trio: the armed caller is woken while nothing is there (white box: disarmed and
    woken by hand): it waits for its answer like any receive."""
    import trio

    script = Script(b="later")
    got: dict[str, object] = {}
    with anyio.fail_after(10):
        async with holding(script) as (inst, starts):
            transport = inst.transport
            assert isinstance(transport, SocketTransport)
            async with anyio.create_task_group() as tg:
                await _queue_b_behind_a(inst, script, tg, got)
                (waiter,) = list(inst._lock._waiters)
                assert isinstance(waiter, SocketEarlyExchange)
                script.go.set()
                await script.saw_b.wait()
                await anyio.wait_all_tasks_blocked()
                assert waiter.started
                assert transport._receiver is not None
                transport._receiver.disarm()
                task = waiter.waiter
                assert isinstance(task, trio.lowlevel.Task)
                trio.lowlevel.reschedule(task)  # readable, it says; it is not
                await anyio.wait_all_tasks_blocked()
                assert "B" not in got
                script.go_b.set()
            assert got == {"A": "a", "B": "b"}
            assert starts == [True]
            assert transport.reconnects == 0
