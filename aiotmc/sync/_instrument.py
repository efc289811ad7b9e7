""":class:`SyncInstrument`: the blocking face of an :class:`~aiotmc.Instrument`.

Each method runs the async one as a task of the :mod:`aiotmc.sync` event-loop thread and
waits for it; arguments, results, exceptions and timeouts (seconds) are the async ones.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from .._exceptions import InstrumentError
from .._types import DEFAULT, BytesLike, Default, ServiceRequest, StatusByte
from ..instrument import Instrument
from ..operation import OperationTiming, PendingOperation
from ..pipeline import Pipeline
from ..protocol.ieee4882 import Identity
from ..transports.base import MessageTransport, RenMode
from ._lock import LockSession
from ._portal import Portal
from ._srq import ServiceRequests

if TYPE_CHECKING:
    from ..srq_poll import SrqPoller

__all__ = ["SyncInstrument", "SyncPendingOperation"]

P = ParamSpec("P")
T = TypeVar("T")


class SyncPendingOperation:
    """An operation started by :meth:`SyncInstrument.operation`; :meth:`wait` for it."""

    def __init__(self, portal: Portal, pending: PendingOperation) -> None:
        self._portal = portal
        self.pending = pending

    @property
    def uses_srq(self) -> bool:
        """True when completion is awaited by service request (False: ``*OPC?``)."""
        return self.pending.uses_srq

    @property
    def timing(self) -> OperationTiming | None:
        """Set once :meth:`wait` returned."""
        return self.pending.timing

    def wait(self) -> OperationTiming:
        """Wait until the operation completes (by SRQ where available, else ``*OPC?``)."""
        return self._portal.run(self.pending.wait)


class SyncInstrument:
    """An open instrument for blocking code; create it with :func:`aiotmc.sync.open`.

    ``instrument`` is the async :class:`~aiotmc.Instrument` it drives (owned by the
    event-loop thread: use it there only). Methods may be called from any thread; a
    Ctrl-C while one waits cancels that operation (the link recovers as after an async
    cancellation) before ``KeyboardInterrupt`` propagates.
    """

    def __init__(
        self, portal: Portal, instrument: Instrument, close: Callable[[], Awaitable[None]]
    ) -> None:
        self._portal = portal
        self.instrument = instrument
        self._close = close
        self._sessions: dict[int, LockSession] = {}
        self._exited = False

    # -- plumbing ------------------------------------------------------------------------

    def _fast(self) -> bool:
        """True when the caller-thread fast path may be tried (not in the loop's thread,
        no :meth:`lock` session open: those go through the loop)."""
        return not self._sessions and threading.get_ident() != self._portal.thread_id

    def _run(self, func: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        if self._sessions:
            session = self._sessions.get(threading.get_ident())
            if session is not None:
                return session.run(lambda: func(*args, **kwargs))
        return self._portal.run(func, *args, **kwargs)

    # -- context management and state ------------------------------------------------------

    def __enter__(self) -> SyncInstrument:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the link (and what was opened with it, e.g. the SRQ poller); idempotent."""
        if not self._exited:
            self._exited = True
            self._portal.run(self._close)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self.instrument.closed

    @property
    def resource(self) -> str:
        """Canonical resource name."""
        return self.instrument.resource

    @property
    def transport(self) -> MessageTransport:
        """The async link (use it from the event-loop thread only)."""
        return self.instrument.transport

    @property
    def srq_poller(self) -> SrqPoller | None:
        """The status-byte poller, when opened with ``srq_poll_interval``."""
        return self.instrument.srq_poller

    @property
    def timeout(self) -> float | None:
        """Default per-exchange timeout in seconds (``None``: wait forever)."""
        return self.instrument.timeout

    @timeout.setter
    def timeout(self, value: float | None) -> None:
        self.instrument.timeout = value

    @property
    def query_delay(self) -> float:
        """Seconds between the write and the read of a query (PyVISA's ``query_delay``)."""
        return self.instrument.query_delay

    @query_delay.setter
    def query_delay(self, value: float) -> None:
        self.instrument.query_delay = value

    @property
    def read_termination(self) -> str | None:
        """Stripped from text responses; byte-stream transports also frame messages on it."""
        return self.instrument.read_termination

    @read_termination.setter
    def read_termination(self, value: str | None) -> None:
        self._portal.call(setattr, self.instrument, "read_termination", value)

    @property
    def write_termination(self) -> str:
        """Appended to every command sent with :meth:`write`."""
        return self.instrument.write_termination

    @write_termination.setter
    def write_termination(self, value: str) -> None:
        self.instrument.write_termination = value

    @property
    def encoding(self) -> str:
        """Text encoding of commands and responses."""
        return self.instrument.encoding

    @encoding.setter
    def encoding(self, value: str) -> None:
        self.instrument.encoding = value

    @property
    def max_message_size(self) -> int:
        """Largest response accepted (bytes)."""
        return self.instrument.max_message_size

    @max_message_size.setter
    def max_message_size(self, value: int) -> None:
        self.instrument.max_message_size = value

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<SyncInstrument {self.resource} ({state})>"

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the instrument for a multi-step transaction: ``with inst.lock():``.

        Calls made by this thread inside the block go straight through; other threads
        (and async tasks) wait their turn. Nested blocks in one thread are allowed.
        """
        me = threading.get_ident()
        if me in self._sessions:
            yield
            return
        session = LockSession(self._portal, self.instrument)
        self._sessions[me] = session
        try:
            yield
        finally:
            del self._sessions[me]
            session.close()

    # -- text and raw I/O ----------------------------------------------------------------

    def write(self, command: str, *, timeout: float | Default | None = DEFAULT) -> None:
        """Send ``command`` followed by the write termination."""
        inst = self.instrument
        if not self._fast() or not inst._write_raw_blocking(
            inst._encode(command), timeout=timeout, wake=self._portal.schedule
        ):
            self._run(inst.write, command, timeout=timeout)

    def write_raw(
        self, data: BytesLike, *, end: bool = True, timeout: float | Default | None = DEFAULT
    ) -> None:
        """Send ``data`` as is (``end=False``: more of the same message follows)."""
        inst = self.instrument
        if not self._fast() or not inst._write_raw_blocking(
            data, end=end, timeout=timeout, wake=self._portal.schedule
        ):
            self._run(inst.write_raw, data, end=end, timeout=timeout)

    def read(self, *, timeout: float | Default | None = DEFAULT) -> str:
        """Read one response as text, read termination stripped."""
        if self._fast():
            raw = self.instrument._read_raw_blocking(timeout=timeout, wake=self._portal.schedule)
            if raw is not None:
                return self.instrument._decode(raw)
        return self._run(self.instrument.read, timeout=timeout)

    def read_raw(
        self, *, max_size: int | None = None, timeout: float | Default | None = DEFAULT
    ) -> bytes:
        """Read one response message as bytes."""
        inst = self.instrument
        if self._fast():
            raw = inst._read_raw_blocking(
                max_size=max_size, timeout=timeout, wake=self._portal.schedule
            )
            if raw is not None:
                return raw
        return self._run(inst.read_raw, max_size=max_size, timeout=timeout)

    def query(
        self,
        command: str,
        *,
        delay: float | None = None,
        timeout: float | Default | None = DEFAULT,
    ) -> str:
        """Write ``command`` and read its answer as text, in one locked exchange.

        ``delay``: seconds between the write and the read (default :attr:`query_delay`).
        Over a raw socket the exchange is done in the calling thread when the instrument
        is free (no hop to the event loop's thread); otherwise in the loop's thread.
        """
        if delay is None and self._fast():
            answer = self.instrument._query_blocking(
                command, timeout=timeout, wake=self._portal.schedule
            )
            if answer is not None:
                return answer
        return self._run(self.instrument.query, command, delay=delay, timeout=timeout)

    @overload
    def query_block(
        self,
        command: str,
        *,
        into: None = None,
        max_size: int | None = None,
        delay: float | None = None,
        timeout: float | Default | None = DEFAULT,
    ) -> bytearray: ...

    @overload
    def query_block(
        self,
        command: str,
        *,
        into: bytearray | memoryview,
        max_size: int | None = None,
        delay: float | None = None,
        timeout: float | Default | None = DEFAULT,
    ) -> memoryview: ...

    def query_block(
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
        return self._run(
            self.instrument.query_block,  # type: ignore[arg-type]
            command,
            into=into,
            max_size=max_size,
            delay=delay,
            timeout=timeout,
        )

    def query_values(
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
        return self._run(
            self.instrument.query_values,
            command,
            converter=converter,
            separator=separator,
            container=container,
            delay=delay,
            timeout=timeout,
        )

    def read_ascii_values(
        self,
        *,
        converter: Callable[[str], Any] | str = float,
        separator: str = ",",
        container: type[Any] = list,
        timeout: float | Default | None = DEFAULT,
    ) -> Any:
        """Read a list of ASCII values (after a write); arguments as :meth:`query_values`."""
        return self._run(
            self.instrument.read_ascii_values,
            converter=converter,
            separator=separator,
            container=container,
            timeout=timeout,
        )

    def write_ascii_values(
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
        return self._run(
            self.instrument.write_ascii_values,
            command,
            values,
            converter=converter,
            separator=separator,
            timeout=timeout,
        )

    def read_bytes(
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
        return self._run(
            self.instrument.read_bytes, count, break_on_termchar=break_on_termchar, timeout=timeout
        )

    query_ascii_values = query_values  #: PyVISA's name for :meth:`query_values`

    def query_binary_values(
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
        return self._run(
            self.instrument.query_binary_values,
            command,
            datatype,
            is_big_endian=is_big_endian,
            container=container,
            into=into,
            header_fmt=header_fmt,
            expect_termination=expect_termination,
            data_points=data_points,
            delay=delay,
            timeout=timeout,
        )

    def read_binary_values(
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
        return self._run(
            self.instrument.read_binary_values,
            datatype,
            is_big_endian=is_big_endian,
            container=container,
            header_fmt=header_fmt,
            expect_termination=expect_termination,
            data_points=data_points,
            timeout=timeout,
        )

    def write_binary_values(
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
        return self._run(
            self.instrument.write_binary_values,
            command,
            values,
            datatype,
            is_big_endian=is_big_endian,
            timeout=timeout,
        )

    def stb(self, *, timeout: float | Default | None = DEFAULT) -> StatusByte:
        """PyVISA's ``stb`` property: reading it is I/O, so here it is a coroutine
        (``await inst.stb()``); the same as :meth:`read_stb`."""
        return self._run(self.instrument.stb, timeout=timeout)

    def lock_excl(
        self, lock_timeout: float = 0.0, *, timeout: float | Default | None = DEFAULT
    ) -> None:
        """Lock the instrument against every other client (PyVISA's ``lock_excl``).

        Waits up to ``lock_timeout`` seconds for another client's lock to go; raises
        :class:`~aiotmc.ResourceBusyError` when it is not granted. This is a lock in the
        instrument (VXI-11 device_lock, HiSLIP exclusive lock); :meth:`lock` is the
        in-process one that keeps this program's own tasks apart.
        """
        return self._run(self.instrument.lock_excl, lock_timeout, timeout=timeout)

    def unlock(self, *, timeout: float | Default | None = DEFAULT) -> None:
        """Release the lock taken with :meth:`lock_excl`."""
        return self._run(self.instrument.unlock, timeout=timeout)

    def vendor_write(self, data: BytesLike, *, timeout: float | Default | None = DEFAULT) -> None:
        """Send ``data`` as one USBTMC VENDOR_SPECIFIC_OUT message (vendor tools' channel)."""
        return self._run(self.instrument.vendor_write, data, timeout=timeout)

    def vendor_read(self, max_size: int, *, timeout: float | Default | None = DEFAULT) -> bytes:
        """Read one USBTMC VENDOR_SPECIFIC_IN message of at most ``max_size`` bytes."""
        return self._run(self.instrument.vendor_read, max_size, timeout=timeout)

    def control_transfer(
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
        return self._run(
            self.instrument.control_transfer,
            request_type,
            request,
            value,
            index,
            data_or_length,
            timeout=timeout,
        )

    @contextmanager
    def lock_context(
        self, lock_timeout: float = 0.0, *, timeout: float | Default | None = DEFAULT
    ) -> Iterator[None]:
        """``with inst.lock_context(5):`` the instrument locked against other clients for the
        block (PyVISA's ``lock_context``); unlocked when the block ends."""
        self.lock_excl(lock_timeout, timeout=timeout)
        try:
            yield
        finally:
            self.unlock(timeout=timeout)

    def query_many(
        self, commands: Sequence[str], *, timeout: float | Default | None = DEFAULT
    ) -> list[str]:
        """Several queries in one compound program message (one round trip)."""
        return self._run(self.instrument.query_many, commands, timeout=timeout)

    @contextmanager
    def pipeline(self) -> Iterator[SyncPipeline]:
        """Hold the instrument while the threads sharing the yielded pipeline query at
        once, answers matched (HiSLIP overlapped mode; see ``Instrument.pipeline``)."""
        with self._portal.hold(self.instrument.pipeline()) as pipe:
            yield SyncPipeline(self._portal, pipe)

    def query_pipelined(
        self, commands: Sequence[str], *, timeout: float | Default | None = DEFAULT
    ) -> list[str]:
        """Separate queries sent at once, answers in order (HiSLIP overlapped mode)."""
        return self._run(self.instrument.query_pipelined, commands, timeout=timeout)

    def identify(self, *, timeout: float | Default | None = DEFAULT) -> Identity:
        """``*IDN?`` parsed into manufacturer, model, serial and firmware."""
        return self._run(self.instrument.identify, timeout=timeout)

    # -- blocks and values ---------------------------------------------------------------

    # -- status, control -----------------------------------------------------------------

    def read_stb(self, *, timeout: float | Default | None = DEFAULT) -> StatusByte:
        """Read the status byte: serial poll where the bus has one, ``*STB?`` otherwise."""
        return self._run(self.instrument.read_stb, timeout=timeout)

    def clear(self, *, timeout: float | Default | None = DEFAULT) -> None:
        """Device clear (bus-level where available; a raw socket reconnects)."""
        return self._run(self.instrument.clear, timeout=timeout)

    def trigger(self, *, timeout: float | Default | None = DEFAULT) -> None:
        """Trigger: bus-level where available, ``*TRG`` otherwise."""
        return self._run(self.instrument.trigger, timeout=timeout)

    def errors(self, *, timeout: float | Default | None = DEFAULT) -> list[InstrumentError]:
        """Drain the SCPI error queue (``SYST:ERR?`` until ``0``); at most 100 entries."""
        return self._run(self.instrument.errors, timeout=timeout)

    def check_errors(self, *, timeout: float | Default | None = DEFAULT) -> None:
        """Raise the first queued instrument error (all of them in ``.errors``), if any."""
        return self._run(self.instrument.check_errors, timeout=timeout)

    def control_ren(
        self, mode: RenMode | int, *, timeout: float | Default | None = DEFAULT
    ) -> None:
        """Remote-enable operations (PyVISA's ``control_ren``)."""
        return self._run(self.instrument.control_ren, mode, timeout=timeout)

    def remote(self, *, lockout: bool = False, timeout: float | Default | None = DEFAULT) -> None:
        """Put the instrument in remote (``lockout=True``: also lock its front panel)."""
        return self._run(self.instrument.remote, lockout=lockout, timeout=timeout)

    def local(self, *, timeout: float | Default | None = DEFAULT) -> None:
        """Return the instrument to local."""
        return self._run(self.instrument.local, timeout=timeout)

    def local_lockout(self, *, timeout: float | Default | None = DEFAULT) -> None:
        """Remote with the front panel locked."""
        return self._run(self.instrument.local_lockout, timeout=timeout)

    def indicator_pulse(self, *, timeout: float | Default | None = DEFAULT) -> None:
        """Blink the instrument's activity indicator (USBTMC)."""
        return self._run(self.instrument.indicator_pulse, timeout=timeout)

    # -- service requests and operations -------------------------------------------------

    def service_requests(self, *, buffer: int = 64) -> ServiceRequests:
        """Subscribe to service requests: ``with inst.service_requests() as events:``, then
        ``for srq in events:`` or ``events.get(timeout=...)``."""
        return ServiceRequests(
            self._portal, self.instrument.service_requests(buffer=buffer), buffer
        )

    def wait_for_srq(self, *, timeout: float | Default | None = DEFAULT) -> ServiceRequest:
        """Wait for the next service request (subscribe first if it may already be due)."""
        return self._run(self.instrument.wait_for_srq, timeout=timeout)

    @contextmanager
    def operation(
        self, commands: str | Sequence[str] = (), *, timeout: float | Default | None = DEFAULT
    ) -> Iterator[SyncPendingOperation]:
        """Start an operation (``commands`` + ``*OPC``): ``with inst.operation(":SINGle") as op:``
        then ``op.wait()``. Not inside :meth:`lock` (it takes the lock itself)."""
        async_cm = self.instrument.operation(commands, timeout=timeout)
        with self._portal.hold(async_cm) as pending:
            yield SyncPendingOperation(self._portal, pending)

    def wait_operation_complete(
        self, commands: str | Sequence[str] = (), *, timeout: float | Default | None = DEFAULT
    ) -> OperationTiming:
        """Send ``commands`` + ``*OPC`` and wait for completion (SRQ, else ``*OPC?``)."""
        return self._run(self.instrument.wait_operation_complete, commands, timeout=timeout)

    def reconnect(self, *, timeout: float | Default | None = DEFAULT) -> None:
        """Replace the link now (see the async method)."""
        return self._run(self.instrument.reconnect, timeout=timeout)


class SyncPipeline:
    """The blocking face of :class:`aiotmc.pipeline.Pipeline`: threads query at once."""

    def __init__(self, portal: Portal, pipe: Pipeline) -> None:
        self._portal = portal
        self._pipe = pipe

    def query(self, command: str, *, timeout: float | Default | None = DEFAULT) -> str:
        """Write ``command`` and return its answer; other threads' queries overlap it."""
        return self._portal.run(self._pipe.query, command, timeout=timeout)

    def query_many(
        self, commands: Sequence[str], *, timeout: float | Default | None = DEFAULT
    ) -> list[str]:
        """Every query at once, the answers in order."""
        return self._portal.run(self._pipe.query_many, commands, timeout=timeout)
