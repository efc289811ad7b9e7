"""The front end: :class:`Instrument`, one per open resource.

Concurrency: every public operation holds the instrument's lock for the *whole* exchange
(write and read), so concurrent tasks never get each other's answers. :meth:`Instrument.lock`
exposes the same lock for multi-step transactions.

Timeouts: ``timeout=`` (per call, or the instrument default) bounds the exchange once the
lock is held. It becomes an absolute deadline handed to the transport, which opens a cancel
scope only around real waits and raises :class:`~aiotmc.WriteTimeout` or
:class:`~aiotmc.ReadTimeout` for the phase that ran out. Cancellation from the caller's own
scopes passes through untouched; either way the transport is left in step (see
docs/cancellation.md).
"""

from __future__ import annotations

import logging
import math
import struct
import sys
import time
from asyncio import AbstractEventLoop
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, TypeVar, overload

import anyio

from ._exceptions import (
    InstrumentError,
    ReadTimeout,
    RemoteProtocolError,
    ResourceBusyError,
    UnsupportedOperation,
)
from ._fastpath import cancel_maybe_pending, checkpoint_if_cancelled, current_time, running_loop
from ._lock import FifoLock
from ._log import io_log, log, show
from ._timeouts import check_timeout
from ._types import DEFAULT, Default, ServiceRequest, StatusByte
from ._values import (
    HEADER_FORMATS,
    binary_letter,
    numpy_dtype,
    parse_hp_header,
    resolve_converter,
    resolve_format,
)
from .operation import OperationTiming, PendingOperation, operation, wait_operation_complete
from .pipeline import Pipeline, pipeline_block
from .protocol import DEFAULT_MAX_MESSAGE_SIZE
from .protocol.ieee4882 import Identity, block_header, parse_idn
from .protocol.scpi import (
    format_values,
    join_compound,
    pack_binary,
    parse_values,
    split_compound,
    unpack_binary,
)
from .transports.base import (
    BytesLike,
    MessageTransport,
    RenMode,
    SupportsBlockingIO,
    SupportsDeviceLock,
    SupportsIndicatorPulse,
    SupportsReadTermination,
    SupportsReconnect,
    SupportsRemoteLocal,
    SupportsVendorMessages,
)

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream

    from .srq import SrqBroadcaster
    from .srq_poll import SrqPoller

__all__ = ["Instrument"]

T = TypeVar("T")
_MAX_ERRORS: Final = 100  # bound on SYST:ERR? reads in check_errors()
_DEBUG: Final = logging.DEBUG


