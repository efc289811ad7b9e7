"""One Prologix-compatible GPIB-ETHERNET adapter: its TCP connection, its bus lock.

Every instrument opened on the same ``host:port`` in one event loop shares one
:class:`PrologixAdapter` (reference-counted): one connection, one lock, because the adapter
is one GPIB bus and ``++addr`` + data + ``++read`` must not interleave between instruments.

On (re)connection the adapter is put in a known state: ``++mode 1`` (controller),
``++auto 0`` (no automatic read-after-write: "Query UNTERMINATED" otherwise), ``++eoi 1``
(EOI with the last byte), ``++eos 3`` (append nothing: the caller's terminator is sent as
data), ``++eot_enable 0``, ``++read_tmo_ms 3000`` (the longest Prologix allows); then ``++mode``
is asked, and an adapter that stays in DEVICE mode is a typed error. An
operation stopped part-way marks the adapter *stale*: the next one connects again, so
bytes of an interrupted ``++read`` never reach another exchange.
"""

from __future__ import annotations

import math
import re
import socket
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Final, TypeAlias

import anyio
from anyio.lowlevel import current_token

from ..._exceptions import (
    ConnectError,
    ConnectionLostError,
    ReadTimeout,
    RemoteProtocolError,
    SessionBrokenError,
    WriteTimeout,
)
from .._bytestream import ByteChannel, FramedStream
from ..tcp import connect_socket
from ._srq import DEFAULT_SRQ_INTERVAL, Link, SrqPoller

__all__ = ["INIT", "Connector", "PrologixAdapter", "acquire_lock", "escape"]

INIT: Final = b"++mode 1\n++auto 0\n++eoi 1\n++eos 3\n++eot_enable 0\n++read_tmo_ms 3000\n"
_SPECIAL: Final = re.compile(rb"([\r\n\x1b+])")
_VERSION: Final = re.compile(rb"(?i)gpib.*ver")  # Prologix and AR488 ++ver answers
_SKIP_LINE: Final = 1 << 20
_MODE: Final = b"++mode\n"

Connector: TypeAlias = Callable[[float], Awaitable[tuple[ByteChannel, Callable[[], None]]]]
"""Opens a serial adapter's line by a deadline: its channel and how to close it."""


def escape(data: bytes | bytearray | memoryview) -> bytes:
    """Escape CR, LF, ESC and ``+`` with ESC so the adapter passes them on as data."""
    return _SPECIAL.sub(b"\x1b\\1", bytes(data))


class _SocketChannel:
    """A :class:`~aiotmc.transports._bytestream.ByteChannel` over a non-blocking socket."""

    __slots__ = ("sock",)

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def read_into(self, view: memoryview) -> int:
        return self.sock.recv_into(view)

    def write(self, view: memoryview) -> int:
        return self.sock.send(view)

    async def wait_readable(self) -> None:
        await anyio.wait_readable(self.sock)

    async def wait_writable(self) -> None:
        await anyio.wait_writable(self.sock)


