"""Serve a simulated instrument on a pseudo-terminal: a serial port without hardware.

:class:`PtyServer` opens a pty pair, keeps the master side and serves a
:class:`~aiotmc.sim.SimDevice` on it; clients open :attr:`PtyServer.path` (e.g.
``/dev/pts/7``) like any serial port: ``aiotmc.open(server.resource)``, pyvisa-py
``ASRL/dev/pts/7::INSTR``, pyserial, ``screen``. The slave side is put in raw mode and
the server keeps it open too, so a client may close and reopen the port.

Resynchronisation: the master runs in packet mode (``TIOCPKT``), so a client that
discards its port's queues (``tcflush``: aiotmc's serial transport after an interrupted
operation, pyserial's ``reset_input_buffer``) is seen by the server, which then drops a
message half received and clears the device (input, output, pending answer) - the pty's
stand-in for the device clear (BREAK, ``^C``) some real serial instruments accept. (Bytes
the client wrote before its flush and the server had not read yet still arrive after
it: a pty does not discard them.)

Bounds (the server rules of docs/reliability.md): input is buffered only up to
``max_message_size`` (default 4 MiB; more is dropped as a real UART overruns, logged
once); a program message over that limit is discarded with -223 "Too much data"; the next
message is read only when the device has answered the previous one (a client that
pipelines and never reads stalls itself, not the server); an answer the client does not
read within ``send_timeout`` seconds is dropped. :meth:`PtyServer.hang_up` closes the
master: clients see the port die (an unplugged adapter).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import math
import os
import struct
import termios
import tty
from collections.abc import Sequence
from typing import Final

import anyio
from anyio.abc import TaskGroup
from anyio.lowlevel import checkpoint

from .._exceptions import RemoteProtocolError
from ..protocol import NEED_DATA
from ..protocol.framing import MessageDecoder
from ._serving import BackgroundServer
from .commands import DEVICE_ERROR, INVALID_BLOCK_DATA, TOO_MUCH_DATA, BytesLike, ScpiError
from .device import SimDevice

__all__ = ["DEFAULT_MAX_INPUT", "PtyServer"]

_log = logging.getLogger("aiotmc.sim.pty_server")

DEFAULT_MAX_INPUT: Final = 4 << 20
_READ_SIZE: Final = 4097  # a packet-mode read: one status byte and up to 4096 bytes
_WRITE_SIZE: Final = 4096
_FLUSH: Final = termios.TIOCPKT_FLUSHREAD | termios.TIOCPKT_FLUSHWRITE


class _Cleared(Exception):
    """The client discarded its queues while an answer was being sent."""


class PtyServer(BackgroundServer):
    """Serve one :class:`~aiotmc.sim.SimDevice` on a new pty (async context manager)."""

    def __init__(
        self,
        device: SimDevice,
        *,
        max_message_size: int = DEFAULT_MAX_INPUT,
        send_timeout: float = 10.0,
    ) -> None:
        self.device = device
        self.max_message_size = max_message_size
        self.send_timeout = send_timeout
        self.clears = 0  #: how many times a client's flush cleared the device
        self.path = ""  #: the port clients open (set on entry)
        self._master: int | None = None
        self._slave: int | None = None
        self._task_group: TaskGroup | None = None
        self._decoder = MessageDecoder(terminator=b"\n", max_message_size=max_message_size)
        self._overrun_logged = False
        self._hung_up = anyio.Event()

    @property
    def resource(self) -> str:
        """The VISA resource name clients open, e.g. ``ASRL/dev/pts/7::INSTR``."""
        return f"ASRL{self.path}::INSTR"

    def __repr__(self) -> str:
        return f"<PtyServer {self.path} {self.device.identity!r}>"

    # -- lifecycle --------------------------------------------------------------------------

    async def _open(self) -> None:
        if self._master is not None:
            raise RuntimeError("this PtyServer is already running")
        master, slave = os.openpty()
        try:
            tty.setraw(slave)
            fcntl.ioctl(master, termios.TIOCPKT, struct.pack("i", 1))
            os.set_blocking(master, False)
            self.path = os.ttyname(slave)
        except BaseException:
            os.close(master)
            os.close(slave)
            raise
        self._master, self._slave = master, slave

    def _start(self, task_group: TaskGroup) -> None:
        assert self._master is not None
        task_group.start_soon(self._serve, self._master)

    async def _close(self) -> None:
        self._close_fds()

    def hang_up(self) -> None:
        """Close the master side now: clients' reads and writes fail (unplugged port)."""
        if self._task_group is not None:
            self._task_group.cancel_scope.cancel()
        self._close_fds()

    def _close_fds(self) -> None:
        for fd in (self._master, self._slave):
            if fd is not None:
                try:
                    anyio.notify_closing(fd)
                except Exception:  # no event loop, or nobody waiting
                    pass
                os.close(fd)
        self._master = self._slave = None

    # -- serving ----------------------------------------------------------------------------

    async def _serve(self, master: int) -> None:
        device = self.device
        while True:
            if device.busy:
                parts = device.read_parts()
                if parts is not None:
                    try:
                        await self._send(master, parts)
                    except _Cleared:
                        pass
                    await checkpoint()  # a client pipelining fast must not starve others
                    continue
            else:
                message = self._next_message()
                if message is not None:
                    self._write(message)
                    continue
            deadline = device.next_deadline()
            delay = math.inf if deadline is None else max(0.0, deadline - device.clock())
            with anyio.move_on_after(delay) as timer:
                await anyio.wait_readable(master)
            if timer.cancelled_caught:
                device.poll()
            else:
                self._pump(master)

    def _write(self, message: bytes) -> None:
        try:
            self.device.write(message)
        except Exception as exc:  # a bug in a command handler: report, keep serving
            _log.exception("%s: device failed on %r", self.path, message[:60])
            detail = f"{type(exc).__name__}: {exc}"[:200]
            self.device.push_error(DEVICE_ERROR, ScpiError(DEVICE_ERROR, detail).message)

    def _next_message(self) -> bytes | None:
        decoder = self._decoder
        while True:
            try:
                message = decoder.next_message()
            except RemoteProtocolError as exc:
                code = TOO_MUCH_DATA if "max_message_size" in str(exc) else INVALID_BLOCK_DATA
                _log.info("%s: bad program message: %s", self.path, exc)
                self.device.push_error(code, ScpiError(code, str(exc)[:200]).message)
                decoder.discard_current()
                continue
            if message is NEED_DATA:
                return None
            assert isinstance(message, bytes)
            return message

    def _pump(self, master: int) -> bool:
        """Read what the client sent (without waiting); True if it discarded its queues."""
        cleared = False
        for _ in range(64):  # bounded: at most 256 kB per call
            try:
                packet = os.read(master, _READ_SIZE)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EIO:  # no client end open: nothing to read
                    break
                raise
            if not packet:
                break
            if packet[0] != termios.TIOCPKT_DATA:
                if packet[0] & _FLUSH:
                    self._clear(master)
                    cleared = True
                continue
            data = memoryview(packet)[1:]
            room = self.max_message_size + _READ_SIZE - self._decoder.pending
            if len(data) > room:
                if not self._overrun_logged:
                    self._overrun_logged = True
                    _log.warning("%s: input overrun, bytes dropped", self.path)
                data = data[: max(room, 0)]
            if data:
                self._decoder.receive_data(data)
        return cleared

    def _clear(self, master: int) -> None:
        """The client flushed its port: drop a message half received and everything the
        device had not answered."""
        self.clears += 1
        self._decoder.reset()
        self.device.device_clear()

    async def _send(self, master: int, parts: Sequence[BytesLike]) -> None:
        """Write one answer, watching for the client's flush between pieces."""
        for part in parts:
            view = memoryview(part).cast("B")
            while view:
                if self._pump(master):
                    raise _Cleared
                try:
                    sent = os.write(master, view[:_WRITE_SIZE])
                except BlockingIOError:
                    with anyio.move_on_after(self.send_timeout) as timer:
                        await anyio.wait_writable(master)
                    if timer.cancelled_caught:
                        _log.warning("%s: client not reading, answer dropped", self.path)
                        self.device.device_clear()
                        raise _Cleared from None
                    continue
                view = view[sent:]
