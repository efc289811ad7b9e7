"""Per-call helpers for the query hot path, specialised for the running event loop.

``anyio.current_time()`` and ``anyio.lowlevel.checkpoint_if_cancelled()`` look up the
running backend on every call (about 1 us each on asyncio); a loopback round trip is
~30 us, so the exchange path asks the loop directly instead.
"""

from __future__ import annotations

import sys
from asyncio import _get_running_loop
from types import ModuleType

import anyio
import anyio.lowlevel

__all__ = ["checkpoint_if_cancelled", "current_time", "running_trio"]


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


def current_time() -> float:
    """The running loop's clock (the one anyio deadlines use)."""
    loop = _get_running_loop()
    if loop is not None:
        return loop.time()
    return anyio.current_time()


async def checkpoint_if_cancelled() -> None:
    """Raise if the caller's cancel scope is cancelled; never lets another task run."""
    trio = running_trio()
    if trio is not None:
        await trio.lowlevel.checkpoint_if_cancelled()
    else:
        await anyio.lowlevel.checkpoint_if_cancelled()
