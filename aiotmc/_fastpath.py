"""Per-call helpers for the query hot path.

The loop-specific ones live in :mod:`aiotmc._loops` and are re-exported here for the
``Instrument`` (see there): :func:`running_loop`, :func:`current_time`,
:func:`cancel_maybe_pending`, :func:`checkpoint_if_cancelled`, :func:`running_trio`.

:func:`schedule_point_due` says when an operation must yield to the event loop even
though it did not wait: on TCP an exchange whose answer is already there (or a write the
socket takes at once) completes without ever letting another task run, so a tight loop of
them would starve every other task. Every :data:`SCHEDULE_EVERY`-th operation therefore
ends with ``anyio.lowlevel.cancel_shielded_checkpoint()`` (as trio's own socket calls do
after an operation that did not block).
"""

from __future__ import annotations

from typing import Final

from ._loops import (
    cancel_maybe_pending,
    checkpoint_if_cancelled,
    current_time,
    running_loop,
    running_trio,
)

__all__ = [
    "SCHEDULE_EVERY",
    "cancel_maybe_pending",
    "checkpoint_if_cancelled",
    "current_time",
    "running_loop",
    "running_trio",
    "schedule_point_due",
]

SCHEDULE_EVERY: Final = 16  #: operations between forced schedule points, at the most

_since_schedule_point = 0  # operations counted since the last forced schedule point


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
