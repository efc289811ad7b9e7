"""The pyserial port: blocking pyserial calls in anyio worker threads (Windows; anywhere).

:class:`ThreadChannel` is a :class:`~aiotmc.transports._bytestream.ByteChannel` whose waits
run one short pyserial call in a worker thread (``anyio.to_thread.run_sync``, never
abandoned): a read waits at most ``poll`` seconds (or until the operation's deadline), a
write sends at most ~``poll`` seconds of line time. Whatever such a call moved is recorded
*in the channel* by the thread itself, so a cancellation (delivered when the call returns,
at most ``poll`` later) loses nothing: bytes read stay in the channel's inbox for the
resynchronisation to drain, and the count written is handed to the next ``write`` of the
same bytes (the half-sent message the transport completes). The transport is therefore
exactly as after a cancellation on the POSIX fd: in step, or stale and resynchronised.
"""

from __future__ import annotations

import errno
import importlib.util
import sys
import threading
from typing import TYPE_CHECKING, Any, Final

import anyio
from anyio.lowlevel import checkpoint_if_cancelled

from ..._exceptions import (
    ConnectError,
    PermissionDeniedError,
    ResourceBusyError,
    ResourceNotFoundError,
)
from ._settings import SerialSettings

if TYPE_CHECKING:
    import serial  # type: ignore[import-untyped]

__all__ = ["INSTALL_HINT", "PyserialPort", "ThreadChannel", "open_pyserial_port", "unavailable"]

INSTALL_HINT: Final = 'pyserial is not installed: pip install "aiotmc[serial]" (pyserial>=3.5)'
POLL: Final = 0.02  #: longest single pyserial call (s): the bound on a cancellation's delay
_READ_MAX: Final = 64 * 1024
_WRITE_STALL: Final = 2.0  #: a write that cannot progress this long (flow control): lost
_PARITY: Final = ("N", "O", "E", "M", "S")


def unavailable() -> str | None:
    """Why the pyserial backend cannot work here (pyserial missing), or None."""
    return None if importlib.util.find_spec("serial") else INSTALL_HINT


class ThreadChannel:
    """A :class:`~aiotmc.transports._bytestream.ByteChannel` over a pyserial port."""

    def __init__(self, port: serial.Serial, *, baud_rate: int, poll: float = POLL) -> None:
        self._port = port
        self._poll = poll
        self._chunk = max(256, int(baud_rate / 10 * poll))  # ~poll seconds of line time
        self._inbox = bytearray()
        self._error: OSError | None = None
        self._pending = b""  #: what ``write`` asked the next worker write to send
        self._written = 0  #: how much of it a finished worker write sent
        self._lock = threading.Lock()
        self._in_flight = False
        self.closed = False

    # -- ByteChannel -------------------------------------------------------------------------

    def read_into(self, view: memoryview) -> int:
        inbox = self._inbox
        if inbox:
            n = min(len(view), len(inbox))
            view[:n] = inbox[:n]
            del inbox[:n]
            return n
        self._check()
        raise BlockingIOError

    def write(self, view: memoryview) -> int:
        done = self._written
        if done:
            self._written = 0
            pending, self._pending = self._pending, b""
            if view[:done] == pending[:done]:  # the same bytes, resumed after a cancel
                return done
        self._check()
        self._pending = bytes(view[: self._chunk])
        raise BlockingIOError

    async def wait_readable(self) -> None:
        await checkpoint_if_cancelled()
        left = anyio.current_effective_deadline() - anyio.current_time()
        timeout = round(min(self._poll, max(0.0, left)), 3)  # (few distinct values)
        await anyio.to_thread.run_sync(self._read_worker, timeout)
        if self.closed:
            raise anyio.ClosedResourceError

    async def wait_writable(self) -> None:
        await checkpoint_if_cancelled()
        await anyio.to_thread.run_sync(self._write_worker)
        if self.closed:
            raise anyio.ClosedResourceError

    # -- the port's side ---------------------------------------------------------------------

    def discard(self, *, received: bool, unsent: bool) -> None:
        """Drop the inbox and the OS input queue and/or the output queue."""
        if received:
            self._inbox.clear()
            self._port.reset_input_buffer()
        if unsent:
            self._pending, self._written = b"", 0
            self._port.reset_output_buffer()

    def close(self) -> None:
        """Close now, or (a worker call in flight) cut it short and let it close."""
        with self._lock:
            self.closed = True
            if not self._in_flight:
                self._port.close()
                return
        for cancel in (self._port.cancel_read, self._port.cancel_write):
            try:
                cancel()
            except Exception:  # closing anyway
                pass

    # -- in the worker thread ----------------------------------------------------------------

    def _read_worker(self, timeout: float) -> None:
        if not self._enter():
            return
        port = self._port
        try:
            if port.timeout != timeout:
                port.timeout = timeout  # (on Windows a SetCommTimeouts: only when it changes)
            data = port.read(max(1, min(port.in_waiting, _READ_MAX)))
            if data and (more := min(port.in_waiting, _READ_MAX)):
                data += port.read(more)  # the rest of a burst: one hop, not two
            self._inbox += data
        except OSError as exc:  # SerialException is an OSError
            self._error = exc
        finally:
            self._leave()

    def _write_worker(self) -> None:
        if not self._enter():
            return
        try:
            if self._pending and not self._written:
                self._written = self._port.write(self._pending) or 0
        except OSError as exc:  # a write timeout too: flow control stalled the line
            self._error = exc
        finally:
            self._leave()

    def _enter(self) -> bool:
        with self._lock:
            if self.closed:
                return False
            self._in_flight = True
            return True

    def _leave(self) -> None:
        with self._lock:
            self._in_flight = False
            if self.closed:
                self._port.close()

    def _check(self) -> None:
        if self._error is not None:
            raise self._error
        if self.closed:
            raise anyio.ClosedResourceError