class Instrument:
    """An open instrument. Create it with :func:`aiotmc.open`; no I/O happens in ``__init__``.

    Args:
        transport: the link (any :class:`~aiotmc.transports.base.MessageTransport`).
        timeout: default per-exchange timeout in seconds (``None``: wait forever, ``0``: at
            once); more than 1000 s raises :class:`ValueError` (seconds, not milliseconds).
        read_termination: stripped from the end of text responses (``None``: nothing is
            stripped; only on buses that end messages without a terminator).
        write_termination: appended to every command sent with :meth:`write`.
        encoding: text encoding of commands and responses.
        max_message_size: largest response accepted (bytes); larger ones raise
            :class:`~aiotmc.RemoteProtocolError` and are discarded.
    """

    def __init__(
        self,
        transport: MessageTransport,
        *,
        timeout: float | None = 10.0,
        read_termination: str | None = "\n",
        write_termination: str = "\n",
        encoding: str = "ascii",
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        self.transport = transport
        #: the transport, when it can work in a caller's thread (aiotmc.sync's fast path);
        #: its class must define the methods (not a mock or a delegating proxy)
        self._blocking_io = (
            transport
            if isinstance(transport, SupportsBlockingIO)
            and hasattr(type(transport), "exchange_blocking")
            else None
        )
        self._timeout = check_timeout(timeout)
        self._read_termination = read_termination or ""
        self._no_read_termination = read_termination is None
        #: Seconds to wait between writing a query and reading its answer (PyVISA's
        #: ``query_delay``); 0 for none.
        self.query_delay: float = 0.0
        self.write_termination = write_termination
        self.encoding = encoding
        self.max_message_size = max_message_size
        self._lock = FifoLock()
        self._transaction_task: int | None = None
        self._closed = False
        #: The status-byte poller publishing service requests where the transport has no
        #: SRQ channel (``aiotmc.open(..., srq_poll_interval=...)``), else ``None``.
        self.srq_poller: SrqPoller | None = None
        log.info("%s: open", transport.info.resource)

    # -- context management ------------------------------------------------------------------

    async def __aenter__(self) -> Instrument:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def timeout(self) -> float | None:
        """Default timeout in seconds (``None``: forever, ``0``: at once); values above
        1000 s or below 0 raise :class:`ValueError` (see docs/instrument.md, Timeouts)."""
        return self._timeout

    @timeout.setter
    def timeout(self, value: float | None) -> None:
        self._timeout = check_timeout(value)

    @property
    def read_termination(self) -> str | None:
        """Stripped from text responses; byte-stream transports also frame messages on it.

        ``None`` strips nothing; a raw socket, which needs a terminator to find the end of a
        message, refuses it with :class:`ValueError`.
        """
        return None if self._no_read_termination else self._read_termination

    @read_termination.setter
    def read_termination(self, value: str | None) -> None:
        if isinstance(self.transport, SupportsReadTermination):
            self.transport.set_read_termination((value or "").encode(self.encoding))
        self._read_termination = value or ""
        self._no_read_termination = value is None

    @property
    def resource(self) -> str:
        """Canonical resource name."""
        return self.transport.info.resource

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` ran."""
        return self._closed

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Instrument {self.resource} ({state})>"

    def lock(self) -> AbstractAsyncContextManager[None]:
        """Hold the instrument for a multi-step transaction (other tasks wait their turn).

        Calls made by the holding task inside the block go straight through; tasks it
        starts inside the block wait like any other task.
        """
        return self._transaction()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[None]:
        task = anyio.get_current_task().id
        if self._transaction_task == task:  # nested lock() in the same task
            yield
            return
        await checkpoint_if_cancelled()
        await self._lock.acquire()
        self._transaction_task = task
        try:
            yield
        finally:
            self._transaction_task = None
            self._lock.release()

    def _deadline(self, timeout: float | Default | None, loop: AbstractEventLoop | None) -> float:
        """``timeout`` (or the default) as a deadline; ``loop`` from ``running_loop()``."""
        if self._closed:
            raise anyio.ClosedResourceError(f"{self.resource} is closed")
        limit = self._timeout if timeout is DEFAULT else check_timeout(timeout)
        if limit is None:
            return math.inf
        return current_time(loop) + limit

    def _take_lock(self) -> bool:
        """Take the lock if it is free and no transaction holds it (no checkpoint)."""
        return self._transaction_task is None and self._lock.try_acquire()

    async def _acquire(self, loop: AbstractEventLoop | None) -> bool:
        """Checkpoint, then take the lock; False when this task's transaction holds it.

        ``loop``: :func:`running_loop`'s answer, looked up once by the caller.
        """
        if cancel_maybe_pending(loop):
            await checkpoint_if_cancelled()
        return self._take_lock() or await self._wait_for_lock()

    async def _wait_for_lock(self) -> bool:
        """The lock is taken: wait for it, unless this task's transaction holds it."""
        owner = self._transaction_task
        if owner is not None and owner == anyio.get_current_task().id:
            return False
        await self._lock.acquire()
        return True

    # -- text I/O --------------------------------------------------------------------------

    def _encode(self, command: str) -> bytes:
        return (command + self.write_termination).encode(self.encoding)

    def _decode(self, raw: bytes) -> str:
        try:
            text = raw.decode(self.encoding)
        except UnicodeDecodeError as exc:
            shown = bytes(raw[:80])
            more = "" if len(raw) <= 80 else f"... ({len(raw)} bytes)"
            raise RemoteProtocolError(
                f"answer is not valid {self.encoding} (byte {exc.start}): {shown!r}{more}"
            ) from exc
        term = self._read_termination
        if term and text.endswith(term):
            text = text[: -len(term)]
        return text

    async def write(self, command: str, *, timeout: float | Default | None = DEFAULT) -> None:
        """Send ``command`` followed by the write termination."""
        loop = running_loop()
        deadline = self._deadline(timeout, loop)
        data = self._encode(command)
        if io_log.isEnabledFor(_DEBUG):
            io_log.debug("%s write %s", self.resource, show(data))
        locked = await self._acquire(loop)
        try:
            await self.transport.send_message((data,), deadline=deadline)
        except Exception as exc:
            self._failed("write", exc)
            raise
        finally:
            if locked:
                self._lock.release()

    def _failed(self, what: str, exc: Exception) -> None:
        """Log a failed operation on the ``aiotmc`` logger (the caller re-raises it)."""
        log.info("%s: %s failed: %s: %s", self.resource, what, type(exc).__name__, exc)

    async def write_raw(
        self, data: BytesLike, *, end: bool = True, timeout: float | Default | None = DEFAULT
    ) -> None:
        """Send bytes as they are (no termination added)."""
        loop = running_loop()
        deadline = self._deadline(timeout, loop)
        if io_log.isEnabledFor(_DEBUG):
            io_log.debug("%s write %s%s", self.resource, show(data), "" if end else " (no END)")
        locked = await self._acquire(loop)
        try:
            await self.transport.send_message((data,), end=end, deadline=deadline)
        except Exception as exc:
            self._failed("write", exc)
            raise
        finally:
            if locked:
                self._lock.release()

    async def read(self, *, timeout: float | Default | None = DEFAULT) -> str:
        """Read one response message as text, read termination stripped."""
        return self._decode(await self.read_raw(timeout=timeout))

    async def read_raw(
        self, *, max_size: int | None = None, timeout: float | Default | None = DEFAULT
    ) -> bytes:
        """Read one response message as bytes, terminator included."""
        loop = running_loop()
        deadline = self._deadline(timeout, loop)
        locked = await self._acquire(loop)
        try:
            raw = await self.transport.receive_message(
                max_size=max_size or self.max_message_size, deadline=deadline
            )
        except Exception as exc:
            self._failed("read", exc)
            raise
        finally:
            if locked:
                self._lock.release()
        if io_log.isEnabledFor(_DEBUG):
            io_log.debug("%s read %s", self.resource, show(raw))
        return raw

    async def query(
        self,
        command: str,
        *,
        delay: float | None = None,
        timeout: float | Default | None = DEFAULT,
    ) -> str:
        """Write ``command`` and read its answer as text, in one locked exchange.

        ``delay``: seconds between the write and the read (default :attr:`query_delay`).
        """
        loop = running_loop()
        deadline = self._deadline(timeout, loop)
        data = self._encode(command)
        trace = io_log.isEnabledFor(_DEBUG)
        if trace:
            io_log.debug("%s write %s", self.resource, show(data))
        if cancel_maybe_pending(loop):  # _acquire() inlined: this is the hot path
            await checkpoint_if_cancelled()
        locked = self._take_lock() or await self._wait_for_lock()
        try:
            pause = self.query_delay if delay is None else delay
            if pause:
                await self.transport.send_message((data,), deadline=deadline)
                await anyio.sleep(pause)
                raw = await self.transport.receive_message(
                    max_size=self.max_message_size, deadline=deadline
                )
            else:
                raw = await self.transport.exchange(
                    data, max_size=self.max_message_size, deadline=deadline
                )
        except Exception as exc:
            self._failed(f"query {command!r}", exc)
            raise
        finally:
            if locked:
                self._lock.release()
        if trace:
            io_log.debug("%s read %s", self.resource, show(raw))
        return self._decode(raw)

    async def query_many(
        self, commands: Sequence[str], *, timeout: float | Default | None = DEFAULT
    ) -> list[str]:
        """Send several queries as one compound message (``A?;:B?``) and split the answer.

        This is the safe way to batch queries to one instrument: IEEE 488.2 discards a
        pending response when a new program message arrives, so queries are never sent
        ahead one by one.
        """
        if not commands:
            return []
        parts = split_compound(await self.query(join_compound(commands), timeout=timeout))
        if len(parts) != len(commands):
            raise RemoteProtocolError(
                f"{len(commands)} queries returned {len(parts)} answers: {parts!r}"
            )
        return parts

    def pipeline(self) -> AbstractAsyncContextManager[Pipeline]:
        """Hold the instrument for a block in which tasks sharing the yielded
        :class:`~aiotmc.pipeline.Pipeline` query at once, answers matched (HiSLIP
        overlapped mode; elsewhere :class:`UnsupportedOperation`)."""
        return pipeline_block(self)

    async def query_pipelined(
        self, commands: Sequence[str], *, timeout: float | Default | None = DEFAULT
    ) -> list[str]:
        """Send separate queries at once and collect their answers in order: one round
        trip for the lot (see :meth:`pipeline`)."""
        async with self.pipeline() as pipe:
            return await pipe.query_many(commands, timeout=timeout)

    async def identify(self, *, timeout: float | Default | None = DEFAULT) -> Identity:
        """``*IDN?`` parsed into manufacturer, model, serial and firmware."""
        return parse_idn(await self.query("*IDN?", timeout=timeout))

    # -- blocks and values -----------------------------------------------------------------

    @overload
    async def query_block(
        self,
        command: str,
        *,
        into: None = None,
        max_size: int | None = None,
        delay: float | None = None,
        timeout: float | Default | None = DEFAULT,
    ) -> bytearray: ...

    @overload
    async def query_block(
        self,
        command: str,
        *,
        into: bytearray | memoryview,
        max_size: int | None = None,
        delay: float | None = None,
        timeout: float | Default | None = DEFAULT,
    ) -> memoryview: ...

    async def query_block(
        self,
        command: str,
        *,
        into: bytearray | memoryview | None = None,
        max_size: int | None = None,
        delay: float | None = None,
        timeout: float | Default | None = DEFAULT,
    ) -> bytearray | memoryview:
        """Query and return the payload of the IEEE 488.2 block that answers it.

        Without ``into`` a new ``bytearray`` holds exactly the payload. With ``into`` (a
        writable buffer, e.g. reused between calls) the payload is read straight into it and
        a ``memoryview`` of the filled part is returned. ``delay``: as in :meth:`query`.
        """
        target = memoryview(into).cast("B") if into is not None else None
        loop = running_loop()
        deadline = self._deadline(timeout, loop)
        data = self._encode(command)
        trace = io_log.isEnabledFor(_DEBUG)
        if trace:
            io_log.debug("%s write %s", self.resource, show(data))
        pause = self.query_delay if delay is None else delay
        locked = await self._acquire(loop)
        try:
            await self.transport.send_message((data,), deadline=deadline)
            if pause:
                await anyio.sleep(pause)
            view = await self.transport.receive_block(
                target, max_size=max_size or self.max_message_size, deadline=deadline
            )
        except Exception as exc:
            self._failed(f"query {command!r}", exc)
            raise
        finally:
            if locked:
                self._lock.release()
        if trace:
            io_log.debug("%s read block %s", self.resource, show(view))
        if target is None:
            buffer = view.obj
            if isinstance(buffer, bytearray) and len(buffer) == len(view):
                return buffer
            return bytearray(view)
        return view

    async def query_values(
        self,
        command: str,
        *,
        converter: Callable[[str], T] | str = float,  # type: ignore[assignment]
        separator: str = ",",
        container: type[Any] = list,
        delay: float | None = None,
        timeout: float | Default | None = DEFAULT,
    ) -> Any:
        """Query a list of ASCII values (``1.0,2.5,...``); PyVISA's ``query_ascii_values``.

        ``converter``: a callable per item or a PyVISA letter (``"f"``/``"e"``/``"g"``:
        float, ``"d"``: int, ``"x"``: hex, ``"o"``: octal, ``"b"``: binary, ``"s"``: str).
        A bad converter raises :class:`ValueError`/:class:`TypeError` before any I/O.
        """
        parse = resolve_converter(converter)
        text = await self.query(command, delay=delay, timeout=timeout)
        return _contain(parse_values(text, converter=parse, separator=separator), container)

    query_ascii_values = query_values

    async def read_ascii_values(
        self,
        *,
        converter: Callable[[str], Any] | str = float,
        separator: str = ",",
        container: type[Any] = list,
        timeout: float | Default | None = DEFAULT,
    ) -> Any:
        """Read a list of ASCII values (after a write); arguments as :meth:`query_values`."""
        parse = resolve_converter(converter)
        text = await self.read(timeout=timeout)
        return _contain(parse_values(text, converter=parse, separator=separator), container)

    async def write_ascii_values(
        self,
        command: str,
        values: Iterable[Any],
        *,
        converter: Callable[[Any], str] | str | None = None,
        separator: str = ",",
        timeout: float | Default | None = DEFAULT,
    ) -> None:
        """Send ``command`` followed by ``values`` as text (``"VOLT:LIST 1.5,2"``).

        ``converter``: ``None`` writes each number's shortest exact form (``INF``/``NAN``
        as SCPI keywords); a PyVISA format letter (``"f"``, ``"e"``, ``"d"``, ``"x"``...)
        or a callable returning text formats each value. PyVISA's default is ``"f"``.
        """
        fmt = None if converter is None else resolve_format(converter)
        if fmt is None:
            text = format_values(values, separator=separator)
        elif isinstance(fmt, str):
            text = format_values(values, separator=separator, fmt=fmt)
        else:
            text = separator.join(fmt(value) for value in values)
        await self.write(
            f"{command}{text}" if command.endswith(" ") else f"{command} {text}", timeout=timeout
        )

    async def read_bytes(
        self,
        count: int,
        *,
        break_on_termchar: bool = False,
        timeout: float | Default | None = DEFAULT,
    ) -> bytes:
        """Read exactly ``count`` bytes, across response messages; PyVISA's ``read_bytes``.

        With ``break_on_termchar=True`` the first message end stops the read early. A
        message that would run past ``count`` raises :class:`~aiotmc.RemoteProtocolError`
        (its rest is discarded): messages are the unit every bus delivers.
        """
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        loop = running_loop()
        deadline = self._deadline(timeout, loop)
        out = bytearray()
        locked = await self._acquire(loop)
        try:
            while len(out) < count:
                out += await self.transport.receive_message(
                    max_size=count - len(out), deadline=deadline
                )
                if break_on_termchar:
                    break
        except Exception as exc:
            self._failed("read_bytes", exc)
            raise
        finally:
            if locked:
                self._lock.release()
        if io_log.isEnabledFor(_DEBUG):
            io_log.debug("%s read %s", self.resource, show(out))
        return bytes(out)

    async def query_binary_values(
        self,
        command: str,
        datatype: str | Any = "f",
        *,
        is_big_endian: bool = False,
        container: type[Any] = list,
        into: bytearray | memoryview | None = None,
        header_fmt: str = "ieee",
        expect_termination: bool = True,
        data_points: int | None = None,
        delay: float | None = None,
        timeout: float | Default | None = DEFAULT,
    ) -> Any:
        """Query a block and unpack it as ``datatype`` items.

        ``datatype``: a struct letter (``f``, ``h``...) or a numpy name (``"int16"``,
        ``"float32"``). ``container`` may be ``list``, ``tuple`` or ``numpy.ndarray``
        (zero-copy view when numpy is installed). ``header_fmt``: ``"ieee"`` (``#<n><len>``),
        ``"hp"`` (``#A`` + 2-byte length) or ``"empty"`` (raw data; ``data_points`` then
        says how many items to read, ``expect_termination`` whether a terminator follows).
        With ``data_points`` the answer must hold exactly that many items.
        """
        letter = self._check_values(datatype, header_fmt, data_points, into)
        if header_fmt != "ieee":
            async with self.lock():
                await self.write(command, timeout=timeout)
                pause = self.query_delay if delay is None else delay
                if pause:
                    await anyio.sleep(pause)
                payload: Any = await self._read_headed(
                    header_fmt, letter, is_big_endian, expect_termination, data_points, timeout
                )
        else:
            payload = await self.query_block(command, into=into, delay=delay, timeout=timeout)
        return _unpack(payload, letter, is_big_endian, container, data_points)

    async def read_binary_values(
        self,
        datatype: str | Any = "f",
        *,
        is_big_endian: bool = False,
        container: type[Any] = list,
        header_fmt: str = "ieee",
        expect_termination: bool = True,
        data_points: int | None = None,
        timeout: float | Default | None = DEFAULT,
    ) -> Any:
        """Read binary values (after a write); arguments as :meth:`query_binary_values`."""
        letter = self._check_values(datatype, header_fmt, data_points, None)
        if header_fmt == "ieee":
            loop = running_loop()
            deadline = self._deadline(timeout, loop)
            locked = await self._acquire(loop)
            try:
                payload: Any = await self.transport.receive_block(
                    None, max_size=self.max_message_size, deadline=deadline
                )
            except Exception as exc:
                self._failed("read_binary_values", exc)
                raise
            finally:
                if locked:
                    self._lock.release()
            if io_log.isEnabledFor(_DEBUG):
                io_log.debug("%s read block %s", self.resource, show(payload))
        else:
            payload = await self._read_headed(
                header_fmt, letter, is_big_endian, expect_termination, data_points, timeout
            )
        return _unpack(payload, letter, is_big_endian, container, data_points)

    @staticmethod
    def _check_values(
        datatype: object, header_fmt: str, data_points: int | None, into: object
    ) -> str:
        """Validate binary-value arguments before any I/O; the struct letter."""
        letter = binary_letter(datatype)
        if header_fmt not in HEADER_FORMATS:
            raise ValueError(f"header_fmt must be one of {HEADER_FORMATS}, got {header_fmt!r}")
        if data_points is not None and data_points < 0:
            raise ValueError(f"data_points must be >= 0, got {data_points}")
        if into is not None and header_fmt != "ieee":
            raise ValueError("into= is only supported with header_fmt='ieee'")
        return letter

    async def _read_headed(
        self,
        header_fmt: str,
        letter: str,
        big_endian: bool,
        expect_termination: bool,
        data_points: int | None,
        timeout: float | Default | None,
    ) -> bytes:
        """The payload of an ``hp`` or ``empty`` block (read under the caller's lock)."""
        term = len(self._read_termination) if expect_termination else 0
        size = struct.calcsize(letter)
        if header_fmt == "empty" and data_points is not None:
            data = await self.read_bytes(data_points * size + term, timeout=timeout)
            return data[: len(data) - term]
        data = await self.read_raw(timeout=timeout)
        if header_fmt == "empty":
            return (
                data[: len(data) - term]
                if term and data.endswith(self._read_termination.encode(self.encoding))
                else data
            )
        length = parse_hp_header(data, big_endian=big_endian)
        total = 4 + length + term
        if total > self.max_message_size:
            raise RemoteProtocolError(f"HP block of {length} bytes exceeds max_message_size")
        if len(data) < total:  # a payload byte equal to the terminator ended a message
            data += await self.read_bytes(total - len(data), timeout=timeout)
        return data[4 : 4 + length]

    async def write_binary_values(
        self,
        command: str,
        values: Iterable[float | int] | Any,
        datatype: str | Any = "f",
        *,
        is_big_endian: bool = False,
        timeout: float | Default | None = DEFAULT,
    ) -> None:
        """Send ``command`` followed by ``values`` as a definite-length block.

        Header, payload and termination go out as separate buffers (no concatenation);
        numpy arrays are sent without copying when their byte order already matches.
        ``datatype``: a struct letter or a numpy name (``"int16"``).
        """
        letter = binary_letter(datatype)
        payload: BytesLike
        if hasattr(values, "__array__") and hasattr(values, "dtype"):
            numpy = sys.modules["numpy"]
            dtype = numpy.dtype(numpy_dtype(letter)).newbyteorder(">" if is_big_endian else "<")
            array = numpy.ascontiguousarray(values, dtype=dtype)
            payload = memoryview(array).cast("B")
        else:
            payload = pack_binary(list(values), letter, big_endian=is_big_endian)
        parts: tuple[BytesLike, ...] = (
            command.encode(self.encoding),
            block_header(len(payload)),
            payload,
            self.write_termination.encode(self.encoding),
        )
        loop = running_loop()
        deadline = self._deadline(timeout, loop)
        if io_log.isEnabledFor(_DEBUG):
            io_log.debug("%s write %s + block %s", self.resource, show(parts[0]), show(payload))
        locked = await self._acquire(loop)
        try:
            await self.transport.send_message(parts, deadline=deadline)
        except Exception as exc:
            self._failed(f"write {command!r} + block", exc)
            raise
        finally:
            if locked:
                self._lock.release()

    # -- status, clear, trigger, errors -----------------------------------------------------

    async def read_stb(self, *, timeout: float | Default | None = DEFAULT) -> StatusByte:
        """Read the status byte: serial poll where the bus has one, ``*STB?`` otherwise."""
        if self.transport.info.capabilities.read_stb:
            loop = running_loop()
            deadline = self._deadline(timeout, loop)
            locked = await self._acquire(loop)
            try:
                return StatusByte(await self.transport.read_stb(deadline=deadline))
            finally:
                if locked:
                    self._lock.release()
        return StatusByte(int(await self.query("*STB?", timeout=timeout)))

    async def stb(self, *, timeout: float | Default | None = DEFAULT) -> StatusByte:
        """PyVISA's ``stb`` property: reading it is I/O, so here it is a coroutine
        (``await inst.stb()``); the same as :meth:`read_stb`."""
        return await self.read_stb(timeout=timeout)

    async def clear(self, *, timeout: float | Default | None = DEFAULT) -> None:
        """Device clear (bus-level where available; a raw socket reconnects)."""
        loop = running_loop()
        deadline = self._deadline(timeout, loop)
        locked = await self._acquire(loop)
        log.info("%s: device clear", self.resource)
        try:
            await self.transport.clear(deadline=deadline)
        except Exception as exc:
            self._failed("clear", exc)
            raise
        finally:
            if locked:
                self._lock.release()

    async def trigger(self, *, timeout: float | Default | None = DEFAULT) -> None:
        """Trigger: bus-level where available, ``*TRG`` otherwise."""
        if self.transport.info.capabilities.trigger:
            loop = running_loop()
            deadline = self._deadline(timeout, loop)
            locked = await self._acquire(loop)
            try:
                await self.transport.trigger(deadline=deadline)
            finally:
                if locked:
                    self._lock.release()
        else:
            await self.write("*TRG", timeout=timeout)

    async def errors(self, *, timeout: float | Default | None = DEFAULT) -> list[InstrumentError]:
        """Drain the SCPI error queue (``SYST:ERR?`` until ``0``); at most 100 entries."""
        found: list[InstrumentError] = []
        async with self.lock():
            for _ in range(_MAX_ERRORS):
                text = await self.query("SYST:ERR?", timeout=timeout)
                code_text, _, message = text.partition(",")
                try:
                    code = int(code_text.strip())
                except ValueError:
                    raise RemoteProtocolError(f"unparsable SYST:ERR? answer {text!r}") from None
                if code == 0:
                    break
                found.append(
                    InstrumentError(code, message.strip().strip('"'), resource=self.resource)
                )
        return found

    async def check_errors(self, *, timeout: float | Default | None = DEFAULT) -> None:
        """Raise the first queued instrument error (all of them in ``.errors``), if any."""
        found = await self.errors(timeout=timeout)
        if found:
            first = found[0]
            first.errors = found  # type: ignore[attr-defined]
            raise first

    # -- remote / local, indicator ------------------------------------------------------------

    async def control_ren(
        self, mode: RenMode | int, *, timeout: float | Default | None = DEFAULT
    ) -> None:
        """Remote-enable operations, PyVISA's ``control_ren``: ``mode`` is a
        :class:`~aiotmc.RenMode` or its VISA number (1: remote, 2: local, 4: lockout...).

        Raises :class:`~aiotmc.UnsupportedOperation` where the bus or the device has no
        remote/local control (raw sockets, USBTMC devices without USB488 REN_CONTROL).
        """
        ren = RenMode(mode)
        transport = self.transport
        if not (
            isinstance(transport, SupportsRemoteLocal) and transport.info.capabilities.remote_local
        ):
            raise UnsupportedOperation(f"{self.resource}: no remote/local control on this link")
        loop = running_loop()
        deadline = self._deadline(timeout, loop)
        locked = await self._acquire(loop)
        try:
            await transport.control_ren(ren, deadline=deadline)
        finally:
            if locked:
                self._lock.release()

    async def remote(
        self, *, lockout: bool = False, timeout: float | Default | None = DEFAULT
    ) -> None:
        """Put the instrument in remote (``lockout=True``: also lock its front panel)."""
        mode = RenMode.ASSERT_ADDRESS_LLO if lockout else RenMode.ASSERT_ADDRESS
        await self.control_ren(mode, timeout=timeout)

    async def local(self, *, timeout: float | Default | None = DEFAULT) -> None:
        """Return the instrument to local (go to local, then release remote enable)."""
        await self.control_ren(RenMode.DEASSERT_GTL, timeout=timeout)

    async def local_lockout(self, *, timeout: float | Default | None = DEFAULT) -> None:
        """Remote with the front panel locked; the same as ``remote(lockout=True)``."""
        await self.remote(lockout=True, timeout=timeout)

    async def indicator_pulse(self, *, timeout: float | Default | None = DEFAULT) -> None:
        """Blink the instrument's activity indicator to find it on the bench (USBTMC).

        Raises :class:`~aiotmc.UnsupportedOperation` where the bus or device cannot.
        """
        transport = self.transport
        if not (
            isinstance(transport, SupportsIndicatorPulse)
            and transport.info.capabilities.indicator_pulse
        ):
            raise UnsupportedOperation(f"{self.resource}: no indicator pulse on this link")
        loop = running_loop()
        deadline = self._deadline(timeout, loop)
        locked = await self._acquire(loop)
        try:
            await transport.indicator_pulse(deadline=deadline)
        finally:
            if locked:
                self._lock.release()

    # -- locks across clients (VXI-11, HiSLIP) ---------------------------------------------

    def _device_lock(self) -> SupportsDeviceLock:
        transport = self.transport
        if not (isinstance(transport, SupportsDeviceLock) and transport.info.capabilities.locking):
            raise UnsupportedOperation(f"{self.resource}: no locking across clients on this link")
        return transport

    async def lock_excl(
        self, lock_timeout: float = 0.0, *, timeout: float | Default | None = DEFAULT
    ) -> None:
        """Lock the instrument against every other client (PyVISA's ``lock_excl``).

        Waits up to ``lock_timeout`` seconds for another client's lock to go; raises
        :class:`~aiotmc.ResourceBusyError` when it is not granted. This is a lock in the
        instrument (VXI-11 device_lock, HiSLIP exclusive lock); :meth:`lock` is the
        in-process one that keeps this program's own tasks apart.
        """
        if not lock_timeout >= 0:
            raise ValueError(f"lock_timeout must be >= 0 seconds, got {lock_timeout!r}")
        transport = self._device_lock()
        loop = running_loop()
        deadline = self._deadline(timeout, loop) + lock_timeout
        locked = await self._acquire(loop)
        try:
            granted = await transport.lock(timeout=lock_timeout, deadline=deadline)
        finally:
            if locked:
                self._lock.release()
        if granted is False:
            raise ResourceBusyError(
                f"{self.resource}: locked by another client for more than {lock_timeout} s"
            )

    async def unlock(self, *, timeout: float | Default | None = DEFAULT) -> None:
        """Release the lock taken with :meth:`lock_excl`."""
        transport = self._device_lock()
        loop = running_loop()
        deadline = self._deadline(timeout, loop)
        locked = await self._acquire(loop)
        try:
            await transport.unlock(deadline=deadline)
        finally:
            if locked:
                self._lock.release()

    @asynccontextmanager
    async def lock_context(
        self, lock_timeout: float = 0.0, *, timeout: float | Default | None = DEFAULT
    ) -> AsyncIterator[None]:
        """``async with inst.lock_context(5):`` the instrument locked against other
        clients for the block (PyVISA's ``lock_context``); unlocked even when cancelled."""
        await self.lock_excl(lock_timeout, timeout=timeout)
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True):
                await self.unlock(timeout=timeout)

    # -- vendor-specific messages (USBTMC) ---------------------------------------------------

    def _vendor(self) -> SupportsVendorMessages:
        transport = self.transport
        if not (
            isinstance(transport, SupportsVendorMessages)
            and transport.info.capabilities.vendor_messages
        ):
            raise UnsupportedOperation(f"{self.resource}: no vendor-specific messages on this link")
        return transport

    async def vendor_write(
        self, data: BytesLike, *, timeout: float | Default | None = DEFAULT
    ) -> None:
        """Send ``data`` as one USBTMC VENDOR_SPECIFIC_OUT message (vendor tools' channel)."""
        transport = self._vendor()
        loop = running_loop()
        deadline = self._deadline(timeout, loop)
        locked = await self._acquire(loop)
        try:
            await transport.vendor_write(data, deadline=deadline)
        finally:
            if locked:
                self._lock.release()

    async def vendor_read(
        self, max_size: int, *, timeout: float | Default | None = DEFAULT
    ) -> bytes:
        """Read one USBTMC VENDOR_SPECIFIC_IN message of at most ``max_size`` bytes."""
        transport = self._vendor()
        loop = running_loop()
        deadline = self._deadline(timeout, loop)
        locked = await self._acquire(loop)
        try:
            return await transport.vendor_read(max_size, deadline=deadline)
        finally:
            if locked:
                self._lock.release()

    async def control_transfer(
        self,
        request_type: int,
        request: int,
        value: int = 0,
        index: int = 0,
        data_or_length: BytesLike | int = 0,
        *,
        timeout: float | Default | None = DEFAULT,
    ) -> bytes:
        """A USB class or vendor control transfer on the default endpoint.

        ``request_type`` is bmRequestType: device-to-host (bit 7 set) reads up to
        ``data_or_length`` bytes and returns them; host-to-device sends the bytes in
        ``data_or_length`` and returns ``b""``. Standard requests and data stages over
        4096 bytes raise :class:`~aiotmc.LocalProtocolError` before anything is sent.
        """
        transport = self._vendor()
        loop = running_loop()
        deadline = self._deadline(timeout, loop)
        locked = await self._acquire(loop)
        try:
            return await transport.control_transfer(
                request_type, request, value, index, data_or_length, deadline=deadline
            )
        finally:
            if locked:
                self._lock.release()

    # -- the blocking fast path (aiotmc.sync) --------------------------------------------------
    # Called from a thread other than the event loop's. Each returns None (write: False)
    # when the path does not apply (transport without SupportsBlockingIO, lock taken or
    # contended, link not in step, query delay): the caller then awaits the async method,
    # whose result is the same. The lock is taken and released as by the async methods.

    def _blocking_claim(
        self, timeout: float | Default | None
    ) -> tuple[SupportsBlockingIO, float] | None:
        """The transport and a ``time.monotonic()`` deadline, or None when the path does
        not apply; the caller then takes the lock with ``try_acquire`` right before its
        ``try`` (nothing between them can raise but an interrupt)."""
        io = self._blocking_io
        if io is None or self._closed or self._lock.contended:
            return None
        limit = self._timeout if timeout is DEFAULT else check_timeout(timeout)
        return io, math.inf if limit is None else time.monotonic() + limit

    def _query_blocking(
        self,
        command: str,
        *,
        timeout: float | Default | None = DEFAULT,
        wake: Callable[[Callable[[], None]], object],
    ) -> str | None:
        """:meth:`query` in the calling thread; ``wake`` schedules a call in the event
        loop's thread (``call_soon_threadsafe``), to hand the lock to waiting tasks."""
        if self.query_delay:
            return None
        claim = self._blocking_claim(timeout)
        if claim is None:
            return None
        io, deadline = claim
        data = self._encode(command)
        if not self._lock.try_acquire():
            return None
        try:
            raw = io.exchange_blocking(data, max_size=self.max_message_size, deadline=deadline)
        except Exception as exc:
            if io_log.isEnabledFor(_DEBUG):
                io_log.debug("%s write %s", self.resource, show(data))
            self._failed(f"query {command!r}", exc)
            raise
        finally:
            self._lock.release_from_thread(wake)
        if raw is None:
            return None
        if io_log.isEnabledFor(_DEBUG):
            io_log.debug("%s write %s", self.resource, show(data))
            io_log.debug("%s read %s", self.resource, show(raw))
        return self._decode(raw)

    def _write_raw_blocking(
        self,
        data: BytesLike,
        *,
        end: bool = True,
        timeout: float | Default | None = DEFAULT,
        wake: Callable[[Callable[[], None]], object],
    ) -> bool:
        """:meth:`write_raw` in the calling thread (see :meth:`_query_blocking`)."""
        claim = self._blocking_claim(timeout)
        if claim is None:
            return False
        io, deadline = claim
        if not self._lock.try_acquire():
            return False
        try:
            done = io.send_blocking(data, end=end, deadline=deadline)
        except Exception as exc:
            self._failed("write", exc)
            raise
        finally:
            self._lock.release_from_thread(wake)
        if done and io_log.isEnabledFor(_DEBUG):
            io_log.debug("%s write %s%s", self.resource, show(data), "" if end else " (no END)")
        return done

    def _read_raw_blocking(
        self,
        *,
        max_size: int | None = None,
        timeout: float | Default | None = DEFAULT,
        wake: Callable[[Callable[[], None]], object],
    ) -> bytes | None:
        """:meth:`read_raw` in the calling thread (see :meth:`_query_blocking`)."""
        claim = self._blocking_claim(timeout)
        if claim is None:
            return None
        io, deadline = claim
        if not self._lock.try_acquire():
            return None
        try:
            raw = io.receive_blocking(max_size=max_size or self.max_message_size, deadline=deadline)
        except Exception as exc:
            self._failed("read", exc)
            raise
        finally:
            self._lock.release_from_thread(wake)
        if raw is not None and io_log.isEnabledFor(_DEBUG):
            io_log.debug("%s read %s", self.resource, show(raw))
        return raw

    # -- service requests ------------------------------------------------------------------

    def _srq(self) -> SrqBroadcaster:
        srq = self.transport.srq
        if srq is None and self.srq_poller is not None:
            srq = self.srq_poller.broadcaster
        if srq is None:
            raise UnsupportedOperation(
                f"{self.resource}: this transport has no service-request channel; "
                "open it with aiotmc.open(..., srq_poll_interval=0.05) to poll the "
                "status byte instead"
            )
        return srq

    def service_requests(
        self, *, buffer: int = 64
    ) -> AbstractAsyncContextManager[MemoryObjectReceiveStream[ServiceRequest]]:
        """Subscribe to service requests: ``async with inst.service_requests() as events:``.

        Events published while the subscriber's buffer is full are dropped for that
        subscriber only (the listener never blocks).
        """
        return self._srq().subscribe(buffer=buffer)

    async def wait_for_srq(self, *, timeout: float | Default | None = DEFAULT) -> ServiceRequest:
        """Wait for the next service request (subscribe first if it may already be due)."""
        limit = self._timeout if timeout is DEFAULT else check_timeout(timeout)
        async with self.service_requests(buffer=1) as events:
            with anyio.move_on_after(limit if limit is not None else float("inf")) as scope:
                event = await events.receive()
                log.debug("%s: service request %r", self.resource, event)
                return event
        assert scope.cancelled_caught
        raise ReadTimeout(f"{self.resource}: no service request within {limit} s")

    def operation(
        self, commands: str | Sequence[str] = (), *, timeout: float | Default | None = DEFAULT
    ) -> AbstractAsyncContextManager[PendingOperation]:
        """Start an operation (``commands`` + ``*OPC``); completion is awaited by SRQ where
        available, ``*OPC?`` otherwise: ``async with inst.operation(":SINGle") as op:``.

        See :func:`aiotmc.operation.operation` for the sequence and exceptions.
        """
        return operation(
            self, commands if isinstance(commands, str) else list(commands), timeout=timeout
        )

    async def wait_operation_complete(
        self, commands: str | Sequence[str] = (), *, timeout: float | Default | None = DEFAULT
    ) -> OperationTiming:
        """Send ``commands`` + ``*OPC`` and wait for completion (SRQ, else ``*OPC?``).

        See :func:`aiotmc.operation.wait_operation_complete`.
        """
        return await wait_operation_complete(
            self, commands if isinstance(commands, str) else list(commands), timeout=timeout
        )

    # -- reconnecting ------------------------------------------------------------------------

    async def reconnect(self, *, timeout: float | Default | None = DEFAULT) -> None:
        """Replace the link now: a raw socket connects again, a USB device is reopened by
        its resource name and device-cleared, an in-process simulator has nothing to do.

        Waits for the exchange in progress (the lock) like any operation; an exchange that
        was on the wire when the link dropped has already failed and is never replayed.
        Timeout, terminations, encoding and ``service_requests()`` subscriptions are kept
        (they live here and in the transport, which stays the same object). Raises
        :class:`~aiotmc.UnsupportedOperation` when the transport cannot reconnect,
        :class:`~aiotmc.ConnectError` / :class:`~aiotmc.ConnectTimeout` when the
        instrument cannot be reached (the link stays down). See docs/reliability.md; for
        automatic reconnection open with ``aiotmc.open(..., reconnect=True)``.
        """
        transport = self.transport
        if not isinstance(transport, SupportsReconnect):
            raise UnsupportedOperation(f"{self.resource}: this transport cannot reconnect")
        loop = running_loop()
        deadline = self._deadline(timeout, loop)
        locked = await self._acquire(loop)
        log.info("%s: reconnecting", self.resource)
        try:
            await transport.reconnect(deadline=deadline)
            if isinstance(transport, SupportsReadTermination):
                # the framing terminator is the one set here
                transport.set_read_termination(self._read_termination.encode(self.encoding))
        finally:
            if locked:
                self._lock.release()

    # -- closing -----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the link; idempotent; completes even when cancelled."""
        if self._closed:
            return
        self._closed = True
        log.info("%s: close", self.resource)
        with anyio.CancelScope(shield=True):
            await self.transport.aclose()


def _contain(values: list[Any], container: type[Any]) -> Any:
    """``values`` in ``container`` (``list`` as is)."""
    if container is list:
        return values
    if container.__module__ == "numpy" and container.__name__ == "ndarray":
        return sys.modules["numpy"].asarray(values)
    return container(values)


def _unpack(
    payload: Any, letter: str, big_endian: bool, container: type[Any], data_points: int | None
) -> Any:
    """Unpack a block payload into ``container``; checks ``data_points`` if given."""
    size = struct.calcsize(letter)
    if data_points is not None and len(payload) != data_points * size:
        raise RemoteProtocolError(
            f"expected {data_points} {letter!r} items ({data_points * size} bytes), "
            f"got {len(payload)} bytes"
        )
    if container.__module__ == "numpy" and container.__name__ == "ndarray":
        numpy = sys.modules["numpy"]
        dtype = numpy.dtype(numpy_dtype(letter)).newbyteorder(">" if big_endian else "<")
        if len(payload) % size:
            raise RemoteProtocolError(
                f"block of {len(payload)} bytes is not a whole number of {size}-byte items"
            )
        return numpy.frombuffer(payload, dtype=dtype)
    values = unpack_binary(payload, letter, big_endian=big_endian)
    return values if container is list else container(values)
