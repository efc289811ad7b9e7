"""asyncio (and uvloop) specifics of the hot paths, in one place.

Imports only the standard library and anyio (never another aiotmc module).
"""

from __future__ import annotations

import asyncio
from asyncio import AbstractEventLoop
from collections import deque
from collections.abc import Callable

__all__ = ["give_turn", "wait_turn"]


async def wait_turn(
    line: deque[object], loop: AbstractEventLoop, pass_on: Callable[[], None]
) -> None:
    """Queue a future at the end of ``line`` and wait until :func:`give_turn` resolves it.

    A waiter cancelled while queued leaves the line; one cancelled after its turn was
    given (the wake-up was already scheduled) calls ``pass_on`` so the turn is not lost.
    """
    waiter = loop.create_future()
    line.append(waiter)
    try:
        await waiter
    except BaseException:
        if waiter.done() and not waiter.cancelled():
            pass_on()  # the turn arrived as we were cancelled: pass it on
        else:
            try:
                line.remove(waiter)
            except ValueError:  # already taken out (and skipped) by give_turn
                pass
        raise


def give_turn(waiter: object) -> bool:
    """Wake ``waiter`` (a future from :func:`wait_turn`); False if it was cancelled."""
    assert isinstance(waiter, asyncio.Future)
    if waiter.done():
        return False
    waiter.set_result(None)
    return True