class PyserialPort:
    """A :class:`~aiotmc.transports.serial._transport.Port` over a pyserial ``Serial``."""

    __slots__ = ("channel", "serial")

    def __init__(self, port: serial.Serial, *, baud_rate: int) -> None:
        self.serial = port
        self.channel = ThreadChannel(port, baud_rate=baud_rate)

    def discard(self, *, received: bool, unsent: bool) -> None:
        """pyserial's ``reset_input_buffer`` / ``reset_output_buffer``."""
        self.channel.discard(received=received, unsent=unsent)

    async def send_break(self, duration: float) -> None:
        """``break_condition`` set, an anyio sleep, cleared."""
        self.serial.break_condition = True
        try:
            await anyio.sleep(duration)
        finally:
            if not self.channel.closed:
                try:
                    self.serial.break_condition = False
                except OSError:
                    pass

    def close(self) -> None:
        """Close the port (a worker call in flight is cut short)."""
        self.channel.close()


def pyserial_options(settings: SerialSettings) -> dict[str, Any]:
    """``serial.Serial`` keyword arguments for ``settings`` (ValueError if impossible)."""
    if settings.stop_bits != 1.0 and (settings.stop_bits == 1.5) != (settings.data_bits == 5):
        raise ValueError(
            f"{settings.stop_bits:g} stop bits with {settings.data_bits} data bits is not"
            " possible (1.5 needs 5 data bits, 2 needs 6-8)"
        )
    return {
        "baudrate": settings.baud_rate,
        "bytesize": settings.data_bits,
        "parity": _PARITY[settings.parity],
        "stopbits": settings.stop_bits if settings.stop_bits == 1.5 else int(settings.stop_bits),
        "xonxoff": settings.flow_control == 1,
        "rtscts": settings.flow_control == 2,
        "dsrdtr": settings.flow_control == 4,
    }


def open_pyserial_port(path: str, settings: SerialSettings) -> PyserialPort:
    """Open and configure ``path`` with pyserial; a typed error that says how to fix a
    failure (ImportError naming the extra when pyserial is missing)."""
    try:
        import serial
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    kwargs = pyserial_options(settings)
    try:
        port = serial.Serial(path, timeout=POLL, write_timeout=_WRITE_STALL, **kwargs)
    except serial.SerialException as exc:
        raise _open_error(path, exc) from None
    try:
        port.reset_input_buffer()  # nothing left over from a previous user
        port.reset_output_buffer()
    except BaseException:
        port.close()
        raise
    return PyserialPort(port, baud_rate=settings.baud_rate)


def _open_error(path: str, exc: OSError) -> Exception:
    text = str(exc)
    code = exc.errno

    if code == errno.ENOENT or "FileNotFoundError" in text:
        return ResourceNotFoundError(
            f"no serial port {path}: is the adapter plugged in? (`aiotmc list` shows ports)"
        )
    denied = "PermissionError" in text or "Access is denied" in text
    if code == errno.EBUSY or (denied and sys.platform == "win32"):  # Windows: in use
        return ResourceBusyError(f"serial port {path} is in use by another program")
    if code in (errno.EACCES, errno.EPERM):
        return PermissionDeniedError(
            f"no permission to open {path}: add your user to the group owning it (usually "
            "`sudo usermod -aG dialout $USER`, then log in again)"
        )
    if code in (errno.ENXIO, errno.ENODEV):
        return ResourceNotFoundError(f"serial port {path} has no device behind it")
    if "configure port" in text or code == errno.ENOTTY:
        return ConnectError(f"{path} is not a serial port (pyserial: {text})")
    return ConnectError(f"cannot open serial port {path}: {text}")
