"""Operation completion, synchronized and periodic acquisition across a group, CSV export.

* :func:`operation` / :func:`wait_operation_complete` (also methods of
  :class:`~aiotmc.Instrument`): the IEEE 488.2 completion pattern. ``*ESE 1;*SRE 32``,
  subscribe to service requests *before* starting, send the operation followed by
  ``*OPC``, wait for the service request (native or polled, see :mod:`aiotmc.srq_poll`)
  or, without one, for ``*OPC?``; read ``*ESR?`` to clear.
* :func:`acquire`: arm every member, trigger them all together (each ``inst.trigger()``
  launched at once by one event: USB488 TRIGGER, the simulator's bus trigger or ``*TRG``),
  wait for completion, fetch concurrently; samples carry monotonic and wall-clock stamps,
  the row reports the trigger skew.
* :func:`periodic`: an async iterator of rows on an absolute schedule (``k * period`` from
  the first row: no drift); nothing is queued while the consumer is busy, periods that
  passed meanwhile are skipped and counted in :attr:`Row.missed`.
* :func:`write_csv`: rows to CSV.
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Final, Literal, Protocol, TypeAlias

import anyio
from anyio.lowlevel import checkpoint

from ._exceptions import ReadTimeout, UnsupportedOperation
from ._types import DEFAULT, Default, EventStatus, ServiceRequest, StatusByte
from ._util import background_task_group
from .group import Commands, InstrumentGroup, join_program
from .instrument import Instrument

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream

__all__ = [
    "Clock",
    "Measurement",
    "MonotonicClock",
    "OperationTiming",
    "PendingOperation",
    "PeriodicAcquisition",
    "Plan",
    "Row",
    "Sample",
    "acquire",
    "operation",
    "periodic",
    "rows_to_csv",
    "wait_operation_complete",
    "write_csv",
]

_SETUP: Final = "*ESE 1;*SRE 32;*ESR?"  # enable OPC -> ESB -> SRQ; reading *ESR? clears it
_OPC: Final = int(EventStatus.OPC)


def _limit(inst: Instrument, timeout: float | Default | None) -> float | None:
    return inst.timeout if isinstance(timeout, Default) else timeout


def _remaining(deadline: float) -> float | None:
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
        instrument: Instrument,
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
            await inst.query("*OPC?", timeout=_remaining(self._deadline))
            completed, wall = time.monotonic(), time.time()
            esr = int(await inst.query("*ESR?", timeout=_remaining(self._deadline)))
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
            with anyio.move_on_after(_remaining(self._deadline)):
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
            esr = int(await inst.query("*ESR?", timeout=_remaining(self._deadline)))
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
    instrument: Instrument,
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
    limit = _limit(instrument, timeout)
    deadline = math.inf if limit is None else time.monotonic() + limit
    # ends in a query: the answer proves the instrument has taken the operation in (a
    # write returns once the bytes are sent, not once the instrument executed them)
    message = join_program([*_units(commands), "*OPC", "*SRE?"])
    async with instrument.lock():
        await instrument.query(_SETUP, timeout=_remaining(deadline))
        if instrument.srq_poller is not None:
            instrument.srq_poller.rearm()
    subscription: AbstractAsyncContextManager[MemoryObjectReceiveStream[ServiceRequest] | None]
    try:
        subscription = instrument.service_requests(buffer=16)
    except UnsupportedOperation:
        subscription = nullcontext(None)
    async with subscription as events:
        started = time.monotonic()
        await instrument.query(message, timeout=_remaining(deadline))
        pending = PendingOperation(
            instrument, events, started=started, deadline=deadline, limit=limit
        )
        yield pending
        await pending.wait()


async def wait_operation_complete(
    instrument: Instrument,
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


# -- synchronized acquisition ----------------------------------------------------------------

Fetch: TypeAlias = Commands | Callable[[Instrument], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Measurement:
    """What one instrument does in an acquisition.

    ``fetch``: a query, a list of queries (one compound message, answers a list), or
    ``async def fetch(inst) -> value``. ``arm``: commands that start the operation the
    trigger completes (``["TRIG:SOUR BUS", "INIT"]``, ``":SINGle"``); ``*OPC`` is
    appended. ``trigger``: take part in the common trigger. ``convert``: applied to the
    fetched value (e.g. ``float``). A member with neither ``arm`` nor ``trigger`` is just
    read when the triggers go out.
    """

    fetch: Fetch
    arm: Commands | None = None
    trigger: bool = True
    convert: Callable[[Any], Any] | None = None


Plan: TypeAlias = Mapping[str, Measurement | Fetch]
"""name -> :class:`Measurement`, or a bare fetch (read at trigger time, not triggered)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    """One instrument's reading in a :class:`Row` (a value or an exception).

    ``monotonic``/``wall`` stamp the moment the value arrived (``time.monotonic()``,
    ``time.time()``). ``trigger_started``/``trigger_sent`` bracket the trigger call
    (monotonic; ``None`` if not triggered); ``completion`` is the operation timing for
    armed members.
    """

    name: str
    value: Any = None
    error: Exception | None = None
    monotonic: float
    wall: float
    trigger_started: float | None = None
    trigger_sent: float | None = None
    completion: OperationTiming | None = None

    @property
    def ok(self) -> bool:
        """True when the reading succeeded."""
        return self.error is None

    def unwrap(self) -> Any:
        """The value; raises the stored exception if the reading failed."""
        if self.error is not None:
            raise self.error
        return self.value


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    """One acquisition across the group: ``row["dmm"].value``.

    ``index`` is the period number (0 for a single :func:`acquire`), ``scheduled`` its
    start on the schedule's clock, ``monotonic``/``wall`` when it actually started,
    ``missed`` the periods skipped just before it. ``skew`` bounds the spread of the
    trigger send times: from the first trigger call starting to the last one returning
    (seconds; ``None`` when nothing was triggered).
    """

    index: int
    scheduled: float
    monotonic: float
    wall: float
    samples: Mapping[str, Sample] = field(default_factory=dict)
    skew: float | None = None
    missed: int = 0

    def __getitem__(self, name: str) -> Sample:
        return self.samples[name]

    @property
    def values(self) -> dict[str, Any]:
        """name -> value (``None`` for failed readings)."""
        return {name: s.value for name, s in self.samples.items()}

    @property
    def errors(self) -> dict[str, Exception]:
        """name -> exception of the failed readings."""
        return {n: s.error for n, s in self.samples.items() if s.error is not None}

    @property
    def ok(self) -> bool:
        """True when every reading succeeded."""
        return not self.errors


