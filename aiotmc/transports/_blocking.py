"""Blocking socket waits for the caller-thread fast path (``aiotmc.sync``).

The socket stays non-blocking (the event loop shares it); a thread that owns the link for
one operation waits for it with ``poll`` (no ``FD_SETSIZE`` limit), bounded by a
``time.monotonic()`` deadline. Ctrl-C interrupts the wait (``KeyboardInterrupt``), and
the transport then treats the operation as cancelled.
"""

from __future__ import annotations

import math
import select
import socket
import time
from collections.abc import Sequence

from .._buffers import byte_views, drop_sent
from .base import BytesLike

__all__ = ["sendall_blocking", "wait_blocking"]


def wait_blocking(sock: socket.socket, events: int, deadline: float) -> bool:
    """Wait until ``sock`` is ready for ``events`` (``select.POLLIN``/``POLLOUT``); False
    when ``deadline`` passed first. Errors and hang-ups count as ready (the next call says
    what happened)."""
    poller = select.poll()
    poller.register(sock.fileno(), events)
    while True:
        if deadline == math.inf:
            timeout_ms = None
        else:
            left = deadline - time.monotonic()
            if left <= 0:
                return bool(poller.poll(0))
            timeout_ms = max(1, math.ceil(left * 1000))
        if poller.poll(timeout_ms):
            return True


def sendall_blocking(sock: socket.socket, parts: Sequence[BytesLike], deadline: float) -> bool:
    """Send ``parts`` whole (``sendmsg``, no concatenation); False when ``deadline``
    passed first (part may have been sent). ``OSError`` propagates."""
    if len(parts) == 1:  # the common case: one short command, taken whole at once
        try:
            sent = sock.send(parts[0])
        except BlockingIOError:
            sent = 0
        if sent == len(parts[0]):
            return True
        parts = [memoryview(parts[0]).cast("B")[sent:]]
    views = byte_views(parts)
    while views:
        try:
            sent = sock.sendmsg(views)
        except BlockingIOError:
            if not wait_blocking(sock, select.POLLOUT, deadline):
                return False
            continue
        drop_sent(views, sent)
    return True
