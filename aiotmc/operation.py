"""Operation completion: the IEEE 488.2 ``*OPC`` pattern, by service request or ``*OPC?``.

:func:`operation` / :func:`wait_operation_complete` (also methods of
:class:`~aiotmc.Instrument`): ``*ESE 1;*SRE 32``, subscribe to service requests *before*
starting, send the operation followed by ``*OPC``, wait for the service request (native or
polled, see :mod:`aiotmc.srq_poll`) or, without one, for ``*OPC?``; read ``*ESR?`` to
clear. This module sits below :class:`~aiotmc.Instrument`, which it uses only through its
public methods (:class:`OperationInstrument`).
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal, Protocol

import anyio

from ._exceptions import ReadTimeout, UnsupportedOperation
from ._types import DEFAULT, Default, EventStatus, ServiceRequest, StatusByte
from .protocol.scpi import Commands, join_compound

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream

    from .srq_poll import SrqPoller

__all__ = [
    "OperationInstrument",
    "OperationTiming",
    "PendingOperation",
    "operation",
    "wait_operation_complete",
]

_SETUP: Final = "*ESE 1;*SRE 32;*ESR?"  # enable OPC -> ESB -> SRQ; reading *ESR? clears it
_OPC: Final = int(EventStatus.OPC)


class OperationInstrument(Protocol):
    """What operation completion uses of an instrument: :class:`~aiotmc.Instrument` is one.

    A protocol, not ``Instrument`` itself, so that this module sits below the instrument
    (whose methods call it) even for type checkers.
    """

    @property
    def resource(self) -> str: ...

    @property
    def timeout(self) -> float | None: ...

    @property
    def srq_poller(self) -> SrqPoller | None: ...

    def lock(self) -> AbstractAsyncContextManager[None]: ...

    async def query(self, command: str, *, timeout: float | None) -> str: ...

    def service_requests(
        self, *, buffer: int
    ) -> AbstractAsyncContextManager[MemoryObjectReceiveStream[ServiceRequest]]: ...


def timeout_of(inst: OperationInstrument, timeout: float | Default | None) -> float | None:
    """``timeout``, or the instrument's default for ``DEFAULT``."""
    return inst.timeout if isinstance(timeout, Default) else timeout


def time_left(deadline: float) -> float | None:
    """Seconds until ``deadline`` (a ``time.monotonic()`` value), None for no deadline."""
    return None if deadline == math.inf else max(0.0, deadline - time.monotonic())


# -- operation completion --------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class OperationTiming:
    """How an operation completed.

    ``started``/``completed`` are ``time.monotonic()`` values (start: the operation and
    ``*OPC`` were sent; completed: the service request arrived, or ``*OPC?`` answered),
    ``wall`` is ``time.time()`` at completion. ``method`` is ``"srq"`` or ``"opc?"``;
    ``status`` the status byte of the service request (``None`` with ``*OPC?``);
    ``event_status`` the ``*ESR?`` value read (and so cleared) at the end.
    """

    started: float
    completed: float
    wall: float
    method: Literal["srq", "opc?"]
    status: StatusByte | None
    event_status: EventStatus

    @property
    def elapsed(self) -> float:
        """Seconds from start to completion."""
        return self.completed - self.started


