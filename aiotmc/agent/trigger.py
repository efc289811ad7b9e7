"""One trigger instant for instruments on several hosts (their agents fire together)."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import anyio

from .._exceptions import UnsupportedOperation
from ..instrument import Instrument
from ..transports.nats.remote import RemoteTransport

__all__ = ["TriggerReport", "trigger_together"]


@dataclass(frozen=True, slots=True)
class TriggerReport:
    """When the instruments were told to trigger, and when each agent fired."""

    scheduled: float  #: the Unix time asked for
    fired: dict[str, float]  #: resource -> Unix time its agent sent the trigger

    @property
    def skew(self) -> float:
        """Seconds between the first and the last trigger."""
        times = list(self.fired.values())
        return max(times) - min(times) if times else 0.0

    @property
    def lateness(self) -> float:
        """Median seconds after the scheduled instant."""
        return statistics.median(t - self.scheduled for t in self.fired.values())


async def trigger_together(
    instruments: list[Instrument], *, lead: float = 0.05, timeout: float = 10.0
) -> TriggerReport:
    """Trigger every remote instrument at one instant, ``lead`` seconds from now.

    Each agent sleeps until the instant by its own clock and fires: how close the triggers
    are depends on how well the hosts' clocks agree (PTP or chrony; docs/distributed.md).
    Instruments that are not remote raise :class:`~aiotmc.UnsupportedOperation`.
    """
    links = []
    for inst in instruments:
        link = inst.transport
        if not isinstance(link, RemoteTransport):
            raise UnsupportedOperation(f"{inst.resource} is not a remote (nats://) instrument")
        links.append((inst, link))
    when = time.time() + lead
    fired: dict[str, float] = {}

    async def one(inst: Instrument, link: RemoteTransport) -> None:
        async with inst.lock():
            fired[inst.resource] = await link.trigger_at(
                when, deadline=anyio.current_time() + lead + timeout
            )

    async with anyio.create_task_group() as tg:
        for inst, link in links:
            tg.start_soon(one, inst, link)
    return TriggerReport(when, fired)
