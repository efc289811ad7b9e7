"""The serial transport: one port (POSIX fd or pyserial in worker threads), framed.

The port is a :class:`Port`: on POSIX by default a non-blocking tty fd configured with
termios and waited on with anyio (``_posix``: no thread), on Windows (or with
``backend="pyserial"``) pyserial's blocking calls in anyio worker threads (``_pyserial``).
Framing is :class:`~aiotmc.transports._bytestream.FramedStream` (terminator,
blocks by length).

Resynchronisation: serial has no device clear. After an operation stopped part-way (a
cancellation, a deadline) the transport is *stale*; its next operation, and
:meth:`SerialTransport.clear`, resynchronise: first the rest of a message left half-sent
is written (the instrument would otherwise take the next command as part of it, or wait
forever inside a block), then everything arriving is read and dropped until the line
has been quiet for ``settle`` seconds (default 0.1), the input queue is discarded
(``tcflush(TCIFLUSH)``; pyserial's ``reset_input_buffer``) and the line drained once
more, all bounded by the operation's deadline. An instrument that answers later than that
can still put a late answer on the line: that is the nature of RS-232 (docs/serial.md).
aiotmc's pty simulator takes the flush as a device clear. A newly opened port is
resynchronised the same way before its first operation (an answer to a previous user's
last command may still be on its way). A port that fails (USB adapter unplugged: ``EIO``,
hang-up) raises :class:`~aiotmc.ConnectionLostError`; the next operation opens the path
again (with the ``reconnect`` policy when one is given).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final, Literal, Protocol

import anyio
from anyio.lowlevel import cancel_shielded_checkpoint, checkpoint

from ..._exceptions import (
    ConnectionLostError,
    ReadTimeout,
    RemoteProtocolError,
    UnsupportedOperation,
)
from ..._fastpath import schedule_point_due
from ..._types import BytesLike
from ...reconnect import Reconnect, retry_connect
from .._bytestream import ByteChannel, FramedStream
from ..base import Capabilities, TransportInfo
from ._settings import SerialSettings

if TYPE_CHECKING:
    from ...srq import SrqBroadcaster

__all__ = ["Backend", "Port", "SerialTransport", "choose_backend", "port_opener"]

_CAPABILITIES: Final = Capabilities()

Backend = Literal["auto", "posix", "pyserial"]
BACKENDS: Final = ("auto", "posix", "pyserial")


class Port(Protocol):
    """An open serial port: its byte channel and the line operations besides reading and
    writing. Failures raise ``OSError``."""

    @property
    def channel(self) -> ByteChannel:
        """The port's non-blocking byte channel."""
        ...

    def discard(self, *, received: bool, unsent: bool) -> None:
        """Discard the input and/or output queues."""
        ...

    async def send_break(self, duration: float) -> None:
        """Hold the line in the break state for ``duration`` seconds."""
        ...

    def close(self) -> None:
        """Close the port (a waiter gets ``anyio.ClosedResourceError``); never blocks."""
        ...


