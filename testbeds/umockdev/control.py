"""The client end of the device process's control socket (for clients running under anyio).

A client started with :func:`~testbeds.umockdev.host.client_env` finds the socket in
``AIOTMC_UMOCKDEV_CONTROL``; each command (see :mod:`testbeds.umockdev.server`) gets one
JSON reply line.
"""

from __future__ import annotations

import json
import os
from typing import Any

import anyio
import anyio.abc

from .host import CONTROL_ENV

__all__ = ["ControlClient"]

_MAX_REPLY = 1 << 20


class ControlClient:
    """``await control("stats")``: send one command, return its result or raise."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path if path is not None else os.environ[CONTROL_ENV]
        self._stream: anyio.abc.SocketStream | None = None
        self._buffer = b""

    async def __call__(self, command: str) -> Any:
        if self._stream is None:
            self._stream = await anyio.connect_unix(self.path)
        await self._stream.send(command.encode() + b"\n")
        while b"\n" not in self._buffer:
            if len(self._buffer) > _MAX_REPLY:
                raise RuntimeError(f"device reply to {command!r} exceeds {_MAX_REPLY} bytes")
            self._buffer += await self._stream.receive()
        line, _, self._buffer = self._buffer.partition(b"\n")
        reply = json.loads(line)
        if not reply["ok"]:
            raise RuntimeError(f"device command {command!r} failed: {reply['error']}")
        return reply.get("result")

    async def aclose(self) -> None:
        if self._stream is not None:
            await self._stream.aclose()
            self._stream = None
