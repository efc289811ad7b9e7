"""``/metrics``: Prometheus text built at scrape time (prometheus-client).

Two kinds of figures:

* what the dashboard sees on the hub (always there): readings by instrument, channel and
  quality; the age of readings when they reach the dashboard (acquisition to web, a
  histogram per instrument); instrument up/down and transitions; alerts firing; events
  the hub dropped for the dashboard; web logins, refusals, commands and clients;
* what only the gateway knows, from a :class:`MetricsSource` (the hub's ``stats()``):
  per-instrument query latency, errors and reconnects, queue depths and drops, the spool
  size, each sink's backlog and errors.

Each scrape reads the current numbers; nothing is stored in prometheus-client's global
registry (each app has its own).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

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
    "GatewayCounters",
    "InstrumentCounters",
    "MetricsSource",
    "WebCounters",
    "build_registry",
    "render",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST


class InstrumentCounters(Protocol):
    """One instrument source's counters (``aiotmc.gateway.model.InstrumentStats``)."""

    @property
    def readings(self) -> int: ...

    #: Failed or unparsable queries, and failed connection attempts.
    @property
    def errors(self) -> int: ...

    #: Connections made after the first one.
    @property
    def reconnects(self) -> int: ...

    #: Query round trips: their sum (seconds) and count.
    @property
    def latency_sum(self) -> float: ...

    @property
    def latency_count(self) -> int: ...


class GatewayCounters(Protocol):
    """A snapshot of the gateway's counters (``aiotmc.gateway.model.GatewayStats``)."""

    @property
    def instruments(self) -> Mapping[str, InstrumentCounters]: ...

    #: Per hub subscriber: events waiting in its queue, and events dropped for it.
    @property
    def queue_depths(self) -> Mapping[str, int]: ...

    @property
    def queue_dropped(self) -> Mapping[str, int]: ...

    #: Readings held in the spool, and readings deleted undelivered (spool full).
    @property
    def spool_size(self) -> int: ...

    @property
    def spool_dropped(self) -> int: ...

    #: Per sink: readings not yet delivered, and failed deliveries.
    @property
    def sink_backlog(self) -> Mapping[str, int]: ...

    @property
    def sink_errors(self) -> Mapping[str, int]: ...


class MetricsSource(Protocol):
    """What ``/metrics`` reads from the gateway besides the hub's events: the gateway
    hub's ``stats()``. The web component uses the hub it runs with (or the ``source`` it
    is given) when it has such a method; called at scrape time, on the event loop, it must
    not block."""

    def stats(self) -> GatewayCounters: ...


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
        stats_method = _method(self.source, "stats")
        if stats_method is None:  # the hub's events are all there is
            yield _labelled(
                CounterMetricFamily,
                "aiotmc_hub_dropped",
                "Events the hub dropped for a slow subscriber (oldest first).",
                "subscriber",
                {self.subscriber: self.hub.dropped(self.subscriber)},
            )
            yield _labelled(
                CounterMetricFamily,
                "aiotmc_instrument_reconnects",
                "Times an instrument's link was re-established.",
                "instrument",
                self.state.reconnects,
            )
            return
        stats: GatewayCounters = stats_method()
        instruments = stats.instruments
        latency = SummaryMetricFamily(
            "aiotmc_instrument_latency_seconds",
            "Query round trips per instrument.",
            labels=["instrument"],
        )
        for name, item in instruments.items():
            latency.add_metric([name], item.latency_count, item.latency_sum)
        yield latency
        for metric, help_text, attribute in (
            ("aiotmc_instrument_readings", "Readings acquired per instrument.", "readings"),
            ("aiotmc_instrument_errors", "Failed queries and connections.", "errors"),
            ("aiotmc_instrument_reconnects", "Connections after the first.", "reconnects"),
        ):
            values = {name: getattr(item, attribute) for name, item in instruments.items()}
            yield _labelled(CounterMetricFamily, metric, help_text, "instrument", values)
        yield _labelled(
            GaugeMetricFamily,
            "aiotmc_queue_depth",
            "Events waiting per hub subscriber.",
            "subscriber",
            stats.queue_depths,
        )
        yield _labelled(
            CounterMetricFamily,
            "aiotmc_hub_dropped",
            "Events the hub dropped for a slow subscriber (oldest first).",
            "subscriber",
            stats.queue_dropped,
        )
        yield GaugeMetricFamily(
            "aiotmc_spool_readings", "Readings held in the spool.", stats.spool_size
        )
        yield CounterMetricFamily(
            "aiotmc_spool_dropped",
            "Readings deleted undelivered (spool full).",
            stats.spool_dropped,
        )
        yield _labelled(
            GaugeMetricFamily,
            "aiotmc_sink_backlog",
            "Readings not yet delivered per sink.",
            "sink",
            stats.sink_backlog,
        )
        yield _labelled(
            CounterMetricFamily,
            "aiotmc_sink_errors",
            "Failed deliveries per sink.",
            "sink",
            stats.sink_errors,
        )


def _labelled(
    kind: type[CounterMetricFamily] | type[GaugeMetricFamily],
    name: str,
    help_text: str,
    label: str,
    values: Mapping[str, float],
) -> Metric:
    family = kind(name, help_text, labels=[label])
    for key, value in values.items():
        family.add_metric([key], value)
    return family


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
