"""The POSIX serial transport: a non-blocking tty fd, termios, anyio readiness waits.

No thread: the port is opened ``O_NONBLOCK | O_NOCTTY``, configured raw with termios
(VMIN = 1, VTIME = 0, so a read with nothing there raises ``EAGAIN`` and a read of 0 bytes
means hang-up), and waited on with ``anyio.wait_readable``/``wait_writable``: asyncio and
trio alike. Framing is :class:`~aiotmc.transports._bytestream.FramedStream` (terminator,
blocks by length).

Resynchronisation: serial has no device clear. After an operation stopped part-way (a
cancellation, a deadline) the transport is *stale*; its next operation, and
:meth:`SerialTransport.clear`, resynchronise: first the rest of a message left half-sent
is written (the instrument would otherwise take the next command as part of it, or wait
forever inside a block), then everything arriving is read and dropped until the line
has been quiet for ``settle`` seconds (default 0.1), the input queue is discarded
(``tcflush(TCIFLUSH)``) and the line drained once more, all bounded by the operation's
deadline. An instrument that answers
later than that can still put a late answer on the line: that is the nature of RS-232
(docs/serial.md). aiotmc's pty simulator takes the flush as a device clear. A newly
opened port is resynchronised the same way before its first operation (an answer to a
previous user's last command may still be on its way).
A port that fails (USB adapter unplugged: ``EIO``, hang-up) raises
:class:`~aiotmc.ConnectionLostError`; the next operation opens the path again (with the
``reconnect`` policy when one is given).
"""

from __future__ import annotations

import errno
import fcntl
import math
import os
import termios
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import anyio
from anyio.lowlevel import cancel_shielded_checkpoint, checkpoint

from ..._exceptions import (
    ConnectError,
    ConnectionLostError,
    PermissionDeniedError,
    ReadTimeout,
    RemoteProtocolError,
    ResourceBusyError,
    ResourceNotFoundError,
    UnsupportedOperation,
)
from ..._fastpath import schedule_point_due
from ..._types import BytesLike
from ...reconnect import Reconnect, retry_connect
from .._bytestream import FramedStream
from ..base import Capabilities, TransportInfo
from ._settings import SerialSettings

if TYPE_CHECKING:
    from ...srq import SrqBroadcaster

__all__ = ["FdChannel", "SerialTransport", "open_port"]

_CAPABILITIES: Final = Capabilities()
_TIOCSBRK: Final[int] = getattr(termios, "TIOCSBRK", 0x5427)  # Linux values as fallback
_TIOCCBRK: Final[int] = getattr(termios, "TIOCCBRK", 0x5428)


class FdChannel:
    """A :class:`~aiotmc.transports._bytestream.ByteChannel` over a non-blocking fd."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def read_into(self, view: memoryview) -> int:
        return os.readv(self.fd, [view])

    def write(self, view: memoryview) -> int:
        return os.write(self.fd, view)

    async def wait_readable(self) -> None:
        await anyio.wait_readable(self.fd)

    async def wait_writable(self) -> None:
        await anyio.wait_writable(self.fd)


def open_port(path: str, settings: SerialSettings) -> int:
    """Open and configure ``path``; a typed error that says how to fix a failure."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ResourceNotFoundError(
            f"no serial port {path}: is the adapter plugged in? (`aiotmc list` shows ports)"
        ) from None
    except PermissionError as exc:
        raise PermissionDeniedError(
            f"no permission to open {path}: add your user to the group owning it (usually "
            f"`sudo usermod -aG dialout $USER`, then log in again) ({exc.strerror})"
        ) from None
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise ResourceBusyError(f"serial port {path} is in use by another program") from None
        if exc.errno in (errno.ENXIO, errno.ENODEV):
            raise ResourceNotFoundError(f"serial port {path} has no device behind it") from None
        raise ConnectError(f"cannot open serial port {path}: {exc}") from exc
    try:
        try:
            attrs = termios.tcgetattr(fd)
        except termios.error as exc:
            raise ConnectError(f"{path} is not a serial port (termios: {exc})") from None
        try:
            termios.tcsetattr(fd, termios.TCSANOW, settings.apply(attrs))
        except termios.error as exc:
            raise ConnectError(f"cannot configure serial port {path}: {exc}") from None
        termios.tcflush(fd, termios.TCIOFLUSH)  # nothing left over from a previous user
    except BaseException:
        os.close(fd)
        raise
    return fd