class _Progress:
    """What one member got done (filled in as it goes; read when it ends)."""

    __slots__ = ("arrived", "completion", "sent", "started")

    def __init__(self) -> None:
        self.arrived = False
        self.started: float | None = None
        self.sent: float | None = None
        self.completion: OperationTiming | None = None


def _normalize(group: InstrumentGroup, plan: Plan) -> dict[str, Measurement]:
    unknown = [n for n in plan if n not in group and n not in group.failed]
    if unknown:
        raise KeyError(f"not members of the group: {', '.join(map(str, unknown))}")
    return {
        name: step if isinstance(step, Measurement) else Measurement(step, trigger=False)
        for name, step in plan.items()
    }


async def _fetch(inst: Instrument, fetch: Fetch, deadline: float) -> Any:
    if isinstance(fetch, str):
        return await inst.query(fetch, timeout=_remaining(deadline))
    if isinstance(fetch, list | tuple):
        return await inst.query_many(list(fetch), timeout=_remaining(deadline))
    return await fetch(inst)


async def _acquire(
    group: InstrumentGroup,
    plan: Mapping[str, Measurement],
    timeout: float | Default | None,
    arm_timeout: float | None,
    *,
    index: int = 0,
    scheduled: float | None = None,
    missed: int = 0,
) -> Row:
    started, wall = time.monotonic(), time.time()
    samples: dict[str, Sample] = {}
    progress = {name: _Progress() for name in plan}
    arming = {n: anyio.CancelScope() for n, m in plan.items() if m.trigger and n in group}
    waiting = len(arming)  # triggered members not yet armed (or failed)
    all_armed = anyio.Event()
    go = anyio.Event()
    if not waiting:
        all_armed.set()

    def arrive(state: _Progress) -> None:
        nonlocal waiting
        if not state.arrived:
            state.arrived = True
            waiting -= 1
            if waiting == 0:
                all_armed.set()

    async def member(name: str, inst: Instrument, m: Measurement, deadline: float) -> Any:
        state = progress[name]
        if m.arm is None and not m.trigger:
            await go.wait()  # read when the triggers go out
        elif not m.trigger:
            state.completion = await wait_operation_complete(
                inst, m.arm or (), timeout=_remaining(deadline)
            )
        else:
            try:
                with arming[name] as scope:
                    async with operation(inst, m.arm or (), timeout=_remaining(deadline)) as op:
                        async with inst.lock():  # nothing slips in between arm and trigger
                            if go.is_set():
                                raise ReadTimeout(
                                    f"{inst.resource}: not armed within {arm_timeout} s"
                                )
                            arrive(state)
                            await go.wait()
                            state.started = time.monotonic()
                            await inst.trigger(timeout=_remaining(deadline))
                            state.sent = time.monotonic()
                            # let every other trigger go out before any follow-up work
                            await checkpoint()
                        state.completion = await op.wait()
                if scope.cancelled_caught:
                    raise ReadTimeout(f"{inst.resource}: not armed within {arm_timeout} s")
            finally:
                arrive(state)
        value = await _fetch(inst, m.fetch, deadline)
        return value if m.convert is None else m.convert(value)

    async def run(name: str, inst: Instrument, m: Measurement) -> None:
        limit = _limit(inst, timeout)
        deadline = math.inf if limit is None else time.monotonic() + limit
        value: Any = None
        error: Exception | None = None
        with anyio.move_on_after(math.inf if limit is None else limit) as scope:
            try:
                value = await member(name, inst, m, deadline)
            except Exception as exc:
                error = exc
        if scope.cancelled_caught and error is None:
            error = ReadTimeout(f"{inst.resource}: acquisition not complete within {limit} s")
        state = progress[name]
        samples[name] = Sample(
            name=name,
            value=value,
            error=error,
            monotonic=time.monotonic(),
            wall=time.time(),
            trigger_started=state.started,
            trigger_sent=state.sent,
            completion=state.completion,
        )

    async with background_task_group() as tg:
        for name, m in plan.items():
            inst = group.get(name)
            if inst is None:
                samples[name] = Sample(
                    name=name, error=group.failed[name], monotonic=started, wall=wall
                )
            else:
                tg.start_soon(run, name, inst, m)
        with anyio.move_on_after(math.inf if arm_timeout is None else arm_timeout):
            await all_armed.wait()
        go.set()  # every armed member, waiting on this one event, sends its trigger now
        for name, scope in arming.items():
            if not progress[name].arrived:
                scope.cancel()  # too late to take part
    windows = [
        (state.started, state.sent)
        for state in progress.values()
        if state.started is not None and state.sent is not None
    ]
    skew = max(w[1] for w in windows) - min(w[0] for w in windows) if windows else None
    return Row(
        index=index,
        scheduled=started if scheduled is None else scheduled,
        monotonic=started,
        wall=wall,
        samples={name: samples[name] for name in plan},
        skew=skew,
        missed=missed,
    )


