"""The request a waiter may leave in the exchange lock's line (one job; no imports, so
that every loop's module can name it)."""

from __future__ import annotations

__all__ = ["EarlyStart"]


class EarlyStart:
    """A waiter's operation that whoever hands it the turn may start on its behalf.

    Hand-over by I/O: a caller waiting for the exchange lock leaves its request in line
    as a subclass of this. The releaser, still owning the link, calls :meth:`start`: it
    sends the request and arms the link's receiver to wake the waiter (``waiter``: its
    asyncio future or trio task, set by :func:`aiotmc._loops.wait_turn_early`) when the
    answer arrives. The turn then costs the waiter one wake-up, answer in hand, instead
    of a wake-up to send and another one for the answer. When :meth:`start` cannot (the
    link is not in step, the send would block), the turn is given as usual and the
    waiter does its own exchange. A waiter cancelled after the start calls
    :meth:`abandon` (the link must be resynchronised) and passes the turn on.
    """

    __slots__ = ("started", "waiter")

    def __init__(self) -> None:
        self.waiter: object = None
        self.started = False  #: set by start() when it armed the wake-up

    def start(self) -> bool:
        """Start the operation; True if the answer (or its failure) will wake the waiter.
        Must not raise; runs in the loop's thread, inside the releaser's ``finally``."""
        return False

    def abandon(self) -> None:
        """The waiter was cancelled after :meth:`start`: disarm, leave the link stale."""
