"""Socket helpers of the simulator servers: listening, closing with a reset, the shared
receive buffer, the open-file limit and a rate-limited log (no device logic)."""

from __future__ import annotations

import logging
import math
import socket
import struct
import threading
import time
from typing import Final

import anyio

__all__ = [
    "RECV_SIZE",
    "RateLimitedLog",
    "Scratch",
    "close",
    "listen",
    "raise_fd_limit",
    "scratch",
    "set_reset",
    "truncate",
]

RECV_SIZE: Final = 1 << 20  # one receive buffer per thread, shared by all connections
_LOG_BURST: Final = 10  # log lines per _LOG_PERIOD
_LOG_PERIOD: Final = 10.0
_LINGER_RESET: Final = struct.pack("ii", 1, 0)


class Scratch(threading.local):
    """The receive buffer: connections served by one thread take turns (no await inside)."""

    def __init__(self) -> None:
        self.buffer = bytearray(RECV_SIZE)
        self.view = memoryview(self.buffer)


scratch = Scratch()


class RateLimitedLog:
    """At most ``burst`` warnings per ``period`` seconds; says how many it held back."""

    def __init__(
        self, logger: logging.Logger, burst: int = _LOG_BURST, period: float = _LOG_PERIOD
    ) -> None:
        self._logger = logger
        self._burst = burst
        self._period = period
        self._window = -math.inf
        self._count = 0
        self._held = 0

    def warning(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._window >= self._period:
            self._window = now
            self._count = 0
        if self._count >= self._burst:
            self._held += 1
            return
        self._count += 1
        if self._held:
            message += " (%d similar messages suppressed)"
            args = (*args, self._held)
            self._held = 0
        self._logger.warning(message, *args)


def truncate(views: list[memoryview], limit: int) -> list[memoryview]:
    out: list[memoryview] = []
    for view in views:
        if limit <= 0:
            break
        out.append(view[:limit])
        limit -= len(out[-1])
    return out


def set_reset(sock: socket.socket) -> None:
    """Make ``close()`` send a TCP RST and free the socket's buffers at once."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    except OSError:
        pass


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's soft limit on open files towards ``wanted`` (up to the hard
    limit); returns the soft limit now in force (``-1`` where there is no such limit).

    A server with many clients needs one descriptor per connection; ``aiotmc sim`` calls
    this at start. Never lowers the limit.
    """
    try:
        import resource
    except ImportError:  # not POSIX
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or (0 <= wanted <= soft):
        return soft
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError):
            return soft
        return target
    return soft


def close(sock: socket.socket) -> None:
    try:
        anyio.notify_closing(sock)
    except Exception:  # no event loop, or nobody waiting
        pass
    sock.close()


async def listen(host: str, port: int) -> socket.socket:
    infos = await anyio.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE | socket.AI_NUMERICSERV
    )
    if not infos:
        raise OSError(f"cannot resolve {host!r}")
    family, type_, proto, _, address = infos[0]
    sock = socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise OSError(exc.errno, f"cannot listen on {where}: {exc.strerror}") from exc
    except BaseException:
        sock.close()
        raise
    return sock
