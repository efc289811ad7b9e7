"""trio specifics of the hot paths, in one place.

Imports only the standard library, anyio and trio (never another aiotmc module); imported
only once a trio run is known to be active.
"""

from __future__ import annotations

from collections import deque

import trio

__all__ = ["give_turn", "wait_turn"]


async def wait_turn(line: deque[object]) -> None:
    """Queue the current task at the end of ``line`` and sleep until :func:`give_turn`.

    A task cancelled while queued leaves the line; once its turn is given it is no longer
    cancellable here (trio delivers the cancellation at its next checkpoint), so the turn
    is never lost.
    """
    task = trio.lowlevel.current_task()
    line.append(task)

    def abort(_: object) -> trio.lowlevel.Abort:
        line.remove(task)  # still queued: a task given its turn is not asleep any more
        return trio.lowlevel.Abort.SUCCEEDED

    await trio.lowlevel.wait_task_rescheduled(abort)


def give_turn(waiter: object) -> bool:
    """Wake ``waiter`` (a task asleep in :func:`wait_turn`); always True."""
    assert isinstance(waiter, trio.lowlevel.Task)
    trio.lowlevel.reschedule(waiter)
    return True
