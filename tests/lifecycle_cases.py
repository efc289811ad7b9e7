"""The close matrix (issue 14): open and close an instrument in different tasks and scopes.

Shared by ``tests/test_lifecycle.py`` (simulator, TCP, TCP with SRQ polling, the in-process
USB fake) and the umockdev client ``tests/usb/lifecycle_client.py`` (real libusb). Each
mode opens with ``cm.__aenter__()`` and closes with ``cm.__aexit__(None, None, None)``, the
way a notebook, a web handler or a reconnect wrapper does, and checks afterwards that
the instrument is closed, no background task of aiotmc is left running, and the calling
task's cancel scopes are intact (a checkpoint passes, a new scope works). A cancellation
that escapes a close, or a RuntimeError (anyio: "Attempted to exit cancel scope in a
different task"; trio: "Cancel scope stack corrupted") is counted in :class:`Tally`.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
from anyio.lowlevel import checkpoint

import aiotmc
from aiotmc import _background

T = TypeVar("T")

Opener = Callable[[], AbstractAsyncContextManager[aiotmc.Instrument]]
Stall = Callable[[aiotmc.Instrument], Awaitable[None]]
"""Make the instrument's next answer never come (for ``mid_exchange``)."""

MODES = ("same_task", "other_task", "fail_after", "cancelled_scope", "mid_exchange", "notebook")

#: How an exchange cut short by a close from another task may end.
CUT_SHORT = (anyio.ClosedResourceError, anyio.BrokenResourceError, aiotmc.AiotmcError)


@dataclass
class Tally:
    """Outcomes over the cells run so far."""

    cells: int = 0
    escaped_cancellations: int = 0
    runtime_errors: int = 0
    cut_short: dict[str, int] = field(default_factory=dict)  # how mid-exchange queries ended

    def as_dict(self) -> dict[str, Any]:
        return {
            "cells": self.cells,
            "escaped_cancellations": self.escaped_cancellations,
            "runtime_errors": self.runtime_errors,
            "cut_short": self.cut_short,
        }


async def in_new_task(fn: Callable[[], Awaitable[T]]) -> T:
    """Run ``fn`` in a task of its own (its own task group, then gone); return its result."""
    results: list[T] = []

    async def run() -> None:
        results.append(await fn())

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
    return results[0]


async def _open(opener: Opener) -> tuple[AbstractAsyncContextManager[aiotmc.Instrument], Any]:
    cm = opener()
    inst = await cm.__aenter__()
    return cm, inst


async def _close(cm: AbstractAsyncContextManager[aiotmc.Instrument]) -> None:
    await cm.__aexit__(None, None, None)


async def _use(inst: aiotmc.Instrument) -> None:
    answer = await inst.query("*IDN?")
    assert answer.startswith("aiotmc,"), answer


async def _caller_intact() -> None:
    """The calling task is not cancelled and its cancel scopes work."""
    await checkpoint()
    with anyio.fail_after(5):
        await checkpoint()
    with anyio.move_on_after(0.001) as scope:
        await anyio.sleep(1)
    assert scope.cancelled_caught
    if "asyncio" in sys.modules:
        import asyncio

        try:
            task = asyncio.current_task()
        except RuntimeError:
            task = None
        if task is not None:
            assert task.cancelling() == 0, f"{task.cancelling()} cancellation(s) pending"


async def _mode(
    mode: str,
    opener: Opener,
    stall: Stall,
    wait_pending: Callable[[], Awaitable[None]],
    tally: Tally,
) -> aiotmc.Instrument:
    if mode == "same_task":
        cm, inst = await _open(opener)
        await _use(inst)
        await _close(cm)
    elif mode == "other_task":
        cm, inst = await in_new_task(lambda: _open(opener))
        await _use(inst)
        await in_new_task(lambda: _close(cm))
    elif mode == "fail_after":
        cm, inst = await _open(opener)
        await _use(inst)
        with anyio.fail_after(10):
            await _close(cm)
    elif mode == "cancelled_scope":
        cm, inst = await _open(opener)
        await _use(inst)
        with anyio.CancelScope() as scope:
            scope.cancel()
            await _close(cm)
    elif mode == "mid_exchange":
        cm, inst = await _open(opener)
        await _use(inst)
        await stall(inst)
        ended: list[str] = []

        async def exchange() -> None:
            try:
                await inst.query("*IDN?")
            except CUT_SHORT as exc:
                ended.append(type(exc).__name__)
            else:
                ended.append("answered")

        async with anyio.create_task_group() as tg:
            tg.start_soon(exchange)
            await wait_pending()
            with anyio.fail_after(10):
                await _close(cm)
        assert ended, "the exchange did not end"
        tally.cut_short[ended[0]] = tally.cut_short.get(ended[0], 0) + 1
    elif mode == "notebook":  # open in one task, use in a second, close in a third
        cm, inst = await in_new_task(lambda: _open(opener))
        await in_new_task(lambda: _use(inst))
        await in_new_task(lambda: _close(cm))
    else:  # pragma: no cover
        raise ValueError(mode)
    return inst


async def run_cell(
    mode: str,
    opener: Opener,
    tally: Tally,
    *,
    stall: Stall,
    wait_pending: Callable[[], Awaitable[None]] = anyio.wait_all_tasks_blocked,
) -> None:
    """Run one cell of the matrix; count escaped cancellations and RuntimeErrors in
    ``tally``, and raise AssertionError if the close left anything behind."""
    tally.cells += 1
    before = _background.running()
    inst: aiotmc.Instrument | None = None
    try:
        inst = await _mode(mode, opener, stall, wait_pending, tally)
        await _caller_intact()
    except anyio.get_cancelled_exc_class():
        tally.escaped_cancellations += 1
        return
    except RuntimeError:
        tally.runtime_errors += 1
        return
    assert inst.closed, f"{mode}: the instrument is not closed"
    left = _background.running() - before
    assert left == 0, f"{mode}: {left} background task(s) still running after close"
