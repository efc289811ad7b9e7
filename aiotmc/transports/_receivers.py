"""``recv_into`` on a non-blocking socket with a deadline, as cheaply as each loop allows.

A loopback ``*IDN?`` round trip is ~25 us with a blocking socket; everything an event loop
does per wait lands on top of that, so the wait is where a fast client is won or lost.
Every receiver first tries ``recv_into`` (data already there: no wait at all); only when
the socket is empty does it wait, and then:

* ``AsyncioReceiver`` (asyncio, uvloop): the fd stays registered with the loop while it
  is waited on, and the reader callback itself does the ``recv_into`` into the waiting
  caller's buffer, as asyncio's own ``BufferedProtocol`` transports do. A level-triggered
  event that is already stale when it runs (the bytes were taken by an earlier call) then
  costs one failed ``recv`` instead of a task wake-up. Deadlines use one lazily re-armed
  loop timer per socket instead of a timer per wait.
* ``TrioReceiver`` (trio): ``trio.lowlevel.wait_readable`` with no cancel scope per wait;
  deadlines are kept by one lazily re-armed watchdog task per socket.
* :class:`AnyioReceiver`: the portable fallback (e.g. Windows' proactor loop).

The first two are loop-specific and live in :mod:`aiotmc._loops` (``asyncio_``,
``trio_``); this module has what the transport needs from any receiver
(:class:`Receiver`), the portable one and the choice.

A deadline that passes raises :class:`TimeoutError`; ``recv_into`` errors propagate as
:class:`OSError`. Cancellation propagates as usual; bytes received for a wait that was
cancelled after they arrived are lost, so callers must treat a cancelled receive as
leaving the connection out of step (the TCP transport then reconnects).
"""

from __future__ import annotations

import math
import socket
from typing import Protocol

import anyio

from .._loops import loop_receiver

__all__ = ["AnyioReceiver", "Receiver", "receiver_for"]


class Receiver(Protocol):
    """What the TCP transport needs from a receiver."""

    async def recv_into(self, view: memoryview, deadline: float, try_first: bool = True) -> int:
        """Receive into ``view``: bytes received (0 at EOF); TimeoutError at ``deadline``.

        ``try_first=False`` skips the first ``recv`` attempt when the caller knows the
        socket was just found empty or the answer cannot be there yet.
        """
        ...

    def close(self) -> None:
        """Release the loop's resources before the socket closes (wakes a waiter)."""
        ...

    def arm(self, waiter: object, view: memoryview, deadline: float) -> bool:
        """Hand-over by I/O (:class:`aiotmc._loops.EarlyStart`): make ``waiter`` (a
        caller asleep in the exchange lock's line) the one this receiver's next wait
        wakes; False when this receiver cannot."""
        ...

    def received(self, woken: object, view: memoryview) -> int:
        """In the caller woken by an armed wait (``woken``: what the lock's wait
        returned): the bytes it brought into ``view``, as :meth:`recv_into` counts or
        raises; -1 when none are there yet (then wait with :meth:`recv_into`)."""
        ...

    def disarm(self) -> None:
        """The armed caller was cancelled: end its wait (the answer stays unread)."""
        ...


class AnyioReceiver:
    """Portable: ``anyio.wait_readable`` in a cancel scope per wait."""

    __slots__ = ("_sock",)

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    async def recv_into(self, view: memoryview, deadline: float, try_first: bool = True) -> int:
        """See :class:`Receiver`."""
        sock = self._sock
        while True:
            if try_first:
                try:
                    return sock.recv_into(view)
                except BlockingIOError:
                    pass
            try_first = True
            if deadline == math.inf:
                await anyio.wait_readable(sock)
                continue
            with anyio.CancelScope(deadline=deadline) as scope:
                await anyio.wait_readable(sock)
            if scope.cancelled_caught:
                raise TimeoutError

    def close(self) -> None:
        """Wake a waiter with ClosedResourceError."""
        try:
            anyio.notify_closing(self._sock)
        except Exception:
            pass

    def arm(self, waiter: object, view: memoryview, deadline: float) -> bool:
        """Not here: the portable wait cannot wake another task."""
        return False

    def received(self, woken: object, view: memoryview) -> int:
        """Never armed: nothing received (-1)."""
        return -1

    def disarm(self) -> None:
        """Never armed: nothing to end."""


def receiver_for(sock: socket.socket) -> Receiver:
    """The cheapest receiver for the event loop running now."""
    return loop_receiver(sock) or AnyioReceiver(sock)
