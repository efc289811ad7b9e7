"""Replacing a raw-socket connection: taking the link, reconnecting when stale (one job).

:class:`Reconnecting` adds to :class:`._core.SocketCore` :meth:`_begin`, which an
operation starts with when the link is not plainly free and in step: it claims the link
and, when the connection is stale (an operation cancelled or failed part-way) or gone,
closes the socket and connects again (one try, or under the ``reconnect=`` policy), so a
stale answer can never reach a later exchange; and :meth:`reconnect`, the same now. A
layer of the transport for the reason given in :mod:`._core`.
"""

from __future__ import annotations

import math
import socket

import anyio

from ...reconnect import retry_connect
from ._connect import connect_socket
from ._core import SocketCore

__all__ = ["Reconnecting"]


class Reconnecting(SocketCore):
    """A raw-socket link that replaces its connection when it is out of step."""

    async def reconnect(self, *, deadline: float = math.inf) -> None:
        """Close the connection and connect again now (with the retry policy, if any).

        Raises ConnectError / ConnectTimeout when the instrument cannot be reached; the
        transport then stays stale and the next operation tries again.
        """
        if self._busy:
            raise anyio.BusyResourceError("another task is using this transport")
        self._stale = True
        await self._begin(deadline)
        self._busy = False

    def _claim(self) -> socket.socket | None:
        """Mark the link busy and return its socket when an operation can start at once
        (connected, in step, free); None when :meth:`_begin` must run (it raises, or
        replaces the connection first)."""
        sock = self._sock
        if self._busy or self._stale or sock is None or self._closed:
            return None
        self._busy = True
        return sock

    async def _begin(self, deadline: float = math.inf) -> socket.socket:
        if self._busy:
            raise anyio.BusyResourceError("another task is using this transport")
        if self._closed:
            raise anyio.ClosedResourceError
        self._busy = True
        if self._stale or self._sock is None:
            try:
                if self._policy is None:
                    await self._reconnect()
                else:
                    await retry_connect(
                        self._policy,
                        self._reconnect,
                        resource=self._info.resource,
                        deadline=deadline,
                    )
            except BaseException:
                self._busy = False
                raise
        assert self._sock is not None
        return self._sock

    async def _reconnect(self) -> None:
        self._drop_socket()
        sock = await connect_socket(self._host, self._port, timeout=self._connect_timeout)
        if self._closed:  # closed by another task while this one connected
            sock.close()
            raise anyio.ClosedResourceError
        self._sock = sock
        self._lowat = 1
        self._stale = False
        self.reconnects += 1

    def _drop_socket(self) -> None:
        sock, self._sock = self._sock, None
        receiver, self._receiver = self._receiver, None
        self._fresh = False
        self._decoder.reset()
        if receiver is not None:
            receiver.close()
        if sock is not None:
            try:
                anyio.notify_closing(sock)
            except Exception:
                pass
            sock.close()
