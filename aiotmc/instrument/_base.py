"""What every part of :class:`~aiotmc.Instrument` stands on: its state, the exchange
lock, deadlines, text I/O, service requests, reconnecting and closing."""

from __future__ import annotations

import logging
import math
from asyncio import AbstractEventLoop
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Final, Self, TypeVar

import anyio

from .._exceptions import ReadTimeout, RemoteProtocolError, UnsupportedOperation
from .._fastpath import cancel_maybe_pending, checkpoint_if_cancelled, current_time, running_loop
from .._lock import FifoLock
from .._log import io_log, log, show
from .._timeouts import check_timeout
from .._types import DEFAULT, Default, ServiceRequest
from ..protocol import DEFAULT_MAX_MESSAGE_SIZE
from ..protocol.ieee4882 import Identity, parse_idn
from ..protocol.scpi import join_compound, split_compound
from ..transports.base import (
    BytesLike,
    EarlyExchange,
    MessageTransport,
    SupportsBlockingIO,
    SupportsEarlyExchange,
    SupportsReadTermination,
    SupportsReconnect,
)

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream

    from ..srq import SrqBroadcaster
    from ..srq_poll import SrqPoller

__all__ = ["DEBUG", "InstrumentBase", "T"]

T = TypeVar("T")
DEBUG: Final = logging.DEBUG


class InstrumentBase:
    """State and text I/O of an instrument; :class:`~aiotmc.Instrument` adds the rest."""

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
        #: the transport, when a releasing caller can start a waiting caller's query
        #: (hand-over by I/O); its class must define the method, as above
        self._early_io = (
            transport
            if isinstance(transport, SupportsEarlyExchange)
            and hasattr(type(transport), "early_exchange")
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

    async def __aenter__(self) -> Self:
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
        return f"<{type(self).__name__} {self.resource} ({state})>"

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

    async def _locked(
        self,
        timeout: float | Default | None,
        call: Callable[..., Awaitable[T]],
        *,
        extra: float = 0.0,
        what: str = "",
    ) -> T:
        """``await call(deadline=...)`` holding the exchange lock: the pattern of every
        operation that is one transport call. ``extra`` lengthens the deadline (a lock
        wait); with ``what``, a failure is logged as that operation's."""
        loop = running_loop()
        deadline = self._deadline(timeout, loop) + extra
        locked = await self._acquire(loop)
        try:
            return await call(deadline=deadline)
        except Exception as exc:
            if what:
                self._failed(what, exc)
            raise
        finally:
            if locked:
                self._lock.release()

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
        if io_log.isEnabledFor(DEBUG):
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
        if io_log.isEnabledFor(DEBUG):
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
        if io_log.isEnabledFor(DEBUG):
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
        trace = io_log.isEnabledFor(DEBUG)
        if trace:
            io_log.debug("%s write %s", self.resource, show(data))
        if cancel_maybe_pending(loop):  # _acquire() inlined: this is the hot path
            await checkpoint_if_cancelled()
        pause = self.query_delay if delay is None else delay
        early: EarlyExchange | None = None
        woken: object = None
        locked = self._take_lock()
        if not locked:
            early_io = self._early_io
            if early_io is not None and not pause and self._transaction_task is None:
                # Hand-over by I/O: whoever releases the lock may send this query for us
                # and wake us with its answer. If this wait raises, the lock is not ours.
                early = early_io.early_exchange(
                    data, max_size=self.max_message_size, deadline=deadline
                )
                waiting = self._lock.acquire_early(early, loop)
                if waiting is not None:
                    woken = await waiting
                locked = True
            else:
                locked = await self._wait_for_lock()
        try:
            if early is not None:
                raw = early.answer(woken) or await early.finish(woken)
            elif pause:
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

    async def identify(self, *, timeout: float | Default | None = DEFAULT) -> Identity:
        """``*IDN?`` parsed into manufacturer, model, serial and firmware."""
        return parse_idn(await self.query("*IDN?", timeout=timeout))

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