async def acquire(
    group: InstrumentGroup,
    plan: Plan,
    *,
    timeout: float | Default | None = DEFAULT,
    arm_timeout: float | None = None,
) -> Row:
    """One synchronized acquisition across ``group``.

    Every triggered member gets ``*ESE 1;*SRE 32``, its ``arm`` commands and ``*OPC``;
    once all are armed (each then holds its instrument's lock, so nothing slips in
    between), one event launches every ``inst.trigger()`` together. Each member then waits
    for completion (service request where available, ``*OPC?`` otherwise) and is fetched,
    independently of the others. Plain fetches are read when the triggers go out.

    ``timeout`` (default: each instrument's) bounds each member from arming to fetch,
    waiting for its lock included. ``arm_timeout`` bounds how long the trigger waits for
    every member to be armed (default: until each is armed or has failed); members not
    armed by then fail with :class:`~aiotmc.ReadTimeout` and the rest are triggered.

    Failures are per member (:attr:`Sample.error`). Raises ``KeyError`` for a name that is
    not a member of the group.
    """
    return await _acquire(group, _normalize(group, plan), timeout, arm_timeout)


# -- periodic acquisition --------------------------------------------------------------------


class Clock(Protocol):
    """Time source of :func:`periodic` (a hook for tests: a manual clock)."""

    def now(self) -> float:
        """Current time in seconds."""
        ...

    async def sleep_until(self, deadline: float) -> None:
        """Return once :meth:`now` has reached ``deadline`` (checkpoint even if it has)."""
        ...


