"""One PyVISA session: an :class:`aiotmc.sync.SyncInstrument` plus the VISA state PyVISA
keeps in attributes (timeout in milliseconds, termination character, END on write).

VISA reads ``count`` bytes at a time; aiotmc reads whole messages. The session keeps the
rest of a message longer than ``count`` and hands it out on the next reads
(``VI_SUCCESS_MAX_CNT`` until the last piece, which ends with ``VI_SUCCESS`` or
``VI_SUCCESS_TERM_CHAR``), so PyVISA's chunked ``read_raw`` loop gets every message whole.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Final, TypeVar

import anyio
from pyvisa import constants
from pyvisa.constants import ResourceAttribute as A
from pyvisa.constants import StatusCode

from aiotmc._timeouts import MAX_TIMEOUT
from aiotmc.sync import SyncInstrument
from aiotmc.sync._portal import portal_for

from ._events import SessionEvents

__all__ = ["MAX_MESSAGE_SIZE", "Session", "ms_to_seconds", "seconds_to_ms"]

T = TypeVar("T")

#: Largest message a session accepts (1 GiB); ``library.max_message_size`` changes it for
#: sessions opened afterwards. aiotmc never allocates this up front.
MAX_MESSAGE_SIZE: Final = 1 << 30
_INFINITE: Final = constants.VI_TMO_INFINITE
_LF: Final = 0x0A


def ms_to_seconds(value: int | float | None) -> float | None:
    """A VISA timeout (ms, ``VI_TMO_INFINITE``/``None``: forever) in seconds."""
    if value is None or value >= _INFINITE:
        return None
    return max(0.0, float(value)) / 1000.0


def seconds_to_ms(value: float | None) -> int:
    """Seconds as a VISA timeout (``None``: ``VI_TMO_INFINITE``)."""
    return _INFINITE if value is None else round(value * 1000)


class Session:
    """An open resource and its VISA attributes (one per ``open_resource``)."""

    def __init__(self, instrument: SyncInstrument, info: Any, timeout_ms: int) -> None:
        self.instrument = instrument
        self.info = info  #: PyVISA's ResourceInfo for the name
        self.events = SessionEvents(instrument)
        self._pending = memoryview(b"")  # the unread rest of the current message
        self._pending_status = StatusCode.success
        self._read_lock = threading.Lock()
        self.termchar = _LF
        self.termchar_enabled = False
        self.send_end = True
        self._long_timeout: float | None = None  # seconds, when above aiotmc's limit
        self.timeout_ms = timeout_ms

    # -- timeout --------------------------------------------------------------------------

    @property
    def timeout_ms(self) -> int:
        """VI_ATTR_TMO_VALUE."""
        if self._long_timeout is not None:
            return seconds_to_ms(self._long_timeout)
        return seconds_to_ms(self.instrument.timeout)

    @timeout_ms.setter
    def timeout_ms(self, value: int) -> None:
        seconds = ms_to_seconds(value)
        if seconds is not None and seconds > MAX_TIMEOUT:
            # unambiguous here (VISA counts milliseconds): bound it outside aiotmc's check
            self._long_timeout = seconds
            self.instrument.timeout = None
        else:
            self._long_timeout = None
            self.instrument.timeout = seconds

    def call(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``method(*args, **kwargs)`` of the :class:`SyncInstrument`, under a timeout above
        aiotmc's 1000 s limit when VI_ATTR_TMO_VALUE holds one."""
        limit = self._long_timeout
        if limit is None:
            return method(*args, **kwargs)
        async_method = getattr(self.instrument.instrument, method.__name__)

        async def bounded() -> T:
            with anyio.fail_after(limit):
                result: T = await async_method(*args, **kwargs)
                return result

        return portal_for().run(bounded)

    # -- termination ----------------------------------------------------------------------

    def set_termchar(self, char: int | None = None, enabled: bool | None = None) -> None:
        """VI_ATTR_TERMCHAR / VI_ATTR_TERMCHAR_EN: where byte-stream buses end a message.

        Disabling it keeps the current framing on a bus that needs a terminator (raw
        socket, serial): aiotmc never ends a message inside an IEEE 488.2 block anyway.
        """
        if char is not None:
            if not 0 <= char <= 0xFF:
                raise ValueError(f"VI_ATTR_TERMCHAR must be a byte, got {char}")
            self.termchar = char
        if enabled is not None:
            self.termchar_enabled = enabled
        if self.termchar_enabled:
            self.instrument.read_termination = chr(self.termchar)
        else:
            try:
                self.instrument.read_termination = None
            except ValueError:  # a raw socket needs a terminator: keep framing on it
                pass

    # -- I/O ------------------------------------------------------------------------------

    def write(self, data: bytes) -> tuple[int, StatusCode]:
        """viWrite: one message (END with its last byte unless VI_ATTR_SEND_END_EN is off)."""
        self._pending = memoryview(b"")  # a new command discards an unread answer
        self.call(self.instrument.write_raw, data, end=self.send_end)
        return len(data), StatusCode.success

    def read(self, count: int, max_size: int) -> tuple[bytes, StatusCode]:
        """viRead: up to ``count`` bytes of the current (or next) message."""
        with self._read_lock:
            pending = self._pending
            if not pending:
                message = self.call(self.instrument.read_raw, max_size=max_size)
                if len(message) <= count:  # the common case: no copy, no bookkeeping
                    return message, self._end_status(message)
                pending = memoryview(message)
                self._pending_status = self._end_status(message)
            if len(pending) <= count:
                self._pending = memoryview(b"")
                return bytes(pending), self._pending_status
            self._pending = pending[count:]
            return bytes(pending[:count]), StatusCode.success_max_count_read

    def _end_status(self, message: bytes) -> StatusCode:
        if self.termchar_enabled and message and message[-1] == self.termchar:
            return StatusCode.success_termination_character_read
        return StatusCode.success

    def discard_input(self) -> None:
        """Drop the unread rest of the current message (viFlush, viClear)."""
        with self._read_lock:
            self._pending = memoryview(b"")

    def clear(self) -> None:
        """viClear: device clear, and what was buffered for reading is gone."""
        self.discard_input()
        self.call(self.instrument.clear)

    def close(self) -> None:
        """Stop the events and close the link."""
        try:
            self.events.close()
        finally:
            self.instrument.close()

    # -- attributes -----------------------------------------------------------------------

    def get_attribute(self, attribute: int) -> Any:
        """The attribute's value; :class:`KeyError` when this backend does not keep it."""
        return self._getters[attribute](self)

    def set_attribute(self, attribute: int, value: Any) -> None:
        """Set the attribute; :class:`KeyError` when unsupported, ValueError when refused."""
        self._setters[attribute](self, value)

    def _get_state(self) -> int:
        return constants.AccessModes.no_lock

    _getters: Final[dict[int, Callable[[Session], Any]]] = {
        A.timeout_value: lambda s: s.timeout_ms,
        A.termchar: lambda s: s.termchar,
        A.termchar_enabled: lambda s: s.termchar_enabled,
        A.send_end_enabled: lambda s: s.send_end,
        A.suppress_end_enabled: lambda s: False,
        A.io_prot: lambda s: constants.IOProtocol.normal,
        A.resource_name: lambda s: s.info.resource_name,
        A.resource_class: lambda s: s.info.resource_class,
        A.interface_type: lambda s: s.info.interface_type,
        A.interface_number: lambda s: s.info.interface_board_number,
        A.resource_manufacturer_name: lambda s: "aiotmc",
        A.resource_lock_state: _get_state,
        A.max_queue_length: lambda s: s.events.queue_length,
    }

    def _set_queue_length(self, value: int) -> None:
        if int(value) < 1:
            raise ValueError("VI_ATTR_MAX_QUEUE_LENGTH must be >= 1")
        self.events.queue_length = int(value)

    def _set_send_end(self, value: Any) -> None:
        self.send_end = bool(value)

    def _set_io_prot(self, value: Any) -> None:
        if value != constants.IOProtocol.normal:
            raise ValueError("only the normal I/O protocol is supported")

    _setters: Final[dict[int, Callable[[Session, Any], None]]] = {
        A.timeout_value: lambda s, v: setattr(s, "timeout_ms", v),
        A.termchar: lambda s, v: s.set_termchar(char=int(v)),
        A.termchar_enabled: lambda s, v: s.set_termchar(enabled=bool(v)),
        A.send_end_enabled: _set_send_end,
        A.io_prot: _set_io_prot,
        A.max_queue_length: _set_queue_length,
    }