def choose_backend(backend: str) -> Literal["posix", "pyserial"]:
    """``"auto"``: pyserial on Windows, the termios fd elsewhere (ValueError if unknown or
    impossible here)."""
    if backend not in BACKENDS:
        raise ValueError(f"serial_backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "auto":
        return "pyserial" if sys.platform == "win32" else "posix"
    if backend == "posix" and sys.platform == "win32":
        raise ValueError("serial_backend='posix' needs termios: use 'pyserial' on Windows")
    return "posix" if backend == "posix" else "pyserial"


def port_opener(backend: str) -> Callable[[str, SerialSettings], Port]:
    """The function that opens a port with ``backend`` (see :func:`choose_backend`)."""
    if choose_backend(backend) == "pyserial":
        from ._pyserial import open_pyserial_port

        return open_pyserial_port
    from ._posix import open_fd_port

    return open_fd_port


class SerialTransport:
    """A :class:`~aiotmc.transports.base.MessageTransport` over a serial port."""

    def __init__(
        self,
        port: Port | int,
        *,
        path: str,
        resource: str,
        settings: SerialSettings,
        terminator: bytes = b"\n",
        reconnect: Reconnect | None = None,
        settle: float = 0.1,
        backend: str = "auto",
    ) -> None:
        if isinstance(port, int):  # a tty fd opened by the caller
            from ._posix import FdPort

            port = FdPort(port)
        self._port: Port | None = port
        self._backend = choose_backend(backend)
        self._open_port = port_opener(self._backend)
        self._settle = settle
        self._path = path
        self._settings = settings
        self._policy = reconnect
        self._stream = FramedStream(port.channel, terminator=terminator, resource=resource)
        # The first operation drains what a previous user of the port left on its way.
        self._stale = settle > 0
        self._busy = False
        self._closed = False
        self._info = TransportInfo(
            resource=resource,
            kind="serial",
            capabilities=_CAPABILITIES,
            details={
                "path": path,
                "baud_rate": str(settings.baud_rate),
                "backend": self._backend,
            },
        )
        self.reopens = 0  #: how many times the port was opened again after a failure

    @classmethod
    async def open(
        cls,
        path: str,
        *,
        resource: str | None = None,
        settings: SerialSettings | None = None,
        terminator: bytes = b"\n",
        reconnect: Reconnect | None = None,
        settle: float = 0.1,
        backend: str = "auto",
    ) -> SerialTransport:
        """Open ``path`` with ``backend`` (``"auto"``: pyserial on Windows, the termios fd
        elsewhere; ``"posix"``; ``"pyserial"``); the caller must ``aclose`` the transport."""
        chosen = settings or SerialSettings()
        port = port_opener(backend)(path, chosen)
        await checkpoint()
        return cls(
            port,
            path=path,
            resource=resource or f"ASRL{path}::INSTR",
            settings=chosen,
            terminator=terminator,
            reconnect=reconnect,
            settle=settle,
            backend=backend,
        )

    # -- MessageTransport ------------------------------------------------------------------

    @property
    def info(self) -> TransportInfo:
        """Static facts about the link."""
        return self._info

    @property
    def srq(self) -> SrqBroadcaster | None:
        """Serial lines have no service-request channel."""
        return None

    @property
    def stale(self) -> bool:
        """True when the next operation resynchronises first."""
        return self._stale

    def set_read_termination(self, terminator: bytes) -> None:
        """Frame later responses on ``terminator``."""
        if not terminator:
            raise ValueError("a serial port needs a read termination to frame messages")
        if terminator == self._stream.terminator:
            return
        if self._busy or not self._stream.in_step:
            raise anyio.BusyResourceError("cannot change the terminator in mid-message")
        self._stream.set_terminator(terminator)

    async def send_message(
        self, parts: Sequence[BytesLike], *, end: bool = True, deadline: float = math.inf
    ) -> None:
        """Write ``parts`` back to back (serial has no end-of-message signal)."""
        stream = await self._begin(deadline)
        try:
            await stream.send(parts, deadline)
        except BaseException as exc:
            self._failed(exc)
            raise
        finally:
            self._busy = False
        await _fair()

    async def receive_message(self, *, max_size: int, deadline: float = math.inf) -> bytes:
        """Receive one message, terminator included."""
        stream = await self._begin(deadline)
        try:
            message = await stream.receive_message(max_size, deadline)
        except BaseException as exc:
            self._failed(exc)
            raise
        finally:
            self._busy = False
        await _fair()
        return message

    async def exchange(self, message: bytes, *, max_size: int, deadline: float = math.inf) -> bytes:
        """Send ``message`` and receive its response."""
        stream = await self._begin(deadline)
        try:
            await stream.send((message,), deadline)
            answer = await stream.receive_message(max_size, deadline)
        except BaseException as exc:
            self._failed(exc)
            raise
        finally:
            self._busy = False
        await _fair()
        return answer

    async def receive_block(
        self, into: memoryview | None = None, *, max_size: int, deadline: float = math.inf
    ) -> memoryview:
        """Receive a block response; the payload is read straight into ``into``."""
        stream = await self._begin(deadline)
        try:
            payload = await stream.receive_block(into, max_size, deadline)
        except BaseException as exc:
            self._failed(exc)
            raise
        finally:
            self._busy = False
        await _fair()
        return payload

    async def read_stb(self, *, deadline: float = math.inf) -> int:
        """Serial lines have no serial poll; the Instrument falls back to ``*STB?``."""
        raise UnsupportedOperation("a serial port has no bus-level status byte read")

    async def trigger(self, *, deadline: float = math.inf) -> None:
        """Serial lines have no bus trigger; the Instrument falls back to ``*TRG``."""
        raise UnsupportedOperation("a serial port has no bus-level trigger")

    async def clear(self, *, deadline: float = math.inf) -> None:
        """Resynchronise (see the module docstring): complete a half-sent message, flush,
        drop what arrives until the line is quiet."""
        await self._begin(deadline)
        try:
            await self._resync(deadline)
        except BaseException as exc:
            self._failed(exc)
            raise
        finally:
            self._busy = False

    async def discard(self, *, received: bool = True, unsent: bool = True) -> None:
        """Discard what arrived and was not read, and/or what was written and not yet sent
        (VISA's ``flush(discard read/write buffer)``)."""
        if not (received or unsent):
            return
        await self._begin()
        try:
            if received:
                self._stream.reset()
            if unsent:
                self._stream.unsent = []
            self._discard(received=received, unsent=unsent)
        finally:
            self._busy = False

    async def send_break(self, duration: float = 0.25) -> None:
        """Hold the line in the break state for ``duration`` seconds (VISA's ``break``)."""
        await self._begin()
        try:
            assert self._port is not None
            try:
                await self._port.send_break(duration)
            except OSError as exc:
                raise ConnectionLostError(
                    f"cannot send a break: {exc}", resource=self._info.resource
                ) from None
        finally:
            self._busy = False

    async def reconnect(self, *, deadline: float = math.inf) -> None:
        """Close the port and open it again now (a USB adapter plugged back in)."""
        if self._busy:
            raise anyio.BusyResourceError("another task is using this transport")
        self._drop_port()
        await self._begin(deadline)
        self._busy = False

    async def aclose(self) -> None:
        """Close the port; idempotent, never blocks."""
        self._closed = True
        self._drop_port()
        await checkpoint()

    # -- internals ---------------------------------------------------------------------------

    async def _begin(self, deadline: float = math.inf) -> FramedStream:
        if self._busy:
            raise anyio.BusyResourceError("another task is using this transport")
        if self._closed:
            raise anyio.ClosedResourceError
        self._busy = True
        try:
            if self._port is None:
                if self._policy is None:
                    await self._reopen()
                else:
                    await retry_connect(
                        self._policy, self._reopen, resource=self._info.resource, deadline=deadline
                    )
            elif self._stale:
                await self._resync(deadline)
        except BaseException:
            self._busy = False
            raise
        return self._stream

    async def _reopen(self) -> None:
        port = self._open_port(self._path, self._settings)
        if self._closed:
            port.close()
            raise anyio.ClosedResourceError
        self._port = port
        self._stream.channel = port.channel
        self._stream.reset()
        self._stream.unsent = []
        self._stale = self._settle > 0
        self.reopens += 1
        await checkpoint()

    async def _resync(self, deadline: float) -> None:
        self._stale = True  # until done: a cancelled resync is resumed next time
        stream = self._stream
        stream.reset()
        unsent, stream.unsent = stream.unsent, []
        if unsent:
            await stream.send(unsent, deadline)
        await self._drain(deadline)  # the instrument reads what was sent, answers it
        self._discard(received=True, unsent=False)
        await self._drain(deadline)
        stream.reset()
        self._stale = False

    async def _drain(self, deadline: float) -> None:
        """Read and drop what arrives until the line is quiet for ``settle`` seconds."""
        scratch = memoryview(bytearray(4096))
        while True:
            quiet_until = min(anyio.current_time() + self._settle, deadline)
            try:
                await self._stream.read_into(scratch, quiet_until)
            except ReadTimeout:
                if quiet_until >= deadline:
                    raise ReadTimeout(
                        f"{self._info.resource}: the line did not go quiet before the deadline"
                    ) from None
                return

    def _discard(self, *, received: bool, unsent: bool) -> None:
        assert self._port is not None
        try:
            self._port.discard(received=received, unsent=unsent)
        except OSError as exc:
            self._drop_port()
            raise ConnectionLostError(
                f"serial port failed: {exc}", resource=self._info.resource
            ) from None

    def _failed(self, exc: BaseException) -> None:
        """After a failed operation: resynchronise next time unless in step."""
        if isinstance(exc, ConnectionLostError):
            self._drop_port()
        elif not (isinstance(exc, RemoteProtocolError) and self._stream.in_step):
            self._stale = True

    def _drop_port(self) -> None:
        port, self._port = self._port, None
        self._stream.reset()
        self._stale = False
        if port is not None:
            port.close()


async def _fair() -> None:
    """Every 16th operation ends with a schedule point (see aiotmc._fastpath)."""
    if schedule_point_due():
        await cancel_shielded_checkpoint()
