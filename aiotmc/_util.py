"""Small anyio helpers of the front end (group fan-out, acquisition).

Background work of a link (readers, pollers, clocks) does not belong in a task group
around the caller's block: it uses :mod:`aiotmc._background`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from anyio.abc import TaskGroup

__all__ = ["background_task_group"]


@asynccontextmanager
async def background_task_group() -> AsyncIterator[TaskGroup]:
    """A task group for the front end's concurrent helpers, around a caller's block.

    anyio wraps whatever leaves a task group in an ``ExceptionGroup``; users of
    ``async with aiotmc.open(...)`` should see their own exception (``ReadTimeout``,
    ``KeyError``...) unchanged, so a lone exception is unwrapped. Background tasks must
    not fail silently: when several fail, the group propagates as is.
    """
    try:
        async with anyio.create_task_group() as tg:
            yield tg
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            inner = group.exceptions[0]
            raise inner from inner.__cause__
        raise