class MonotonicClock:
    """``time.monotonic()``, slept on with the event loop's timers."""

    def now(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()

    async def sleep_until(self, deadline: float) -> None:
        """Sleep until ``time.monotonic() >= deadline`` (never wakes early)."""
        await anyio.sleep(max(0.0, deadline - time.monotonic()))
        left = deadline - time.monotonic()
        if left > 0:  # a timer that fired early (coarse timer resolution)
            await anyio.sleep(left)


class PeriodicAcquisition:
    """Async iterator of :class:`Row`, one per period (made by :func:`periodic`).

    Row ``k`` is scheduled at ``start + k * period`` (``start``: the first ``__anext__``),
    so sleep jitter never accumulates. Rows are acquired only when asked for: while the
    consumer (or a slow acquisition) is busy, nothing is buffered; if period boundaries
    passed meanwhile, the latest one is acquired at once and the skipped ones are counted
    in :attr:`Row.missed` (like tokio's ``MissedTickBehavior::Skip``).
    """

    def __init__(
        self,
        group: InstrumentGroup,
        plan: Plan,
        period: float,
        *,
        count: int | None = None,
        timeout: float | Default | None = DEFAULT,
        arm_timeout: float | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not period > 0:
            raise ValueError(f"period must be positive, not {period!r}")
        self.group = group
        self.period = period
        self.count = count
        self.timeout = timeout
        self.arm_timeout = arm_timeout
        self.clock: Clock = clock or MonotonicClock()
        self.rows = 0  #: rows produced so far
        self.missed = 0  #: periods skipped so far
        self.start: float | None = None  #: clock time of row 0
        self._plan = _normalize(group, plan)
        self._index = -1

    def __aiter__(self) -> PeriodicAcquisition:
        return self

    async def __anext__(self) -> Row:
        if self.count is not None and self.rows >= self.count:
            raise StopAsyncIteration
        clock = self.clock
        if self.start is None:
            self.start = clock.now()
            index = missed = 0
            await checkpoint()
        else:
            due = self._index + 1
            passed = math.floor((clock.now() - self.start) / self.period + 1e-9)
            if passed >= due:  # late: take the latest boundary now, skip the older ones
                index, missed = passed, passed - due
            else:
                index, missed = due, 0
                await clock.sleep_until(self.start + index * self.period)
        self._index = index
        self.missed += missed
        row = await _acquire(
            self.group,
            self._plan,
            self.timeout,
            self.arm_timeout,
            index=index,
            scheduled=self.start + index * self.period,
            missed=missed,
        )
        self.rows += 1
        return row


def periodic(
    group: InstrumentGroup,
    plan: Plan,
    period: float,
    *,
    count: int | None = None,
    timeout: float | Default | None = DEFAULT,
    arm_timeout: float | None = None,
    clock: Clock | None = None,
) -> PeriodicAcquisition:
    """Acquire ``plan`` every ``period`` seconds: ``async for row in periodic(...)``.

    Each row is a full :func:`acquire` (same ``timeout`` and ``arm_timeout``; plain
    fetches are just read). Stops after
    ``count`` rows (``None``: never). Backpressure: no row is read ahead of the consumer;
    periods that passed while it was busy are counted in :attr:`Row.missed`. ``clock``
    replaces ``time.monotonic`` (tests).

    Raises ``ValueError`` for a non-positive period and ``KeyError`` for an unknown name.
    """
    return PeriodicAcquisition(
        group,
        plan,
        period,
        count=count,
        timeout=timeout,
        arm_timeout=arm_timeout,
        clock=clock,
    )


# -- CSV -------------------------------------------------------------------------------------

_FIXED: Final = ("index", "scheduled", "monotonic", "wall", "missed", "skew")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, str):
        return value
    if isinstance(value, Iterable):
        return ";".join(_cell(v) for v in value)
    return str(value)


def write_csv(
    rows: Iterable[Row],
    path_or_file: str | os.PathLike[str] | IO[str],
    *,
    names: Sequence[str] | None = None,
    header: bool = True,
) -> int:
    """Write rows as CSV; returns how many rows were written.

    Columns: ``index, scheduled, monotonic, wall, missed, skew``, then for each instrument
    ``<name>`` (the value: floats exactly as ``repr``, lists joined with ``;``, bytes as
    hex), ``<name>.monotonic`` and ``<name>.error`` (``Type: message``). ``names``
    (default: the first row's) picks and orders the instruments. A path is opened with
    ``newline=""`` and UTF-8; an open text file is written as is (``header=False`` to
    append). This is blocking file I/O: for big exports from async code use
    ``await anyio.to_thread.run_sync(write_csv, rows, path)``.

    Raises ``OSError`` from the file and ``KeyError`` when a row lacks a named instrument.
    """
    if isinstance(path_or_file, str | os.PathLike):
        with open(path_or_file, "w", newline="", encoding="utf-8") as file:
            return write_csv(rows, file, names=names, header=header)
    writer = csv.writer(path_or_file)
    count = 0
    chosen = list(names) if names is not None else None
    for row in rows:
        if chosen is None:
            chosen = list(row.samples)
        if count == 0 and header:
            columns = list(_FIXED)
            for name in chosen:
                columns += [name, f"{name}.monotonic", f"{name}.error"]
            writer.writerow(columns)
        cells = [
            str(row.index),
            repr(row.scheduled),
            repr(row.monotonic),
            repr(row.wall),
            str(row.missed),
            "" if row.skew is None else repr(row.skew),
        ]
        for name in chosen:
            sample = row.samples[name]
            error = sample.error
            cells += [
                _cell(sample.value),
                repr(sample.monotonic),
                "" if error is None else f"{type(error).__name__}: {error}",
            ]
        writer.writerow(cells)
        count += 1
    return count


def rows_to_csv(rows: Iterable[Row], *, names: Sequence[str] | None = None) -> str:
    """:func:`write_csv` into a string."""
    buffer = io.StringIO()
    write_csv(rows, buffer, names=names)
    return buffer.getvalue()