class PendingOperation:
    """An operation started by :func:`operation`; :meth:`wait` for its completion."""

    def __init__(
        self,
        instrument: OperationInstrument,
        events: MemoryObjectReceiveStream[ServiceRequest] | None,
        *,
        started: float,
        deadline: float,
        limit: float | None,
    ) -> None:
        self.instrument = instrument
        self.started = started
        self.timing: OperationTiming | None = None  #: set once :meth:`wait` returned
        self._events = events
        self._deadline = deadline
        self._limit = limit

    @property
    def uses_srq(self) -> bool:
        """True when completion is awaited by service request (False: ``*OPC?``)."""
        return self._events is not None

    async def wait(self) -> OperationTiming:
        """Wait until the operation completes (by SRQ where available, else ``*OPC?``).

        Raises :class:`~aiotmc.ReadTimeout` when the operation's timeout passes first,
        ``anyio.ClosedResourceError`` if the instrument is closed meanwhile, and whatever
        the ``*OPC?``/``*ESR?`` exchanges raise.
        """
        if self.timing is not None:
            return self.timing
        inst = self.instrument
        if self._events is None:
            await inst.query("*OPC?", timeout=time_left(self._deadline))
            completed, wall = time.monotonic(), time.time()
            esr = int(await inst.query("*ESR?", timeout=time_left(self._deadline)))
            self.timing = OperationTiming(
                started=self.started,
                completed=completed,
                wall=wall,
                method="opc?",
                status=None,
                event_status=EventStatus(esr & 0xFF),
            )
            return self.timing
        seen = 0
        while True:
            event: ServiceRequest | None = None
            with anyio.move_on_after(time_left(self._deadline)):
                try:
                    event = await self._events.receive()
                except anyio.EndOfStream:
                    raise anyio.ClosedResourceError(
                        f"{inst.resource} closed while waiting for an operation"
                    ) from None
            if event is None:
                raise ReadTimeout(
                    f"{inst.resource}: operation not complete within {self._limit} s "
                    "(no service request)"
                )
            esr = int(await inst.query("*ESR?", timeout=time_left(self._deadline)))
            seen |= esr
            if esr & _OPC:
                break
            if inst.srq_poller is not None:  # *ESR? just cleared ESB: a new SRQ is an edge
                inst.srq_poller.rearm()
        self.timing = OperationTiming(
            started=self.started,
            completed=event.monotonic,
            wall=event.wall,
            method="srq",
            status=event.status,
            event_status=EventStatus(seen & 0xFF),
        )
        return self.timing


def _units(commands: Commands) -> list[str]:
    return [commands] if isinstance(commands, str) else list(commands)


@asynccontextmanager
async def operation(
    instrument: OperationInstrument,
    commands: Commands = (),
    *,
    timeout: float | Default | None = DEFAULT,
) -> AsyncIterator[PendingOperation]:
    """Start an operation; wait for it in the block or on leaving it.

    ``async with inst.operation(":SINGle") as op: await inst.trigger()`` sets
    ``*ESE 1;*SRE 32`` (and reads ``*ESR?`` to clear stale events), subscribes to service
    requests if the instrument has them (native or polled), sends ``commands`` + ``*OPC``
    + ``*SRE?`` as one message and reads the answer (so the instrument has taken the
    operation in when the block starts: armed, for a triggered one), and yields a
    :class:`PendingOperation`. If the block ends normally
    without calling ``await op.wait()``, completion is awaited on exit. ``timeout``
    (default: the instrument's) bounds everything from setup to completion.

    Note: ``*ESE`` and ``*SRE`` stay set to 1 and 32 afterwards.

    Raises :class:`~aiotmc.ReadTimeout`/:class:`~aiotmc.WriteTimeout` when the timeout
    passes, and what the exchanges raise (:class:`~aiotmc.TransportError`...).
    """
    limit = timeout_of(instrument, timeout)
    deadline = math.inf if limit is None else time.monotonic() + limit
    # ends in a query: the answer proves the instrument has taken the operation in (a
    # write returns once the bytes are sent, not once the instrument executed them)
    message = join_compound([*_units(commands), "*OPC", "*SRE?"])
    async with instrument.lock():
        await instrument.query(_SETUP, timeout=time_left(deadline))
        if instrument.srq_poller is not None:
            instrument.srq_poller.rearm()
    subscription: AbstractAsyncContextManager[MemoryObjectReceiveStream[ServiceRequest] | None]
    try:
        subscription = instrument.service_requests(buffer=16)
    except UnsupportedOperation:
        subscription = nullcontext(None)
    async with subscription as events:
        started = time.monotonic()
        await instrument.query(message, timeout=time_left(deadline))
        pending = PendingOperation(
            instrument, events, started=started, deadline=deadline, limit=limit
        )
        yield pending
        await pending.wait()


async def wait_operation_complete(
    instrument: OperationInstrument,
    commands: Commands = (),
    *,
    timeout: float | Default | None = DEFAULT,
) -> OperationTiming:
    """Send ``commands`` + ``*OPC`` and wait until the operation completes.

    See :func:`operation` (same arguments and exceptions); returns the timing.
    """
    async with operation(instrument, commands, timeout=timeout) as pending:
        return await pending.wait()
    raise AssertionError("unreachable")  # pragma: no cover  (for type checkers)
