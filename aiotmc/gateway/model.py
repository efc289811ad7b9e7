"""The gateway's shared vocabulary: readings, status events, sinks and control requests.

Every other gateway module (sources, spool, sinks, alert rules, MQTT, the web app, the
controller) speaks in these types, so that each can be built and tested on its own.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from anyio.abc import ObjectReceiveStream

if TYPE_CHECKING:
    from ..instrument import Instrument

__all__ = [
    "Alert",
    "AlertState",
    "CommandRequest",
    "CommandResult",
    "Component",
    "Controller",
    "Event",
    "GatewayStats",
    "Hub",
    "InstrumentState",
    "InstrumentStats",
    "Quality",
    "Reading",
    "Sink",
    "StatusEvent",
]

Value = float | int | str | bool | None


class Quality(enum.StrEnum):
    """How far a reading can be trusted (sent with every value, like OPC UA's quality)."""

    GOOD = "good"
    #: The instrument answered but the answer did not parse as the channel's type.
    BAD = "bad"
    #: No fresh value within the channel's expected period.
    STALE = "stale"


class InstrumentState(enum.StrEnum):
    """An instrument's reachability as the gateway sees it (retained on MQTT)."""

    ONLINE = "online"
    OFFLINE = "offline"


@dataclass(frozen=True, slots=True)
class Reading:
    """One acquired value of one channel.

    ``gateway_id`` and ``seq`` form the idempotent key: ``seq`` grows by one per reading
    and survives restarts (the spool persists it), so a replay after a crash or an outage
    never stores a reading twice: sinks upsert or ignore on :attr:`key`.
    """

    gateway_id: str
    seq: int
    site: str
    host: str
    instrument: str
    channel: str
    value: Value
    unit: str
    #: Acquisition time, seconds since the Unix epoch (UTC), as from ``time.time()``.
    timestamp: float
    quality: Quality = Quality.GOOD

    @property
    def key(self) -> str:
        """The idempotent key, unique across gateways and restarts."""
        return f"{self.gateway_id}:{self.seq}"

    @property
    def path(self) -> str:
        """``site/host/instrument/channel``: the MQTT topic suffix and the series name."""
        return f"{self.site}/{self.host}/{self.instrument}/{self.channel}"

    def numeric(self) -> float | None:
        """The value as a finite float (booleans as 0/1), or None when it has none."""
        value = self.value
        if isinstance(value, bool):
            return float(value)
        if isinstance(value, int | float) and math.isfinite(value):
            return float(value)
        return None

    def to_json(self) -> dict[str, Any]:
        """The JSON payload published and spooled (``from_json`` reads it back)."""
        return {
            "gateway_id": self.gateway_id,
            "seq": self.seq,
            "site": self.site,
            "host": self.host,
            "instrument": self.instrument,
            "channel": self.channel,
            "value": self.value,
            "unit": self.unit,
            "timestamp": self.timestamp,
            "quality": self.quality.value,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Reading:
        """Rebuild a reading from :meth:`to_json`'s output (``KeyError``/``ValueError`` on junk)."""
        value = data["value"]
        if value is not None and not isinstance(value, float | int | str | bool):
            raise ValueError(f"reading value of type {type(value).__name__}")
        return cls(
            gateway_id=str(data["gateway_id"]),
            seq=int(data["seq"]),
            site=str(data["site"]),
            host=str(data["host"]),
            instrument=str(data["instrument"]),
            channel=str(data["channel"]),
            value=value,
            unit=str(data["unit"]),
            timestamp=float(data["timestamp"]),
            quality=Quality(data["quality"]),
        )


@dataclass(frozen=True, slots=True)
class StatusEvent:
    """An instrument went online or offline (``detail`` says why, e.g. the error)."""

    instrument: str
    state: InstrumentState
    timestamp: float
    detail: str = ""


@runtime_checkable
class Sink(Protocol):
    """Central storage for readings (SQLite, PostgreSQL, InfluxDB line protocol...).

    ``write`` stores a batch in order and is idempotent by :attr:`Reading.key` (a batch
    replayed from the spool after a crash may repeat readings already stored). It raises
    :class:`aiotmc.SinkUnavailableError` when the store cannot be reached right now: the
    caller spools the batch and retries later. ``aclose`` is idempotent.
    """

    name: str

    async def open(self) -> None: ...

    async def write(self, batch: Sequence[Reading]) -> None: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class CommandRequest:
    """A remote-control request: who asks for which operation on which instrument.

    ``operation`` is a name from the config's allow-list (e.g. ``set_voltage``), or ``scpi``
    for raw SCPI (admin role only), whose text is then ``value``. ``source`` says where it came
    from (``mqtt``, ``web``) for the audit log.
    """

    user: str
    instrument: str
    operation: str
    value: Value = None
    source: str = "api"
    #: Roles of ``user`` (resolved by whoever authenticated the request).
    roles: tuple[str, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class CommandResult:
    """The outcome of a :class:`CommandRequest` (also what the audit log records)."""

    ok: bool
    detail: str
    answer: str | None = None


class Controller(Protocol):
    """Executes remote-control requests: allow-list per role, value limits, audit log."""

    async def execute(self, request: CommandRequest) -> CommandResult: ...


class AlertState(enum.StrEnum):
    """An alert's life: pending (condition true, ``for`` not yet elapsed) → firing → resolved."""

    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class Alert:
    """A change of an alert rule's state for one instrument/channel (de-duplicated upstream:
    a rule emits one event per transition, never one per reading)."""

    rule: str
    instrument: str
    channel: str | None
    state: AlertState
    severity: str
    summary: str
    #: When the transition happened (Unix seconds) and the value that caused it, if any.
    timestamp: float
    value: Value = None
    #: site, host and any tags of the instrument (Alertmanager labels).
    labels: Mapping[str, str] = field(default_factory=dict)


#: What flows through the gateway's hub.
Event = Reading | StatusEvent | Alert


@dataclass(frozen=True, slots=True)
class InstrumentStats:
    """Counters of one instrument source, since the gateway started (for ``/metrics``)."""

    state: InstrumentState
    readings: int = 0
    #: Failed or unparsable queries, and failed connection attempts.
    errors: int = 0
    #: Connections made after the first one.
    reconnects: int = 0
    #: Query round trips: their sum (seconds) and count, and the last one.
    latency_sum: float = 0.0
    latency_count: int = 0
    last_latency: float | None = None


@dataclass(frozen=True, slots=True)
class GatewayStats:
    """A snapshot of the running gateway's counters (``Hub.stats()``)."""

    instruments: Mapping[str, InstrumentStats]
    #: Per hub subscriber: events waiting in its queue, and events dropped for it.
    queue_depths: Mapping[str, int]
    queue_dropped: Mapping[str, int]
    #: Readings held in the spool, and readings deleted undelivered (spool full).
    spool_size: int
    spool_dropped: int
    #: Per sink: readings not yet delivered, and failed deliveries.
    sink_backlog: Mapping[str, int]
    sink_errors: Mapping[str, int]


class Hub(Protocol):
    """The running gateway as its parts see it (implemented in ``aiotmc.gateway.hub``).

    Readings and status events come from the instrument sources, alerts from the rule
    engine. Every subscriber gets its own bounded queue; when a slow subscriber's queue is
    full the oldest event is dropped for it alone and counted (``dropped``), so that a
    stuck web client or broker never stalls acquisition. Storage does not subscribe: it is
    fed from the durable spool, which never drops.
    """

    gateway_id: str
    site: str
    host: str
    controller: Controller

    def subscribe(
        self, name: str, *, maxsize: int = 1000
    ) -> AbstractAsyncContextManager[ObjectReceiveStream[Event]]: ...

    async def publish(self, event: Event) -> None: ...

    def dropped(self, name: str) -> int: ...

    def stats(self) -> GatewayStats: ...

    def instrument(self, name: str) -> AbstractAsyncContextManager[Instrument]:
        """The open instrument ``name`` for one exclusive exchange (the controller's way
        in); ``GatewayError`` when it is unknown or offline."""
        ...


class Component(Protocol):
    """A long-running part of the gateway (MQTT bridge, rule engine, notifier, web app).

    ``run`` works until cancelled, calls ``task_status.started()`` once it is ready, and
    handles its own reconnects; the gateway starts each in its task group.
    """

    name: str

    async def run(self, hub: Hub, *, task_status: Any) -> None: ...
