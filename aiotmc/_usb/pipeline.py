"""Several bulk transfers of one endpoint in flight at once, reported in order."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeAlias

import anyio

from .context import LibusbTransfer
from .transfer import AsyncTransfer, Completion

__all__ = ["Prepare", "RunTransfer", "run_pipelined"]

Prepare: TypeAlias = Callable[[LibusbTransfer], None]
"""Fills in one libusb transfer (endpoint, buffer or length) before it is submitted."""

RunTransfer: TypeAlias = Callable[
    [AsyncTransfer, Prepare, Callable[[], None]], Awaitable[Completion]
]
"""Prepares, submits and awaits one transfer (calling the third argument once submitted);
raises the port's typed error for a failed completion."""


async def run_pipelined(
    pool: Sequence[AsyncTransfer],
    prepares: Sequence[Prepare],
    sizes: Sequence[int],
    run: RunTransfer,
    on_done: Callable[[int, Completion], None],
) -> None:
    """Run one transfer per ``prepares`` entry, ``len(pool)`` in flight at once.

    Transfers are submitted in order. A completion shorter than its ``sizes`` entry
    ends the run: later transfers are cancelled (and drained) and never reported.
    An error or a cancellation cancels and drains every transfer in flight, then
    raises (the error of the earliest failing transfer).
    """
    count = len(prepares)
    scopes: dict[int, anyio.CancelScope] = {}
    errors: dict[int, BaseException] = {}
    stop = count  # index of the first transfer not to report
    free = list(pool)
    slot_free = anyio.Event()

    async def one(index: int, transfer: AsyncTransfer, started: anyio.Event) -> None:
        nonlocal stop, slot_free
        try:
            with scopes[index]:
                completion = await run(transfer, prepares[index], started.set)
                if index < stop:
                    on_done(index, completion)
                    if completion.actual_length < sizes[index]:
                        stop = index + 1
                        for later, scope in scopes.items():
                            if later > index:
                                scope.cancel()
        except Exception as exc:
            errors[index] = exc
            stop = min(stop, index)
            for later, scope in scopes.items():
                if later > index:
                    scope.cancel()
        finally:
            started.set()
            free.append(transfer)
            slot_free.set()

    async with anyio.create_task_group() as group:
        for index in range(count):
            while not free:
                slot_free = anyio.Event()
                await slot_free.wait()
            if index >= stop:
                break
            scopes[index] = anyio.CancelScope()
            started = anyio.Event()
            group.start_soon(one, index, free.pop(0), started)
            # wait until it is submitted (or done), so that submission order is kept
            await started.wait()
    if errors:
        raise errors[min(errors)]
