"""Checks of time and concurrency: deadlines, busy detection, closing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
from anyio.lowlevel import checkpoint

from .._exceptions import AiotmcTimeout, ReadTimeout
from ..transports.base import MessageTransport
from ._session import MAX_SIZE, KitOptions, LinkOpener, Session, Stats, strip

__all__ = ["check_busy", "check_close", "check_deadlines"]

NEVER = 100_000  # seconds: a SLOW? answer that no check waits for
_WAIT = 0.05  # seconds: the deadlines the checks set


async def check_deadlines(open_link: LinkOpener, *, options: KitOptions | None = None) -> Stats:
    """A deadline that passes while an answer is awaited raises ``ReadTimeout`` (a
    ``TimeoutError``) on time, and the late answer never reaches a later exchange."""
    opts = options or KitOptions()
    async with Session(open_link, "check_deadlines", opts) as s:

        async def exchange(deadline: float) -> None:
            await s.link.exchange(
                b"SLOW? %d,%d\n" % (NEVER, s.tag()), max_size=MAX_SIZE, deadline=deadline
            )

        async def receive(deadline: float) -> None:
            await s.link.send_message([b"SLOW? %d,%d\n" % (NEVER, s.tag())], deadline=deadline)
            await s.link.receive_message(max_size=MAX_SIZE, deadline=deadline)

        async def block(deadline: float) -> None:
            await s.link.send_message([b"SLOW? %d,%d\n" % (NEVER, s.tag())], deadline=deadline)
            await s.link.receive_block(max_size=MAX_SIZE, deadline=deadline)

        async def nothing_asked(deadline: float) -> None:
            await s.link.receive_message(max_size=MAX_SIZE, deadline=deadline)

        cases: list[tuple[str, Callable[[float], Awaitable[None]], float]] = [
            ("exchange", exchange, _WAIT),
            ("send_message then receive_message", receive, _WAIT),
            ("send_message then receive_block", block, _WAIT),
            ("receive_message with nothing asked, deadline passed", nothing_asked, -1.0),
        ]
        for name, op, wait in cases:
            async with s.step(f"{name}: the deadline passes"):
                started = anyio.current_time()
                try:
                    await op(started + wait)
                except ReadTimeout as exc:
                    elapsed = anyio.current_time() - started
                    assert isinstance(exc, TimeoutError) and isinstance(exc, AiotmcTimeout)
                    assert elapsed >= wait - 0.01, f"ReadTimeout after {elapsed:.3f} s < {wait}"
                    assert elapsed <= max(wait, 0) + opts.timeout_margin, (
                        f"ReadTimeout only after {elapsed:.3f} s (deadline {wait} s)"
                    )
                else:
                    raise AssertionError("no ReadTimeout")
                await s.expect_in_step(f"a {name} that timed out")
        async with s.step("an answer that comes before the deadline"):
            tag, started = s.tag(), anyio.current_time()
            answer = await s.link.exchange(
                b"SLOW? %.3f,%d\n" % (_WAIT, tag), max_size=MAX_SIZE, deadline=s.deadline()
            )
            assert strip(answer) == b"%d" % tag, answer[:40]
            elapsed = anyio.current_time() - started
            assert elapsed >= _WAIT - 0.01, f"the SLOW? answer came after {elapsed:.3f} s"
        return s.stats


def _operations(
    s: Session, link: MessageTransport
) -> list[tuple[str, Callable[[], Awaitable[object]]]]:
    """Every message operation, each bounded by a deadline (they should fail at once)."""
    tag, deadline = s.tag(), s.deadline()
    return [
        ("send_message", lambda: link.send_message([b"ECHO? %d\n" % tag], deadline=deadline)),
        ("receive_message", lambda: link.receive_message(max_size=MAX_SIZE, deadline=deadline)),
        (
            "exchange",
            lambda: link.exchange(b"ECHO? %d\n" % tag, max_size=MAX_SIZE, deadline=deadline),
        ),
        ("receive_block", lambda: link.receive_block(max_size=MAX_SIZE, deadline=deadline)),
    ]


async def check_busy(open_link: LinkOpener, *, options: KitOptions | None = None) -> Stats:
    """While one task waits in an operation, every operation of another task raises
    ``anyio.BusyResourceError``, and the waiting one is not disturbed."""
    opts = options or KitOptions()
    async with Session(open_link, "check_busy", opts) as s:
        for holder in ("exchange", "receive_block"):
            async with s.step(f"operations while another task waits in {holder}"):
                link = s.link
                entered = anyio.Event()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_hold, s, link, holder, entered)
                    await entered.wait()
                    for _ in range(5):
                        await checkpoint()
                    for name, op in _operations(s, link):
                        try:
                            await op()
                        except anyio.BusyResourceError:
                            pass
                        else:
                            raise AssertionError(f"{name}: no BusyResourceError")
                    tg.cancel_scope.cancel()
                await s.expect_in_step(f"the busy checks around {holder}")
        return s.stats


async def _hold(s: Session, link: MessageTransport, kind: str, entered: anyio.Event) -> None:
    """Wait in ``kind`` for an answer that never comes (until cancelled)."""
    command = b"SLOW? %d,%d\n" % (NEVER, s.tag())
    if kind == "exchange":
        entered.set()
        await link.exchange(command, max_size=MAX_SIZE, deadline=s.deadline())
    else:
        await link.send_message([command], deadline=s.deadline())
        entered.set()
        await link.receive_block(max_size=MAX_SIZE, deadline=s.deadline())
    raise AssertionError(f"{kind} returned an answer that never comes")


async def check_close(open_link: LinkOpener, *, options: KitOptions | None = None) -> Stats:
    """``aclose`` is idempotent, completes inside a cancelled scope (and when cancelled
    part-way), releases the link so it can be opened again, and later operations raise
    ``anyio.ClosedResourceError``."""
    opts = options or KitOptions()
    s = Session(open_link, "check_close", opts)

    async def assert_closed(link: MessageTransport) -> None:
        for name, op in _operations(s, link):
            try:
                await op()
            except anyio.ClosedResourceError:
                pass
            else:
                raise AssertionError(f"{name} after aclose: no ClosedResourceError")

    try:
        async with s.step("aclose twice, then operations"):
            link = await s.open()
            await s.expect_in_step("opening")
            await link.aclose()
            await link.aclose()
            await assert_closed(link)
            await s.close()  # the opener's own exit after an explicit aclose
        async with s.step("aclose inside a cancelled scope"):
            link = await s.open()
            await s.expect_in_step("opening")
            with anyio.CancelScope() as scope:
                scope.cancel()
                await link.aclose()
            await assert_closed(link)
            await s.close()
        for steps in range(12):
            async with s.step(f"aclose cancelled after {steps} scheduler steps"):
                link = await s.open()
                async with anyio.create_task_group() as tg:

                    async def canceller(n: int = steps) -> None:
                        for _ in range(n):
                            await checkpoint()
                        tg.cancel_scope.cancel()

                    tg.start_soon(canceller)
                    await link.aclose()
                await assert_closed(link)
                await s.close()
        async with s.step("leaving open_link() inside a cancelled scope"):
            with anyio.CancelScope() as scope:
                async with s.open_link() as link:
                    await link.send_message([b"ECHO? %d\n" % s.tag()], deadline=s.deadline())
                    scope.cancel()
            await assert_closed(link)
        async with s.step("opened again after all that"):
            await s.open()
            await s.expect_in_step("closing links in every way")
    finally:
        await s.close()  # no shield: it would wrap the link's own task groups
    return s.stats
