"""Many instruments at once: :func:`open_many`, :class:`InstrumentGroup`, :class:`Results`.

Pipelining rules (docs/groups.md):

* **Across instruments** exchanges overlap fully: :meth:`InstrumentGroup.query_all` runs
  one task per instrument (optionally bounded by a ``CapacityLimiter``).
* **Within one instrument** a list of queries becomes one compound program message
  (``A?;:B?``) sent with :meth:`Instrument.query_many
  <aiotmc.Instrument.query_many>`; the single response is split. Queries are never sent
  ahead one by one: IEEE 488.2 discards a pending response when a new program message
  arrives (Query INTERRUPTED), so blind send-ahead is not offered.

Every member of a group opened with :func:`open_many` lives in its own task of the
group's task group (the nursery pattern): opening is concurrent, a failure is recorded
per instrument, and leaving the block closes every member even when cancelled.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeAlias, TypeVar, cast, overload

import anyio

from ._open import open as open_instrument
from ._types import DEFAULT, Default
from ._util import background_task_group
from .acquisition import acquire, periodic
from .instrument import Instrument
from .protocol.scpi import Commands, join_compound
from .resources import ResourceName

if TYPE_CHECKING:
    from .acquisition import PeriodicAcquisition, Plan, Row

__all__ = ["Commands", "InstrumentGroup", "Result", "Results", "join_program", "open_many"]

join_program = join_compound  # re-exported: the group API speaks of program messages

_log = logging.getLogger("aiotmc.group")

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

"""One command, or several sent as one compound program message."""
ResourceSpec: TypeAlias = str | ResourceName | tuple[str | ResourceName, Mapping[str, Any]]
"""A resource name, or ``(resource, {per-instrument open() options})``."""
Limit: TypeAlias = int | anyio.CapacityLimiter | None


# -- results ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Result(Generic[T_co]):
    """The outcome of one instrument's exchange: a value or an exception.

    ``elapsed`` is the time the call took (seconds, including waiting for the
    concurrency limit and the instrument's lock).
    """

    name: str
    value: T_co | None = None
    error: Exception | None = None
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        """True when the exchange succeeded."""
        return self.error is None

    def unwrap(self) -> T_co:
        """The value; raises the stored exception if the exchange failed."""
        if self.error is not None:
            raise self.error
        return cast("T_co", self.value)


class Results(Mapping[str, Result[T_co]]):
    """Per-instrument results, in the order the instruments were asked (name -> Result)."""

    __slots__ = ("_results",)

    def __init__(self, results: Mapping[str, Result[T_co]]) -> None:
        self._results = dict(results)

    def __getitem__(self, name: str) -> Result[T_co]:
        return self._results[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._results)

    def __len__(self) -> int:
        return len(self._results)

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{name}={r.value!r}" if r.ok else f"{name}=<{type(r.error).__name__}>"
            for name, r in self._results.items()
        )
        return f"Results({parts})"

    @property
    def ok(self) -> bool:
        """True when every instrument succeeded."""
        return all(r.error is None for r in self._results.values())

    @property
    def succeeded(self) -> dict[str, T_co]:
        """name -> value of the instruments that answered."""
        return {n: cast("T_co", r.value) for n, r in self._results.items() if r.error is None}

    @property
    def failed(self) -> dict[str, Exception]:
        """name -> exception of the instruments that failed."""
        return {n: r.error for n, r in self._results.items() if r.error is not None}

    def raise_for_errors(self) -> None:
        """Raise an ``ExceptionGroup`` of every failure (each noted with its instrument)."""
        failed = self.failed
        if failed:
            raise _exception_group(failed, len(self._results), "failed")

    def unwrap(self) -> dict[str, T_co]:
        """name -> value for all; raises ``ExceptionGroup`` if any instrument failed."""
        self.raise_for_errors()
        return self.succeeded


def _exception_group(
    failed: Mapping[str, Exception], total: int, what: str
) -> ExceptionGroup[Exception]:
    errors = []
    for name, exc in failed.items():
        note = f"instrument {name!r}"
        if note not in getattr(exc, "__notes__", ()):
            exc.add_note(note)
        errors.append(exc)
    names = ", ".join(failed)
    return ExceptionGroup(f"{len(failed)} of {total} instruments {what}: {names}", errors)


# -- the group -------------------------------------------------------------------------------


class InstrumentGroup(Mapping[str, Instrument]):
    """Named instruments driven together; a read-only mapping name -> open :class:`Instrument`.

    Made by :func:`open_many` (which owns the members and closes them), or directly from
    instruments you opened yourself: ``InstrumentGroup({"dmm": dmm, "psu": psu})`` (then
    :meth:`aclose` closes them). :attr:`failed` holds the instruments that could not be
    opened, or that failed later, with their exceptions. ``limit`` is the default
    concurrency limit of :meth:`query_all` / :meth:`write_all` (``None``: unlimited).
    """

    def __init__(
        self,
        instruments: Mapping[str, Instrument] | None = None,
        *,
        failed: Mapping[str, Exception] | None = None,
        limit: Limit = None,
    ) -> None:
        self._instruments: dict[str, Instrument] = dict(instruments or {})
        #: name -> exception for members that failed to open (or failed while open).
        self.failed: dict[str, Exception] = dict(failed or {})
        self.limit = limit
        self._order: list[str] = [*self._instruments, *self.failed]
        # open_many: how each member was opened, exited to close it (else inst.aclose())
        self._exits: dict[str, AbstractAsyncContextManager[Instrument]] | None = None
        self._closed = False

    # -- mapping ----------------------------------------------------------------------------

    def __getitem__(self, name: str) -> Instrument:
        return self._instruments[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._instruments)

    def __len__(self) -> int:
        return len(self._instruments)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self)} open, {len(self.failed)} failed"
        return f"<InstrumentGroup {', '.join(self._order)} ({state})>"

    @property
    def names(self) -> list[str]:
        """Every member name, open or failed, in the order given to :func:`open_many`."""
        return list(self._order)

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` ran."""
        return self._closed

    # -- fan-out ----------------------------------------------------------------------------

    @overload
    async def query_all(
        self,
        commands: str | Mapping[str, str],
        *,
        limit: Limit | Default = ...,
        timeout: float | Default | None = ...,
        strict: bool = ...,
    ) -> Results[str]: ...

    @overload
    async def query_all(
        self,
        commands: Mapping[str, list[str] | tuple[str, ...]],
        *,
        limit: Limit | Default = ...,
        timeout: float | Default | None = ...,
        strict: bool = ...,
    ) -> Results[list[str]]: ...

    @overload
    async def query_all(
        self,
        commands: Mapping[str, Commands],
        *,
        limit: Limit | Default = ...,
        timeout: float | Default | None = ...,
        strict: bool = ...,
    ) -> Results[str | list[str]]: ...

    async def query_all(
        self,
        commands: str | Mapping[str, Commands],
        *,
        limit: Limit | Default = DEFAULT,
        timeout: float | Default | None = DEFAULT,
        strict: bool = False,
    ) -> Results[Any]:
        """Query every member concurrently; one :class:`Result` per instrument.

        ``commands`` is one query for every open member, or ``{name: query}``; a list of
        queries for one name is sent as one compound message and answers a list.
        ``limit`` bounds how many exchanges run at once (default: the group's).
        ``timeout`` bounds each instrument's exchange (as ``Instrument.query``'s
        ``timeout=``): a slow member gets a :class:`~aiotmc.ReadTimeout` result, the others
        are unaffected. Members that failed to open answer with their open error.

        Raises ``KeyError`` for a name that is not a member, and, with ``strict=True``,
        an ``ExceptionGroup`` of every failure (each noted with its instrument's name).
        """

        async def call(inst: Instrument, command: Commands) -> str | list[str]:
            if isinstance(command, str):
                return await inst.query(command, timeout=timeout)
            return await inst.query_many(command, timeout=timeout)

        return await self._fan_out(commands, call, limit, strict)

    async def write_all(
        self,
        commands: str | Mapping[str, Commands],
        *,
        limit: Limit | Default = DEFAULT,
        timeout: float | Default | None = DEFAULT,
        strict: bool = False,
    ) -> Results[None]:
        """Write to every member concurrently (a list is joined into one compound message).

        Arguments, results and exceptions as for :meth:`query_all`.
        """

        async def call(inst: Instrument, command: Commands) -> None:
            text = command if isinstance(command, str) else join_program(command)
            await inst.write(text, timeout=timeout)

        return await self._fan_out(commands, call, limit, strict)

    async def run_all(
        self,
        function: Callable[[Instrument], Awaitable[T]],
        *,
        names: Sequence[str] | None = None,
        limit: Limit | Default = DEFAULT,
        strict: bool = False,
    ) -> Results[T]:
        """Run ``await function(inst)`` for every member (or ``names``) concurrently.

        Exceptions from ``function`` become per-instrument results; ``strict=True`` raises
        them as an ``ExceptionGroup``. Raises ``KeyError`` for an unknown name.
        """
        plan = dict.fromkeys(self._order if names is None else names, "")

        async def call(inst: Instrument, _: Commands) -> T:
            return await function(inst)

        return await self._fan_out(plan, call, limit, strict)

    async def _fan_out(
        self,
        commands: str | Mapping[str, Commands],
        call: Callable[[Instrument, Commands], Awaitable[T]],
        limit: Limit | Default,
        strict: bool,
    ) -> Results[T]:
        if isinstance(commands, str):
            plan: Mapping[str, Commands] = dict.fromkeys(self._instruments, commands)
        else:
            plan = commands
            unknown = [n for n in plan if n not in self._instruments and n not in self.failed]
            if unknown:
                raise KeyError(f"not members of this group: {', '.join(map(str, unknown))}")
        chosen = self.limit if isinstance(limit, Default) else limit
        limiter = (
            anyio.CapacityLimiter(chosen) if isinstance(chosen, int) else chosen
        )  # a shared CapacityLimiter may be passed in
        results: dict[str, Result[T]] = {}

        async def run(name: str, inst: Instrument, command: Commands) -> None:
            start = time.perf_counter()
            try:
                if limiter is None:
                    value = await call(inst, command)
                else:
                    async with limiter:
                        value = await call(inst, command)
            except Exception as exc:
                results[name] = Result(name, error=exc, elapsed=time.perf_counter() - start)
            else:
                results[name] = Result(name, value, elapsed=time.perf_counter() - start)

        async with background_task_group() as tg:
            for name, command in plan.items():
                inst = self._instruments.get(name)
                if inst is None:
                    results[name] = Result(name, error=self.failed[name])
                else:
                    tg.start_soon(run, name, inst, command)
        ordered: Results[T] = Results({name: results[name] for name in plan})
        if strict:
            ordered.raise_for_errors()
        return ordered

    # -- acquisition (see aiotmc.acquisition) -----------------------------------------------

    async def acquire(
        self,
        plan: Plan,
        *,
        timeout: float | Default | None = DEFAULT,
        arm_timeout: float | None = None,
    ) -> Row:
        """Synchronized acquisition across the group: :func:`aiotmc.acquire`."""
        return await acquire(self, plan, timeout=timeout, arm_timeout=arm_timeout)

    def periodic(
        self,
        plan: Plan,
        period: float,
        *,
        count: int | None = None,
        timeout: float | Default | None = DEFAULT,
        arm_timeout: float | None = None,
    ) -> PeriodicAcquisition:
        """One row per ``period`` across the group: :func:`aiotmc.periodic`."""
        return periodic(self, plan, period, count=count, timeout=timeout, arm_timeout=arm_timeout)

    # -- closing ----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close every member; idempotent; completes even when cancelled."""
        if self._closed:
            return
        self._closed = True
        exits = self._exits
        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as tg:
                if exits is not None:
                    for name, opening in list(exits.items()):
                        tg.start_soon(_exit_quietly, name, opening)
                else:
                    for inst in self._instruments.values():
                        tg.start_soon(_close_quietly, inst)

    async def __aenter__(self) -> InstrumentGroup:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


async def _exit_quietly(name: str, opening: AbstractAsyncContextManager[Instrument]) -> None:
    try:
        await opening.__aexit__(None, None, None)
    except Exception:
        _log.exception("closing %r failed", name)


async def _close_quietly(inst: Instrument) -> None:
    try:
        await inst.aclose()
    except Exception:
        _log.exception("closing %s failed", inst.resource)


def _split_spec(spec: ResourceSpec) -> tuple[str | ResourceName, dict[str, Any]]:
    if isinstance(spec, tuple):
        resource, options = spec
        return resource, dict(options)
    return spec, {}


@asynccontextmanager
async def open_many(
    resources: Mapping[str, ResourceSpec],
    *,
    strict: bool = False,
    limit: Limit = None,
    **options: Any,
) -> AsyncIterator[InstrumentGroup]:
    """Open named instruments concurrently: ``async with aiotmc.open_many({...}) as group:``.

    ``resources`` maps a name to a resource string (or ``(resource, {options})`` for
    per-instrument :func:`aiotmc.open` options, e.g. ``device=`` or ``timeout=``);
    ``options`` go to every :func:`aiotmc.open` call. Instruments that cannot be opened are
    left out of the group and listed in :attr:`InstrumentGroup.failed`; with
    ``strict=True`` any failure closes the others and raises an ``ExceptionGroup`` of the
    open errors. ``limit`` is the group's default concurrency limit for fan-out calls.
    Leaving the block closes every member, also when cancelled.
    """
    group = InstrumentGroup(limit=limit)
    group._order = list(resources)
    exits: dict[str, AbstractAsyncContextManager[Instrument]] = {}
    group._exits = exits

    async def member(name: str, spec: ResourceSpec) -> None:
        resource, own = _split_spec(spec)
        opening = open_instrument(resource, **{**options, **own})
        try:
            inst = await opening.__aenter__()
        except Exception as exc:
            group.failed[name] = exc
            return
        exits[name] = opening  # no await since __aenter__ returned: never lost
        group._instruments[name] = inst

    # The opens run concurrently in a task group that ends before the caller's block: no
    # task group is held across the ``yield``, so the group can be closed from any task
    # or cancel scope, like a single instrument.
    try:
        async with background_task_group() as tg:
            for name, spec in resources.items():
                tg.start_soon(member, name, spec, name=f"aiotmc.open_many:{name}")
    except BaseException:
        await group.aclose()
        raise
    # keep the order of ``resources`` whatever order the opens finished in
    group._instruments = {n: group._instruments[n] for n in resources if n in group._instruments}
    try:
        if strict and group.failed:
            raise _exception_group(group.failed, len(resources), "failed to open")
        yield group
    finally:
        await group.aclose()
