"""Fewer wake-ups while a long payload arrives: the socket's ``SO_RCVLOWAT`` (Linux).

An event-loop client is woken for every batch of segments that lands in an empty socket,
and each wake-up costs the loop far more than the ``recv`` it leads to. While the rest of
a payload of known length is awaited, the reader raises the socket's wake-up threshold to
what is still to come (at most :data:`BULK_MAX`): the loop then wakes once per megabyte
instead of once per segment batch. Used by the TCP transport (block payloads), the
VXI-11 RPC channel (the rest of a long reply record) and the HiSLIP channel (the rest of
a long message payload). Linux never withholds the wake-up past
the point where the receive window would close, nor at end of stream or on an error, and
a ``recv`` still returns whatever is there, so a slow or stalled sender is seen exactly as
before (as a deadline). Measured in docs/performance.md ("Session 10").

The threshold only ever covers bytes the payload's length guarantees, and goes back to 1
before any other wait (the TCP transport: as soon as the payload is in, fails or is
cancelled, since its blocking fast path polls the same socket): a later short answer
must wake the reader at once.
"""

from __future__ import annotations

import socket
import sys
from typing import Final

__all__ = ["BULK_MAX", "BULK_MIN", "wake_threshold"]

#: Payloads with less than this still to come are read with the default threshold (1).
BULK_MIN: Final = 256 * 1024
#: The highest threshold set: larger gains nothing and delays progress reports.
BULK_MAX: Final = 1 << 20

_SUPPORTED: Final = sys.platform == "linux" and hasattr(socket, "SO_RCVLOWAT")


def wake_threshold(sock: socket.socket, remaining: int, current: int) -> int:
    """Set ``sock``'s wake-up threshold for a wait with ``remaining`` payload bytes to
    come (0: the payload is in) and return the threshold in force; ``current`` is the
    one in force before (no system call when it stays)."""
    want = min(remaining, BULK_MAX) if _SUPPORTED and remaining >= BULK_MIN else 1
    if want == current:
        return current
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, want)
    except OSError:  # closed meanwhile: the connection is being dropped anyway
        return current
    return want
