"""``/metrics``: Prometheus text built at scrape time (prometheus-client).

Two kinds of figures:

* what the dashboard sees on the hub (always there): readings by instrument, channel and
  quality; the age of readings when they reach the dashboard (acquisition to web, a
  histogram per instrument); instrument up/down and transitions; alerts firing; events
  the hub dropped for the dashboard; web logins, refusals, commands and clients;
* what only the gateway knows, from a :class:`MetricsSource` (the hub, if it implements
  any of its methods; each one is optional): per-instrument exchange latency, errors and
  reconnects, queue depths and the spool size.

Each scrape reads the current numbers; nothing is stored in prometheus-client's global
registry (each app has its own).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from aiotmc.gateway.model import Hub
from aiotmc.gateway.web.state import LiveState

__all__ = [
    "CONTENT_TYPE",
    "InstrumentMetrics",
    "MetricsSource",
    "WebCounters",
    "build_registry",
    "render",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST


@runtime_checkable
class InstrumentMetrics(Protocol):
    """One instrument's counters, as a gateway source keeps them (any object with these
    attributes: a dataclass, a named tuple...)."""

    @property
    def instrument(self) -> str: ...

    #: Exchanges (queries/fetches) completed or failed since start.
    @property
    def exchanges(self) -> int: ...

    #: Exchanges that failed (timeouts, I/O errors, unparsable answers).
    @property
    def errors(self) -> int: ...

    #: Times the link was re-established after a loss.
    @property
    def reconnects(self) -> int: ...

    #: Total seconds spent in completed exchanges (latency sum; ``exchanges`` is the count).
    @property
    def latency_seconds(self) -> float: ...


class MetricsSource(Protocol):
    """What ``/metrics`` reads from the gateway besides the hub's events.

    The web component looks for each method on the hub it runs with (or on the ``source``
    given to it) and uses those present: implement what you have. All are called at
    scrape time, on the event loop, and must not block.
    """

    def instrument_metrics(self) -> Iterable[InstrumentMetrics]:
        """Per-instrument exchange counters (see :class:`InstrumentMetrics`)."""
        ...

    def queue_depths(self) -> Mapping[str, int]:
        """Events waiting per bounded queue (hub subscribers by name, sink batches...)."""
        ...

    def spool_size(self) -> int:
        """Readings in the durable spool not yet stored by every sink."""
        ...


class WebCounters:
    """The web app's own counters (logins, refusals, commands, connected clients)."""

    def __init__(self) -> None:
        self.logins: dict[str, int] = {}
        self.refused: dict[str, int] = {}
        self.commands: dict[str, int] = {}
        self.clients = 0

    @staticmethod
    def bump(counter: dict[str, int], label: str) -> None:
        counter[label] = counter.get(label, 0) + 1


def _method(source: object, name: str) -> Callable[[], Any] | None:
    method = getattr(source, name, None)
    return method if callable(method) else None


