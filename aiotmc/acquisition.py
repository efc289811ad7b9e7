"""Synchronized and periodic acquisition across an :class:`~aiotmc.InstrumentGroup`.

* :func:`acquire`: arm every member, trigger them all together (each ``inst.trigger()``
  launched at once by one event: USB488 TRIGGER, the simulator's bus trigger or ``*TRG``),
  wait for completion, fetch concurrently; samples carry monotonic and wall-clock stamps,
  the row reports the trigger skew.
* :func:`periodic`: an async iterator of rows on an absolute schedule (``k * period`` from
  the first row: no drift); nothing is queued while the consumer is busy, periods that
  passed meanwhile are skipped and counted in :attr:`Row.missed`.

Operation completion lives in :mod:`aiotmc.operation`, CSV export in :mod:`aiotmc.export`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias

import anyio
from anyio.lowlevel import checkpoint

from ._exceptions import ReadTimeout
from ._types import DEFAULT, Default
from ._util import background_task_group
from .instrument import Instrument
from .operation import (
    OperationTiming,
    PendingOperation,
    operation,
    time_left,
    timeout_of,
    wait_operation_complete,
)
from .protocol.scpi import Commands

__all__ = [
    "AcquisitionGroup",
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
    "wait_operation_complete",
]


# -- synchronized acquisition ----------------------------------------------------------------


class AcquisitionGroup(Protocol):
    """What acquisition uses of a group (``name in group``, :meth:`get`, :attr:`failed`):
    :class:`~aiotmc.InstrumentGroup` is one.

    A protocol, not ``InstrumentGroup`` itself, so that this module sits below the group
    (whose methods call it) even for type checkers.
    """

    @property
    def failed(self) -> Mapping[str, Exception]:
        """name -> exception of the members that failed (they are not in the group)."""
        ...

    def __contains__(self, name: object, /) -> bool: ...

    def get(self, name: str, /) -> Instrument | None: ...


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


def _normalize(group: AcquisitionGroup, plan: Plan) -> dict[str, Measurement]:
    unknown = [n for n in plan if n not in group and n not in group.failed]
    if unknown:
        raise KeyError(f"not members of the group: {', '.join(map(str, unknown))}")
    return {
        name: step if isinstance(step, Measurement) else Measurement(step, trigger=False)
        for name, step in plan.items()
    }


async def _fetch(inst: Instrument, fetch: Fetch, deadline: float) -> Any:
    if isinstance(fetch, str):
        return await inst.query(fetch, timeout=time_left(deadline))
    if isinstance(fetch, list | tuple):
        return await inst.query_many(list(fetch), timeout=time_left(deadline))
    return await fetch(inst)


async def _acquire(
    group: AcquisitionGroup,
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
                inst, m.arm or (), timeout=time_left(deadline)
            )
        else:
            try:
                with arming[name] as scope:
                    async with operation(inst, m.arm or (), timeout=time_left(deadline)) as op:
                        async with inst.lock():  # nothing slips in between arm and trigger
                            if go.is_set():
                                raise ReadTimeout(
                                    f"{inst.resource}: not armed within {arm_timeout} s"
                                )
                            arrive(state)
                            await go.wait()
                            state.started = time.monotonic()
                            await inst.trigger(timeout=time_left(deadline))
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
        limit = timeout_of(inst, timeout)
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
    group: AcquisitionGroup,
    plan: Plan,
    *,
    timeout: float | Default | None = DEFAULT,
    arm_timeout: float | None = None,
) -> Row:
    """One synchronized acquisition across ``group`` (an :class:`~aiotmc.InstrumentGroup`).

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
        group: AcquisitionGroup,
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
    group: AcquisitionGroup,
    plan: Plan,
    period: float,
    *,
    count: int | None = None,
    timeout: float | Default | None = DEFAULT,
    arm_timeout: float | None = None,
    clock: Clock | None = None,
) -> PeriodicAcquisition:
    """Acquire ``plan`` every ``period`` seconds across ``group`` (an
    :class:`~aiotmc.InstrumentGroup`): ``async for row in periodic(...)``.

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
