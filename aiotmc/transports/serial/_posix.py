"""The POSIX port: a non-blocking tty fd configured with termios, waited on with anyio.

The port is opened ``O_NONBLOCK | O_NOCTTY``, configured raw (VMIN = 1, VTIME = 0, so a
read with nothing there raises ``EAGAIN`` and a read of 0 bytes means hang-up) and
waited on with ``anyio.wait_readable``/``wait_writable``: no thread, asyncio and trio.
"""

from __future__ import annotations

import errno
import fcntl
import os
import termios
from typing import Final

import anyio

from ..._exceptions import (
    ConnectError,
    PermissionDeniedError,
    ResourceBusyError,
    ResourceNotFoundError,
)
from ._settings import SerialSettings

__all__ = ["FdChannel", "FdPort", "open_fd_port", "open_port"]

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


class FdPort:
    """A :class:`~aiotmc.transports.serial._transport.Port` over a tty file descriptor."""

    __slots__ = ("channel", "closed", "fd")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.channel = FdChannel(fd)
        self.closed = False

    def discard(self, *, received: bool, unsent: bool) -> None:
        """Flush the kernel's input and/or output queue (``tcflush``)."""
        queue = (
            termios.TCIOFLUSH
            if received and unsent
            else termios.TCIFLUSH
            if received
            else termios.TCOFLUSH
        )
        try:
            termios.tcflush(self.fd, queue)
        except termios.error as exc:
            raise OSError(f"tcflush failed: {exc}") from None

    async def send_break(self, duration: float) -> None:
        """TIOCSBRK, an anyio sleep, TIOCCBRK."""
        fd = self.fd
        fcntl.ioctl(fd, _TIOCSBRK)
        try:
            await anyio.sleep(duration)
        finally:
            if not self.closed:  # the fd number may be reused after a close
                try:
                    fcntl.ioctl(fd, _TIOCCBRK)
                except OSError:
                    pass

    def close(self) -> None:
        """Wake whoever waits on the fd (ClosedResourceError) and close it."""
        self.closed = True
        try:
            anyio.notify_closing(self.fd)
        except Exception:  # no event loop, or nobody waiting
            pass
        os.close(self.fd)


def open_fd_port(path: str, settings: SerialSettings) -> FdPort:
    """:func:`open_port` as an :class:`FdPort`."""
    return FdPort(open_port(path, settings))