class PrologixAdapter:
    """The shared state of one adapter (get it with :meth:`acquire`)."""

    # (host, port, event loop) -> adapter: instruments share an adapter within one loop
    _open: weakref.WeakValueDictionary[tuple[str, int, object], PrologixAdapter] = (
        weakref.WeakValueDictionary()
    )

    def __init__(
        self,
        host: str,
        port: int,
        *,
        connect_timeout: float | None,
        connect: Connector | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self._connect = connect
        self.lock = anyio.Lock()  #: held for each whole transaction on the bus
        self.stale = True  #: connect (again) before the next transaction
        #: Serial set-ups sent whole whose ``++mode`` answers were not read yet.
        self._setups_owed = 0
        self.address: tuple[int, int | None] | None = None  #: what ``++addr`` last set
        self.users = 0
        self.reconnects = 0
        self._key: tuple[str, int, object] | None = None
        self._close: Callable[[], None] | None = None
        self.stream = FramedStream(_Closed(), terminator=b"\n", resource=f"{host}:{port}")
        self.links: set[Link] = set()  #: the instruments open on this bus
        self.srq_interval = DEFAULT_SRQ_INTERVAL  #: seconds between ``++srq`` polls
        self._srq_poller: SrqPoller | None = None

    @classmethod
    def acquire(
        cls,
        host: str,
        port: int,
        *,
        connect_timeout: float | None,
        connect: Connector | None = None,
        srq_interval: float | None = None,
    ) -> PrologixAdapter:
        """The adapter for ``host:port`` (a serial adapter: its device path and port 0),
        shared with the instruments already open on it in this event loop.
        ``srq_interval`` is taken by the first instrument that opens the adapter."""
        if srq_interval is not None and not (
            isinstance(srq_interval, int | float) and 0.001 <= srq_interval <= 60
        ):
            raise ValueError(f"srq_interval must be 0.001..60 seconds, got {srq_interval!r}")
        key = (host, port, current_token())
        adapter = cls._open.get(key)
        if adapter is None:
            adapter = cls(host, port, connect_timeout=connect_timeout, connect=connect)
            adapter._key = key
            cls._open[key] = adapter
            if srq_interval is not None:
                adapter.srq_interval = float(srq_interval)
        adapter.users += 1
        return adapter

    @property
    def srq_poller(self) -> SrqPoller:
        """The poller of this bus's SRQ line (created on first use, runs while an
        instrument on the adapter has a service-request subscriber)."""
        if self._srq_poller is None:
            self._srq_poller = SrqPoller(self, self.srq_interval)
        return self._srq_poller

    def release(self) -> None:
        """One instrument less; the last one closes the connection."""
        self.users -= 1
        if self.users <= 0:
            if self._srq_poller is not None:
                self._srq_poller.cancel()
            self.drop()
            if self._key is not None and self._open.get(self._key) is self:
                del self._open[self._key]

    async def ready(self, deadline: float = math.inf) -> FramedStream:
        """The stream, connected and initialised (call with :attr:`lock` held)."""
        if self.stale or self._close is None:
            self.drop()
            if self._connect is None:
                timeout = self.connect_timeout
                if math.isfinite(deadline):
                    left = max(0.0, deadline - anyio.current_time())
                    timeout = left if timeout is None else min(timeout, left)
                sock = await connect_socket(self.host, self.port, timeout=timeout)
                self._close = partial(_close_socket, sock)
                self.stream.channel = _SocketChannel(sock)
                self.stream.reset()
                self.stream.unsent = []
                self.reconnects += 1
                await self.stream.send((INIT, _MODE), deadline)
                await self._check_mode(deadline)
            else:
                channel, self._close = await self._connect(deadline)
                self.stream.channel = channel
                self.stream.reset()
                self.stream.unsent = []
                self.reconnects += 1
                await self.stream.send((INIT, b"++ver\n", _MODE), deadline)
                self._setups_owed += 1  # its ++ver and ++mode answers are on their way
                await self._skip_to_version(deadline)
                await self._read_setup_answers(deadline)
            self.stale = False
        return self.stream

    @asynccontextmanager
    async def transaction(self, deadline: float) -> AsyncIterator[FramedStream]:
        """The bus locked and the adapter ready, for a bus-level exchange (not addressed to
        one instrument); a failure part-way marks the adapter stale."""
        await acquire_lock(self.lock, deadline, True)
        try:
            stream = await self.ready(deadline)
            try:
                yield stream
            except BaseException as exc:
                if not (isinstance(exc, RemoteProtocolError) and stream.in_step):
                    self.stale = True
                raise
        finally:
            self.lock.release()

    async def _check_mode(self, deadline: float) -> None:
        """The answer to ``++mode`` after the set-up: an adapter that stays in DEVICE mode
        (firmware without controller support, a locked configuration) cannot address
        instruments; say so instead of timing out on every read."""
        stream = self.stream
        stream.set_terminator(b"\n")
        line = (await stream.receive_message(64, deadline)).strip()
        if line == b"1":
            return
        if line == b"0":
            raise ConnectError(
                f"the GPIB adapter at {self.host} stays in DEVICE mode (++mode 1 refused): "
                "it cannot address instruments; check its firmware or configuration"
            )
        raise RemoteProtocolError(
            f"the GPIB adapter at {self.host} answered ++mode with {line[:40]!r}: "
            "not a Prologix-compatible adapter?"
        )

    async def _read_setup_answers(self, deadline: float) -> None:
        """After the first ``++ver`` answer: the rest of every set-up still owed. A set-up
        cancelled while waiting leaves its answers on the line (a serial line is not
        replaced); each set-up sent whole answers one version line then one ``++mode``
        line, in order, so read until as many mode lines as set-ups owed have come, the
        version lines between them skipped: the last one answers this set-up."""
        stream = self.stream
        stream.set_terminator(b"\n")
        while True:
            line = (await stream.receive_message(_SKIP_LINE, deadline)).strip()
            if _VERSION.search(line):
                continue
            if line not in (b"0", b"1"):
                raise RemoteProtocolError(
                    f"the GPIB adapter at {self.host} answered ++mode with {line[:40]!r}: "
                    "not a Prologix-compatible adapter?"
                )
            self._setups_owed = max(0, self._setups_owed - 1)
            if self._setups_owed == 0:
                break
        if line == b"0":
            raise ConnectError(
                f"the GPIB adapter at {self.host} stays in DEVICE mode (++mode 1 refused): "
                "it cannot address instruments; check its firmware or configuration"
            )

    async def _skip_to_version(self, deadline: float) -> None:
        """A serial line cannot be replaced like a connection: the adapter may still be
        finishing an interrupted ``++read``. It handles commands in order, so everything
        before the answer to ``++ver`` is left over: read and drop it."""
        stream = self.stream
        stream.set_terminator(b"\n")
        for _ in range(100_000):  # bounded: the deadline, and this many lines
            try:
                line = await stream.receive_message(_SKIP_LINE, deadline)
            except RemoteProtocolError:
                if not stream.in_step:
                    stream.reset()
                continue
            if _VERSION.search(line):
                return
        raise SessionBrokenError(f"{self.host}: the adapter never answered ++ver")

    async def select(self, primary: int, secondary: int | None, deadline: float) -> None:
        """``++addr`` when the bus's addressed instrument is another one."""
        if self.address != (primary, secondary):
            sad = "" if secondary is None else f" {secondary + 96}"
            await self.stream.send((f"++addr {primary}{sad}\n".encode(),), deadline)
            self.address = (primary, secondary)

    def drop(self) -> None:
        """Close the connection (the next transaction connects again)."""
        close, self._close = self._close, None
        self.stream.channel = _Closed()
        self.stream.reset()
        self.address = None
        self.stale = True
        if close is not None:
            close()


async def acquire_lock(lock: anyio.Lock, deadline: float, reading: bool) -> None:
    """Take the bus lock by ``deadline`` (a typed timeout when other instruments keep it)."""
    try:
        lock.acquire_nowait()
        return
    except anyio.WouldBlock:
        pass
    with anyio.CancelScope(deadline=deadline) as scope:
        await lock.acquire()
    if scope.cancelled_caught:
        error = ReadTimeout if reading else WriteTimeout
        raise error("the GPIB adapter stayed busy with other instruments until the deadline")


def _close_socket(sock: socket.socket) -> None:
    try:
        anyio.notify_closing(sock)
    except Exception:  # no event loop, or nobody waiting
        pass
    sock.close()


class _Closed:
    """The channel of an adapter that is not connected."""

    def read_into(self, view: memoryview) -> int:
        raise ConnectionLostError("the adapter is not connected")

    def write(self, view: memoryview) -> int:
        raise ConnectionLostError("the adapter is not connected")

    async def wait_readable(self) -> None:  # pragma: no cover - never reached
        raise ConnectionLostError("the adapter is not connected")

    async def wait_writable(self) -> None:  # pragma: no cover - never reached
        raise ConnectionLostError("the adapter is not connected")
