"""Event-loop specifics, one module per loop library, and the selector over them.

The hot paths (the TCP receivers, the exchange lock, the per-call checks of
``Instrument``) and the libusb drivers need what anyio does not offer cheaply enough or
at all: a wait without a cancel scope, a hand-over between tasks without an event
object, a thread-safe "run soon" for foreign threads. Everything that depends on which
loop runs lives in :mod:`.asyncio_` (asyncio, uvloop) or :mod:`.trio_`; this module picks
one. The package is the lowest layer: it imports the standard library, anyio and the
loop library, nothing else of aiotmc. :mod:`.trio_` is imported only inside a trio run.
"""

from __future__ import annotations

from asyncio import Future, _get_running_loop
from collections import deque
from collections.abc import Callable
from types import ModuleType

from . import asyncio_

__all__ = ["give_turn", "wait_turn"]

_trio_: ModuleType | None = None  # .trio_, once a trio run needed it


def _trio_module() -> ModuleType:
    global _trio_
    if _trio_ is None:
        from . import trio_

        _trio_ = trio_
    return _trio_


async def wait_turn(line: deque[object], pass_on: Callable[[], None]) -> None:
    """Wait at the end of ``line`` until :func:`give_turn` picks this task.

    ``pass_on`` is called if the turn arrives as the waiter is cancelled (it must give
    the turn to the next one). Cancelling a waiter still in line takes it out.
    """
    loop = _get_running_loop()
    if loop is not None:
        await asyncio_.wait_turn(line, loop, pass_on)
    else:
        await _trio_module().wait_turn(line)


def give_turn(line: deque[object]) -> bool:
    """Wake the oldest waiter of ``line`` still waiting; False when there is none."""
    while line:
        waiter = line.popleft()
        if isinstance(waiter, Future):
            if asyncio_.give_turn(waiter):
                return True
        elif _trio_module().give_turn(waiter):
            return True
    return False
