"""Per-call helpers for the query hot path, specialised for the running event loop.

A loopback round trip costs ~30 us, and on CPython 3.11 every ``get_running_loop()`` (so
every ``asyncio.current_task()``, ``anyio.current_time()`` and anyio backend lookup) makes
a ``getpid()`` system call. The exchange path therefore looks the loop up once per call
(:func:`running_loop`) and hands it to these helpers:

* :func:`current_time` reads the loop's clock (the one anyio deadlines use);
* :func:`cancel_maybe_pending` tells, without awaiting, whether the calling task may have
  a cancellation pending. On asyncio it walks the task's anyio cancel scopes exactly as
  anyio's own ``checkpoint_if_cancelled`` does (anyio keeps them in a private table; if
  that table is not where it used to be, the answer is always "maybe" and the public
  check runs). It never answers "no" when anyio would cancel;
* :func:`checkpoint_if_cancelled` is the (public) check itself, trio's own on trio;
* :func:`schedule_point_due` says when an operation must yield to the event loop even
  though it did not wait: on TCP an exchange whose answer is already there (or a write
  the socket takes at once) completes without ever letting another task run, so a tight
  loop of them would starve every other task. Every :data:`SCHEDULE_EVERY`-th operation
  therefore ends with ``anyio.lowlevel.cancel_shielded_checkpoint()`` (as trio's own
  socket calls do after an operation that did not block).
"""

from __future__ import annotations

import sys
from asyncio import AbstractEventLoop, _get_running_loop, current_task
from collections.abc import Mapping
from types import ModuleType
from typing import Any, Final

import anyio
import anyio.lowlevel

__all__ = [
    "cancel_maybe_pending",
    "checkpoint_if_cancelled",
    "current_time",
    "running_loop",
    "running_trio",
    "schedule_point_due",
]

SCHEDULE_EVERY: Final = 16  #: operations between forced schedule points, at the most

running_loop = _get_running_loop  #: the running asyncio loop, or None (trio, no loop)

_since_schedule_point = 0  # operations counted since the last forced schedule point
_task_states: Mapping[Any, Any] | None = None  # anyio's task -> TaskState table, once found
_task_states_usable = True  # False once the table turned out not to have the expected shape


def schedule_point_due() -> bool:
    """Count one operation; True for every :data:`SCHEDULE_EVERY`-th (the caller, its
    work done, then awaits ``anyio.lowlevel.cancel_shielded_checkpoint()``). Counted per
    process: a loop over many instruments yields too."""
    global _since_schedule_point
    _since_schedule_point += 1
    if _since_schedule_point < SCHEDULE_EVERY:
        return False
    _since_schedule_point = 0
    return True


def running_trio() -> ModuleType | None:
    """The ``trio`` module when called from inside a trio run, else ``None``."""
    trio = sys.modules.get("trio")
    if trio is None or _get_running_loop() is not None:
        return None
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return None
    return trio


def current_time(loop: AbstractEventLoop | None) -> float:
    """The running loop's clock; ``loop`` is :func:`running_loop`'s answer (None: trio)."""
    if loop is not None:
        return loop.time()
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            now: float = trio.current_time()
        except RuntimeError:  # not inside a trio run
            pass
        else:
            return now
    return anyio.current_time()


def cancel_maybe_pending(loop: AbstractEventLoop | None) -> bool:
    """False only if the current task certainly has no cancellation pending.

    ``loop`` is the running asyncio loop (from :func:`running_loop`); ``None`` (trio)
    always answers True, since trio's own check is already cheap.
    """
    if loop is None:
        return True
    states = _task_states
    if states is None:
        states = _find_task_states()
        if states is None:
            return True
    task = current_task(loop)  # with the loop given: no getpid()
    state = states.get(task)
    if state is None:
        return False  # a task anyio does not manage has no anyio cancel scope
    try:
        scope = state.cancel_scope
        while scope is not None:
            if scope.cancel_called:
                return True
            if scope.shield:
                return False
            scope = scope._parent_scope
    except AttributeError:  # anyio changed shape: use the public check from now on
        _forget_task_states()
        return True
    return False


async def checkpoint_if_cancelled() -> None:
    """Raise if the caller's cancel scope is cancelled; never lets another task run."""
    trio = sys.modules.get("trio")
    if trio is not None and _get_running_loop() is None:
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
        except RuntimeError:  # not inside a trio run
            pass
        else:
            return
    await anyio.lowlevel.checkpoint_if_cancelled()


def _find_task_states() -> Mapping[Any, Any] | None:
    global _task_states
    if not _task_states_usable:
        return None
    module = sys.modules.get("anyio._backends._asyncio")
    states = getattr(module, "_task_states", None)
    if not isinstance(states, Mapping):
        return None
    _task_states = states
    return states


def _forget_task_states() -> None:
    global _task_states, _task_states_usable
    _task_states = None
    _task_states_usable = False
