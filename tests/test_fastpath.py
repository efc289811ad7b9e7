"""The hot-path helpers agree with anyio's public calls on every backend."""

from __future__ import annotations

import asyncio
import importlib.metadata
from collections.abc import Mapping

import anyio
import pytest

from aiotmc._fastpath import cancel_maybe_pending, current_time, running_loop
from aiotmc._loops import asyncio_


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
    monkeypatch.setattr(asyncio_, "_task_states", {task: object()})  # no .cancel_scope
    monkeypatch.setattr(asyncio_, "_task_states_usable", True)
    assert cancel_maybe_pending(loop)
    assert not asyncio_._task_states_usable  # gives up on the private table for good
    assert cancel_maybe_pending(loop)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_anyio_private_task_table_has_the_shape_aiotmc_reads(anyio_backend: str) -> None:
    """``aiotmc._loops.asyncio_.cancel_maybe_pending`` reads anyio's private table of task
    states. If this test fails, anyio changed it: aiotmc still works (it falls back to
    anyio's public check on every call, which is slower), but the fast path is gone until
    ``aiotmc/_loops/asyncio_.py`` is updated to the new anyio."""
    import anyio._backends._asyncio as backend

    changed = (
        f"anyio {importlib.metadata.version('anyio')} changed the private state that"
        " aiotmc/_loops/asyncio_.py reads"
    )
    states = getattr(backend, "_task_states", None)
    assert isinstance(states, Mapping), f"{changed}: no mapping _task_states"
    task = asyncio.current_task()
    with anyio.CancelScope() as outer, anyio.CancelScope(shield=True) as inner:
        state = states.get(task)
        assert state is not None, f"{changed}: the running task has no entry"
        assert getattr(state, "cancel_scope", None) is inner, f"{changed}: .cancel_scope"
        for name in ("cancel_called", "shield", "_parent_scope"):
            assert hasattr(inner, name), f"{changed}: CancelScope.{name}"
        assert inner._parent_scope is outer, f"{changed}: CancelScope._parent_scope"
        assert (inner.shield, inner.cancel_called) == (True, False), changed
        await anyio.lowlevel.checkpoint()
    assert asyncio_.anyio_task_states() is states
