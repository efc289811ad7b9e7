"""The hot-path helpers agree with anyio's public calls on every backend."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from aiotmc import _fastpath
from aiotmc._fastpath import cancel_maybe_pending, current_time, running_loop


async def test_current_time_is_anyio_clock(anyio_backend: str) -> None:
    before = anyio.current_time()
    now = current_time(running_loop())
    assert before <= now <= anyio.current_time()


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_always_answers_maybe(anyio_backend: str) -> None:
    assert running_loop() is None
    assert cancel_maybe_pending(None)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_asyncio_follows_the_cancel_scopes(anyio_backend: str) -> None:
    loop = running_loop()
    assert loop is not None
    assert not cancel_maybe_pending(loop)
    with anyio.CancelScope() as outer:
        with anyio.CancelScope():
            assert not cancel_maybe_pending(loop)
            outer.cancel()
            assert cancel_maybe_pending(loop)  # cancelled in an enclosing scope
            with anyio.CancelScope(shield=True):
                assert not cancel_maybe_pending(loop)  # the shield hides it
                await anyio.lowlevel.checkpoint()  # and holds
            await anyio.lowlevel.checkpoint()
    assert outer.cancelled_caught
    assert not cancel_maybe_pending(loop)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_asyncio_task_unknown_to_anyio(anyio_backend: str) -> None:
    async def plain_task() -> tuple[bool, bool]:
        loop = asyncio.get_running_loop()
        before = cancel_maybe_pending(loop)  # no anyio scope at all: nothing pending
        with anyio.CancelScope() as scope:  # anyio starts tracking the task here
            scope.cancel()
            inside = cancel_maybe_pending(loop)
            await anyio.lowlevel.checkpoint()
        assert scope.cancelled_caught
        return before, inside

    assert await asyncio.get_running_loop().create_task(plain_task()) == (False, True)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_asyncio_unusable_anyio_table_means_maybe(
    anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = running_loop()
    task = asyncio.current_task()
    monkeypatch.setattr(_fastpath, "_task_states", {task: object()})  # no .cancel_scope
    monkeypatch.setattr(_fastpath, "_task_states_usable", True)
    assert cancel_maybe_pending(loop)
    assert not _fastpath._task_states_usable  # gives up on the private table for good
    assert cancel_maybe_pending(loop)