class SerialTransport:
    """A :class:`~aiotmc.transports.base.MessageTransport` over a serial port."""

    def __init__(
        self,
        fd: int,
        *,
        path: str,
        resource: str,
        settings: SerialSettings,
        terminator: bytes = b"\n",
        reconnect: Reconnect | None = None,
        settle: float = 0.1,
    ) -> None:
        self._fd: int | None = fd
        self._settle = settle
        self._path = path
        self._settings = settings
        self._policy = reconnect
        self._stream = FramedStream(FdChannel(fd), terminator=terminator, resource=resource)
        # The first operation drains what a previous user of the port left on its way.
        self._stale = settle > 0
        self._busy = False
        self._closed = False
        self._info = TransportInfo(
            resource=resource,
            kind="serial",
            capabilities=_CAPABILITIES,
            details={"path": path, "baud_rate": str(settings.baud_rate)},
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
    ) -> SerialTransport:
        """Open ``path`` (the caller must ``aclose`` the transport)."""
        chosen = settings or SerialSettings()
        fd = open_port(path, chosen)
        await checkpoint()
        return cls(
            fd,
            path=path,
            resource=resource or f"ASRL{path}::INSTR",
            settings=chosen,
            terminator=terminator,
            reconnect=reconnect,
            settle=settle,
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
            queue = (
                termios.TCIOFLUSH
                if received and unsent
                else termios.TCIFLUSH
                if received
                else termios.TCOFLUSH
            )
            self._tcflush(queue)
        finally:
            self._busy = False

    async def send_break(self, duration: float = 0.25) -> None:
        """Hold the line in the break state for ``duration`` seconds (VISA's ``break``)."""
        await self._begin()
        try:
            assert self._fd is not None
            fd = self._fd
            try:
                fcntl.ioctl(fd, _TIOCSBRK)
            except OSError as exc:
                raise ConnectionLostError(
                    f"cannot send a break: {exc}", resource=self._info.resource
                ) from None
            try:
                await anyio.sleep(duration)
            finally:
                if self._fd == fd:
                    try:
                        fcntl.ioctl(fd, _TIOCCBRK)
                    except OSError:
                        pass
        finally:
            self._busy = False

    async def reconnect(self, *, deadline: float = math.inf) -> None:
        """Close the port and open it again now (a USB adapter plugged back in)."""
        if self._busy:
            raise anyio.BusyResourceError("another task is using this transport")
        self._drop_fd()
        await self._begin(deadline)
        self._busy = False

    async def aclose(self) -> None:
        """Close the port; idempotent, never blocks."""
        self._closed = True
        self._drop_fd()
        await checkpoint()

    # -- internals ---------------------------------------------------------------------------

    async def _begin(self, deadline: float = math.inf) -> FramedStream:
        if self._busy:
            raise anyio.BusyResourceError("another task is using this transport")
        if self._closed:
            raise anyio.ClosedResourceError
        self._busy = True
        try:
            if self._fd is None:
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
        fd = open_port(self._path, self._settings)
        if self._closed:
            os.close(fd)
            raise anyio.ClosedResourceError
        self._fd = fd
        self._stream.channel = FdChannel(fd)
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
        self._tcflush(termios.TCIFLUSH)
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

    def _tcflush(self, queue: int) -> None:
        assert self._fd is not None
        try:
            termios.tcflush(self._fd, queue)
        except termios.error as exc:
            raise self._lost_port(exc) from None

    def _lost_port(self, exc: termios.error) -> ConnectionLostError:
        self._drop_fd()
        return ConnectionLostError(f"serial port failed: {exc}", resource=self._info.resource)

    def _failed(self, exc: BaseException) -> None:
        """After a failed operation: resynchronise next time unless in step."""
        if isinstance(exc, ConnectionLostError):
            self._drop_fd()
        elif not (isinstance(exc, RemoteProtocolError) and self._stream.in_step):
            self._stale = True

    def _drop_fd(self) -> None:
        fd, self._fd = self._fd, None
        self._stream.reset()
        self._stale = False
        if fd is not None:
            try:
                anyio.notify_closing(fd)
            except Exception:  # no event loop, or nobody waiting
                pass
            os.close(fd)


async def _fair() -> None:
    """Every 16th operation ends with a schedule point (see aiotmc._fastpath)."""
    if schedule_point_due():
        await cancel_shielded_checkpoint()
