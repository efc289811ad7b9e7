"""The cancellation sweep: every operation cancelled at every await point in turn.

For ``n`` = 0, 1, 2 ... a sibling task cancels the operation after ``n`` scheduler steps
(``anyio.lowlevel.checkpoint``); the steps grow linearly, then geometrically, until the
operation completes twice in a row. After each run the next exchange must get its own
answer. Deterministic in the choices it makes, bounded in count and time, no sleeps.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from functools import partial

import anyio
from anyio.lowlevel import checkpoint

from .._exceptions import SessionBrokenError
from ..protocol.ieee4882 import block_header
from ..transports.base import MessageTransport
from ._session import MAX_SIZE, KitOptions, LinkOpener, Session, Stats, strip
from .device import binary_payload, check_payload

__all__ = ["cancel_after", "check_cancellation", "step_counts"]

Operation = Callable[[MessageTransport], Awaitable[None]]

_LINEAR = 40  # every step count up to here, then growing by a quarter
_SETTLED = 2  # completions in a row that end a sweep


def step_counts(limit: int) -> Iterator[int]:
    """``-1`` (cancelled before the call), 0 .. 40, then +25 % each, up to ``limit``."""
    yield -1
    n = 0
    while n <= limit:
        yield n
        n = n + 1 if n < _LINEAR else n + n // 4


async def cancel_after(steps: int, op: Callable[[], Awaitable[object]]) -> bool:
    """Run ``op``, cancelled after ``steps`` scheduler steps (``-1``: before it starts).

    Returns True if ``op`` completed first. Its exceptions propagate unwrapped.
    """
    if steps < 0:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await op()
        return not scope.cancelled_caught
    finished = False
    try:
        async with anyio.create_task_group() as tg:

            async def target() -> None:
                nonlocal finished
                await op()
                finished = True
                tg.cancel_scope.cancel()

            async def canceller() -> None:
                for _ in range(steps):
                    await checkpoint()
                tg.cancel_scope.cancel()

            tg.start_soon(target)
            tg.start_soon(canceller)
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    return finished


def _operations(s: Session, size: int) -> list[tuple[str, Operation]]:
    caps = s.link.info.capabilities
    upload = binary_payload(size, 0)

    async def exchange(link: MessageTransport) -> None:
        tag = s.tag()
        answer = await link.exchange(b"ECHO? %d\n" % tag, max_size=MAX_SIZE)
        assert strip(answer) == b"%d" % tag, f"asked ECHO? {tag}, got {answer[:40]!r}"

    async def send_receive(link: MessageTransport) -> None:
        tag = s.tag()
        await link.send_message([b"ECHO? ", b"%d" % tag, b"\n"])
        answer = await link.receive_message(max_size=MAX_SIZE)
        assert strip(answer) == b"%d" % tag, f"asked ECHO? {tag}, got {answer[:40]!r}"

    async def slow(link: MessageTransport) -> None:
        tag = s.tag()
        answer = await link.exchange(b"SLOW? 0.002,%d\n" % tag, max_size=MAX_SIZE)
        assert strip(answer) == b"%d" % tag, f"asked SLOW? {tag}, got {answer[:40]!r}"

    def block(command: bytes, *, into: bool = False, binary: bool = False) -> Operation:
        async def run(link: MessageTransport) -> None:
            tag = s.tag()
            await link.send_message([b"%s %d,%d\n" % (command, size, tag)])
            buffer = memoryview(bytearray(size)) if into else None
            view = await link.receive_block(buffer, max_size=size)
            check_payload(view, size, tag, binary=binary)

        return run

    async def send_upload(link: MessageTransport) -> None:
        await link.send_message([b"UPL ", block_header(size), memoryview(upload), b"\n"])

    async def read_stb(link: MessageTransport) -> None:
        await link.read_stb()

    async def clear(link: MessageTransport) -> None:
        await link.clear()

    async def trigger(link: MessageTransport) -> None:
        await link.trigger()

    ops: list[tuple[str, Operation]] = [
        ("exchange", exchange),
        ("send_message then receive_message", send_receive),
        ("exchange with a late answer", slow),
        (f"definite block of {size} bytes", block(b"BIN?", binary=True)),
        (f"indefinite block of {size} bytes", block(b"IBLK?")),
        (f"block of {size} bytes into a buffer", block(b"BLK?", into=True)),
        (f"upload of {size} bytes", send_upload),
    ]
    if caps.read_stb:
        ops.append(("read_stb", read_stb))
    if caps.device_clear:
        ops.append(("clear", clear))
    if caps.trigger:
        ops.append(("trigger", trigger))
    return ops


async def _run(op: Operation, s: Session) -> None:
    await op(s.link)  # the link of the moment: a broken session is replaced


async def check_cancellation(open_link: LinkOpener, *, options: KitOptions | None = None) -> Stats:
    """Every operation, cancelled at each await point in turn, leaves the next exchange
    with its own answer (or raises ``SessionBrokenError`` and a reopened link is in step).
    An operation that completes returns its own answer."""
    opts = options or KitOptions()
    async with Session(open_link, "check_cancellation", opts) as s:
        for name, op in _operations(s, opts.cancel_block_size):
            async with s.step(f"{name} cancelled at every await point"):
                cancelled = streak = 0
                for steps in step_counts(opts.max_steps):
                    where = f"{name} cancelled after {steps} scheduler steps"
                    try:
                        done = await cancel_after(steps, partial(_run, op, s))
                    except SessionBrokenError:
                        s.stats.reopened += 1
                        await s.open()
                        done = False
                    except AssertionError as exc:
                        raise AssertionError(f"{where}: {exc}") from exc
                    if done:
                        s.stats.completed += 1
                        streak += 1
                    else:
                        s.stats.cancelled += 1
                        cancelled += 1
                        streak = 0
                    await s.expect_in_step(where)
                    if streak >= _SETTLED:
                        break
                else:
                    s.stats.notes.append(f"{name}: still running after {opts.max_steps} steps")
                if not cancelled:  # it never waited (a send the socket took at once)
                    s.stats.notes.append(f"{name}: completed before any cancellation")
        assert s.stats.cancelled, "no operation was ever cancelled: the sweep tested nothing"
        return s.stats
