"""How a monitored SCPI signal learns of new values: service requests, or polling.

ophyd-async monitors a signal (``subscribe``, ``observe_value``, a staged signal's cache)
through its backend's ``set_callback``. An SCPI instrument pushes nothing but service
requests, so :class:`Monitor` says which service requests mean "a new value" and, where
the instrument has no service requests, how often to read the value instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .._types import EventStatus, ServiceRequest, StatusByte

__all__ = ["Monitor"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Monitor:
    """Monitoring of one signal.

    Args:
        srq: use service requests where the instrument has them (its transport's
            capabilities, or an instrument opened with ``srq_poll_interval=``); ``False``
            always polls.
        status: status-byte bits of which at least one must be set in the service request
            (``StatusByte.NONE``: any service request re-reads the value).
        event_status: event-status-register bits of which at least one must be set:
            ``*ESR?`` is then read after each service request (once for all signals of the
            instrument; reading clears it, which re-arms an ESB request), e.g.
            ``EventStatus.OPC`` for "a measurement ended with ``*OPC``".
        poll_period: seconds between reads when polling (a value is delivered when it
            changed, and once at the start).

    The instrument must be set up to request service (``*SRE``/``*ESE``...): the signal
    only listens. ``ValueError`` for a poll period that is not a positive number.
    """

    srq: bool = True
    status: StatusByte = StatusByte.NONE
    event_status: EventStatus = EventStatus.NONE
    poll_period: float = 1.0

    def __post_init__(self) -> None:
        period = self.poll_period
        if isinstance(period, bool) or not isinstance(period, int | float):
            raise ValueError(f"poll_period must be a number of seconds, not {period!r}")
        if not (math.isfinite(period) and 0 < period <= 86400):
            raise ValueError(f"poll_period must be in (0, 86400] seconds, not {period!r}")

    def wants(self, event: ServiceRequest) -> bool:
        """True when ``event``'s status byte passes :attr:`status` (ESR not considered)."""
        return not self.status or bool(event.status & self.status)


#: The default: each service request re-reads; without them, read every second.
DEFAULT_MONITOR = Monitor()