class _Collector(Collector):
    def __init__(
        self,
        hub: Hub,
        state: LiveState,
        counters: WebCounters,
        sessions: Callable[[], int],
        subscriber: str,
        source: object | None,
    ) -> None:
        self.hub = hub
        self.state = state
        self.counters = counters
        self.sessions = sessions
        self.subscriber = subscriber
        self.source = hub if source is None else source

    def collect(self) -> Iterator[Metric]:
        yield from self._hub_view()
        yield from self._web()
        yield from self._source()

    def _hub_view(self) -> Iterator[Metric]:
        state = self.state
        info = GaugeMetricFamily(
            "aiotmc_gateway_info", "The gateway's identity.", labels=["gateway_id", "site", "host"]
        )
        info.add_metric([self.hub.gateway_id, self.hub.site, self.hub.host], 1)
        yield info
        readings = CounterMetricFamily(
            "aiotmc_readings",
            "Readings seen by the dashboard.",
            labels=["instrument", "channel", "quality"],
        )
        for (instrument, channel, quality), count in state.readings.items():
            readings.add_metric([instrument, channel, quality], count)
        yield readings
        ages = HistogramMetricFamily(
            "aiotmc_reading_age_seconds",
            "Time from acquisition to the dashboard, per instrument.",
            labels=["instrument"],
        )
        for instrument, histogram in state.ages.items():
            ages.add_metric([instrument], histogram.cumulative(), histogram.total)
        yield ages
        up = GaugeMetricFamily(
            "aiotmc_instrument_up", "1 when the instrument is online.", labels=["instrument"]
        )
        for instrument, event in state.instruments.items():
            up.add_metric([instrument], 1 if event.state.value == "online" else 0)
        yield up
        disconnects = CounterMetricFamily(
            "aiotmc_instrument_disconnects",
            "Online to offline transitions seen.",
            labels=["instrument"],
        )
        for instrument, count in state.disconnects.items():
            disconnects.add_metric([instrument], count)
        yield disconnects
        firing = GaugeMetricFamily(
            "aiotmc_alerts_firing", "Alerts firing now.", labels=["severity"]
        )
        for severity, count in state.firing().items():
            firing.add_metric([severity], count)
        yield firing
        transitions = CounterMetricFamily(
            "aiotmc_alert_transitions", "Alert state changes seen.", labels=["state"]
        )
        for alert_state, count in state.alert_transitions.items():
            transitions.add_metric([alert_state], count)
        yield transitions

    def _web(self) -> Iterator[Metric]:
        counters = self.counters
        for name, help_text, label, values in (
            ("aiotmc_web_logins", "Login attempts by result.", "result", counters.logins),
            ("aiotmc_web_refused", "Requests refused by the guard.", "check", counters.refused),
            ("aiotmc_web_commands", "Control requests by result.", "result", counters.commands),
        ):
            family = CounterMetricFamily(name, help_text, labels=[label])
            for key, count in values.items():
                family.add_metric([key], count)
            yield family
        yield GaugeMetricFamily("aiotmc_web_sessions", "Logged-in sessions.", self.sessions())
        yield GaugeMetricFamily("aiotmc_web_clients", "Live WebSocket clients.", counters.clients)

    def _source(self) -> Iterator[Metric]:
        dropped = CounterMetricFamily(
            "aiotmc_hub_dropped",
            "Events the hub dropped for a slow subscriber (oldest first).",
            labels=["subscriber"],
        )
        depths: Mapping[str, int] = {}
        if (queue_depths := _method(self.source, "queue_depths")) is not None:
            depths = queue_depths()
            depth = GaugeMetricFamily(
                "aiotmc_queue_depth", "Events waiting per queue.", labels=["queue"]
            )
            for name, value in depths.items():
                depth.add_metric([name], value)
            yield depth
        for name in {self.subscriber, *depths}:
            try:
                dropped.add_metric([name], self.hub.dropped(name))
            except KeyError:
                continue
        yield dropped
        if (spool_size := _method(self.source, "spool_size")) is not None:
            yield GaugeMetricFamily(
                "aiotmc_spool_readings", "Readings waiting in the durable spool.", spool_size()
            )
        reconnects = CounterMetricFamily(
            "aiotmc_instrument_reconnects",
            "Times an instrument's link was re-established.",
            labels=["instrument"],
        )
        if (instrument_metrics := _method(self.source, "instrument_metrics")) is None:
            for instrument, count in self.state.reconnects.items():
                reconnects.add_metric([instrument], count)
            yield reconnects
            return
        latency = SummaryMetricFamily(
            "aiotmc_instrument_latency_seconds",
            "Time per instrument exchange.",
            labels=["instrument"],
        )
        errors = CounterMetricFamily(
            "aiotmc_instrument_errors", "Failed instrument exchanges.", labels=["instrument"]
        )
        for item in instrument_metrics():
            latency.add_metric([item.instrument], item.exchanges, item.latency_seconds)
            errors.add_metric([item.instrument], item.errors)
            reconnects.add_metric([item.instrument], item.reconnects)
        yield latency
        yield errors
        yield reconnects


def build_registry(
    hub: Hub,
    state: LiveState,
    counters: WebCounters,
    *,
    sessions: Callable[[], int],
    subscriber: str,
    source: object | None = None,
) -> CollectorRegistry:
    """A registry of its own for one app (``source``: a :class:`MetricsSource`, default
    the hub)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(hub, state, counters, sessions, subscriber, source))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The Prometheus text exposition of ``registry``."""
    return generate_latest(registry)
