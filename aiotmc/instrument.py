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

import math
import sys
from asyncio import AbstractEventLoop
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, TypeVar, overload

import anyio

from ._exceptions import InstrumentError, ReadTimeout, RemoteProtocolError, UnsupportedOperation
from ._fastpath import cancel_maybe_pending, checkpoint_if_cancelled, current_time, running_loop
from ._lock import FifoLock
from ._types import DEFAULT, Default, ServiceRequest, StatusByte
from .operation import OperationTiming, PendingOperation, operation, wait_operation_complete
from .protocol import DEFAULT_MAX_MESSAGE_SIZE
from .protocol.ieee4882 import Identity, block_header, parse_idn
from .protocol.scpi import (
    binary_format,
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
    SupportsIndicatorPulse,
    SupportsReadTermination,
    SupportsReconnect,
    SupportsRemoteLocal,
)

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream

    from .srq import SrqBroadcaster
    from .srq_poll import SrqPoller

__all__ = ["Instrument"]

T = TypeVar("T")
_MAX_ERRORS: Final = 100  # bound on SYST:ERR? reads in check_errors()


class Instrument:
    """An open instrument. Create it with :func:`aiotmc.open`; no I/O happens in ``__init__``.

    Args:
        transport: the link (any :class:`~aiotmc.transports.base.MessageTransport`).
        timeout: default per-exchange timeout in seconds (``None``: wait forever).
        read_termination: stripped from the end of text responses.
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
        read_termination: str = "\n",
        write_termination: str = "\n",
        encoding: str = "ascii",
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        self.transport = transport
        self.timeout = timeout
        self._read_termination = read_termination
        self.write_termination = write_termination
        self.encoding = encoding
        self.max_message_size = max_message_size
        self._lock = FifoLock()
        self._transaction_task: int | None = None
        self._closed = False
        #: The status-byte poller publishing service requests where the transport has no
        #: SRQ channel (``aiotmc.open(..., srq_poll_interval=...)``), else ``None``.
        self.srq_poller: SrqPoller | None = None

    # -- context management ------------------------------------------------------------------

    async def __aenter__(self) -> Instrument:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def read_termination(self) -> str:
        """Stripped from text responses; byte-stream transports also frame messages on it."""
        return self._read_termination

    @read_termination.setter
    def read_termination(self, value: str) -> None:
        if isinstance(self.transport, SupportsReadTermination):
            self.transport.set_read_termination(value.encode(self.encoding))
        self._read_termination = value

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
        limit = self.timeout if timeout is DEFAULT else timeout
        if limit is None:
            return math.inf
        assert not isinstance(limit, Default)
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
        locked = await self._acquire(loop)
        try:
            await self.transport.send_message((data,), deadline=deadline)
        finally:
            if locked:
                self._lock.release()

    async def write_raw(
        self, data: BytesLike, *, end: bool = True, timeout: float | Default | None = DEFAULT
    ) -> None:
        """Send bytes as they are (no termination added)."""
        loop = running_loop()
        deadline = self._deadline(timeout, loop)
        locked = await self._acquire(loop)
        try:
            await self.transport.send_message((data,), end=end, deadline=deadline)
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
            return await self.transport.receive_message(
                max_size=max_size or self.max_message_size, deadline=deadline
            )
        finally:
            if locked:
                self._lock.release()

    async def query(self, command: str, *, timeout: float | Default | None = DEFAULT) -> str:
        """Write ``command`` and read its answer as text, in one locked exchange."""
        loop = running_loop()
        deadline = self._deadline(timeout, loop)
        data = self._encode(command)
        if cancel_maybe_pending(loop):  # _acquire() inlined: this is the hot path
            await checkpoint_if_cancelled()
        locked = self._take_lock() or await self._wait_for_lock()
        try:
            raw = await self.transport.exchange(
                data, max_size=self.max_message_size, deadline=deadline
            )
        finally:
            if locked:
                self._lock.release()
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
        timeout: float | Default | None = DEFAULT,
    ) -> bytearray: ...

    @overload
    async def query_block(
        self,
        command: str,
        *,
        into: bytearray | memoryview,
        max_size: int | None = None,
        timeout: float | Default | None = DEFAULT,
    ) -> memoryview: ...

    async def query_block(
        self,
        command: str,
        *,
        into: bytearray | memoryview | None = None,
        max_size: int | None = None,
        timeout: float | Default | None = DEFAULT,
    ) -> bytearray | memoryview:
        """Query and return the payload of the IEEE 488.2 block that answers it.

        Without ``into`` a new ``bytearray`` holds exactly the payload. With ``into`` (a
        writable buffer, e.g. reused between calls) the payload is read straight into it and
        a ``memoryview`` of the filled part is returned.
        """
        target = memoryview(into).cast("B") if into is not None else None
        loop = running_loop()
        deadline = self._deadline(timeout, loop)
        data = self._encode(command)
        locked = await self._acquire(loop)
        try:
            await self.transport.send_message((data,), deadline=deadline)
            view = await self.transport.receive_block(
                target, max_size=max_size or self.max_message_size, deadline=deadline
            )
        finally:
            if locked:
                self._lock.release()
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
        converter: Callable[[str], T] = float,  # type: ignore[assignment]
        separator: str = ",",
        timeout: float | Default | None = DEFAULT,
    ) -> list[T]:
        """Query a list of ASCII values (``1.0,2.5,...``)."""
        text = await self.query(command, timeout=timeout)
        return parse_values(text, converter=converter, separator=separator)

    async def query_binary_values(
        self,
        command: str,
        datatype: str = "f",
        *,
        is_big_endian: bool = False,
        container: type[Any] = list,
        into: bytearray | memoryview | None = None,
        timeout: float | Default | None = DEFAULT,
    ) -> Any:
        """Query a block and unpack it as ``datatype`` items (struct letters: ``f``, ``h``...).

        ``container`` may be ``list``, ``tuple`` or ``numpy.ndarray`` (zero-copy view when
        numpy is installed).
        """
        binary_format(datatype, big_endian=is_big_endian)  # validates before any I/O
        payload = await self.query_block(command, into=into, timeout=timeout)
        if container.__module__ == "numpy" and container.__name__ == "ndarray":
            numpy = sys.modules["numpy"]
            dtype = numpy.dtype(datatype).newbyteorder(">" if is_big_endian else "<")
            size = dtype.itemsize
            if len(payload) % size:
                raise RemoteProtocolError(
                    f"block of {len(payload)} bytes is not a whole number of {size}-byte items"
                )
            return numpy.frombuffer(payload, dtype=dtype)
        values = unpack_binary(payload, datatype, big_endian=is_big_endian)
        return values if container is list else container(values)

    async def write_binary_values(
        self,
        command: str,
        values: Iterable[float | int] | Any,
        datatype: str = "f",
        *,
        is_big_endian: bool = False,
        timeout: float | Default | None = DEFAULT,
    ) -> None:
        """Send ``command`` followed by ``values`` as a definite-length block.

        Header, payload and termination go out as separate buffers (no concatenation);
        numpy arrays are sent without copying when their byte order already matches.
        """
        payload: BytesLike
        if hasattr(values, "__array__") and hasattr(values, "dtype"):
            numpy = sys.modules["numpy"]
            dtype = numpy.dtype(datatype).newbyteorder(">" if is_big_endian else "<")
            array = numpy.ascontiguousarray(values, dtype=dtype)
            payload = memoryview(array).cast("B")
        else:
            payload = pack_binary(list(values), datatype, big_endian=is_big_endian)
        parts: tuple[BytesLike, ...] = (
            command.encode(self.encoding),
            block_header(len(payload)),
            payload,
            self.write_termination.encode(self.encoding),
        )
        loop = running_loop()
        deadline = self._deadline(timeout, loop)
        locked = await self._acquire(loop)
        try:
            await self.transport.send_message(parts, deadline=deadline)
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

    async def clear(self, *, timeout: float | Default | None = DEFAULT) -> None:
        """Device clear (bus-level where available; a raw socket reconnects)."""
        loop = running_loop()
        deadline = self._deadline(timeout, loop)
        locked = await self._acquire(loop)
        try:
            await self.transport.clear(deadline=deadline)
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
        limit = self.timeout if timeout is DEFAULT else timeout
        assert not isinstance(limit, Default)
        async with self.service_requests(buffer=1) as events:
            with anyio.move_on_after(limit if limit is not None else float("inf")) as scope:
                return await events.receive()
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
        with anyio.CancelScope(shield=True):
            await self.transport.aclose()
