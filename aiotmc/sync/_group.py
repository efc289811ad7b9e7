""":class:`SyncInstrumentGroup`: the blocking face of an :class:`~aiotmc.InstrumentGroup`.

Fan-out and acquisition still run concurrently, in the event-loop thread; the caller
waits for the whole result. Functions handed to :meth:`~SyncInstrumentGroup.run_all` and
callable measurements of an acquisition plan are async and receive the async
:class:`~aiotmc.Instrument` (they run in the loop).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from .._types import DEFAULT, Default
from ..acquisition import Plan, Row
from ..group import Commands, InstrumentGroup, Limit, Results
from ..instrument import Instrument
from ._instrument import SyncInstrument
from ._portal import Portal

__all__ = ["SyncInstrumentGroup"]

T = TypeVar("T")


class SyncInstrumentGroup(Mapping[str, SyncInstrument]):
    """Named instruments driven together; made by :func:`aiotmc.sync.open_many`.

    A read-only mapping name -> :class:`SyncInstrument`; ``group`` is the async
    :class:`~aiotmc.InstrumentGroup`. :meth:`close` closes every member.
    """

    def __init__(
        self, portal: Portal, group: InstrumentGroup, close: Callable[[], Awaitable[None]]
    ) -> None:
        self._portal = portal
        self.group = group
        self._close = close
        self._members = {
            name: SyncInstrument(portal, inst, inst.aclose) for name, inst in group.items()
        }

    def __getitem__(self, name: str) -> SyncInstrument:
        return self._members[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._members)

    def __len__(self) -> int:
        return len(self._members)

    def __repr__(self) -> str:
        return f"<SyncInstrumentGroup {self.group!r}>"

    def __enter__(self) -> SyncInstrumentGroup:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def failed(self) -> dict[str, Exception]:
        """Name -> exception for members that failed to open (or failed while open)."""
        return self.group.failed

    @property
    def names(self) -> list[str]:
        """Every member name, open or failed, in the order given to ``open_many``."""
        return self.group.names

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self.group.closed

    def query_all(
        self,
        commands: str | Mapping[str, Commands],
        *,
        limit: Limit | Default = DEFAULT,
        timeout: float | Default | None = DEFAULT,
        strict: bool = False,
    ) -> Results[Any]:
        """Query every member concurrently (see :meth:`aiotmc.InstrumentGroup.query_all`)."""
        return self._portal.run(
            self.group.query_all, commands, limit=limit, timeout=timeout, strict=strict
        )

    def write_all(
        self,
        commands: str | Mapping[str, Commands],
        *,
        limit: Limit | Default = DEFAULT,
        timeout: float | Default | None = DEFAULT,
        strict: bool = False,
    ) -> Results[None]:
        """Write to every member concurrently (see :meth:`aiotmc.InstrumentGroup.write_all`)."""
        return self._portal.run(
            self.group.write_all, commands, limit=limit, timeout=timeout, strict=strict
        )

    def run_all(
        self,
        function: Callable[[Instrument], Awaitable[T]],
        *,
        names: Sequence[str] | None = None,
        limit: Limit | Default = DEFAULT,
        strict: bool = False,
    ) -> Results[T]:
        """Run the async ``function(inst)`` for every member concurrently, in the loop."""
        return self._portal.run(
            self.group.run_all, function, names=names, limit=limit, strict=strict
        )

    def acquire(
        self,
        plan: Plan,
        *,
        timeout: float | Default | None = DEFAULT,
        arm_timeout: float | None = None,
    ) -> Row:
        """Synchronized acquisition across the group (see :func:`aiotmc.acquire`)."""
        return self._portal.run(self.group.acquire, plan, timeout=timeout, arm_timeout=arm_timeout)

    def periodic(
        self,
        plan: Plan,
        period: float,
        *,
        count: int | None = None,
        timeout: float | Default | None = DEFAULT,
        arm_timeout: float | None = None,
    ) -> Iterator[Row]:
        """One row per ``period``: ``for row in group.periodic(plan, 1.0, count=10):``
        (see :func:`aiotmc.periodic`; nothing is read ahead of the consumer)."""
        rows = self.group.periodic(
            plan, period, count=count, timeout=timeout, arm_timeout=arm_timeout
        )
        while True:
            try:
                yield self._portal.run(rows.__anext__)
            except StopAsyncIteration:
                return

    def close(self) -> None:
        """Close every member; idempotent."""
        if not self.group.closed:
            self._portal.run(self._close)
