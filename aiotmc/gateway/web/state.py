"""What the dashboard knows, built from the hub's events: the latest value of every
channel, each instrument's status, the alerts that are pending or firing, and the
counters behind ``/metrics``. Also the JSON the browser gets for each event.

Memory is bounded: at most ``max_channels`` channels and ``max_alerts`` open alerts are
tracked (the gateway's config bounds both in practice; the caps guard against a runaway
producer), and the resolved-alert history is a short ring.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiotmc.gateway.model import (
    Alert,
    AlertState,
    Event,
    InstrumentState,
    Reading,
    StatusEvent,
    Value,
)

__all__ = ["AGE_BUCKETS", "LiveState", "event_json"]

#: Histogram buckets (seconds) of a reading's age when the dashboard gets it.
AGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

AlertKey = tuple[str, str, str | None]


def _json_value(value: Value) -> Value:
    """JSON has no NaN or infinity: those travel as strings (``"nan"``, ``"inf"``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def event_json(event: Event) -> dict[str, Any]:
    """The JSON object the browser gets for one hub event (``type`` says which)."""
    if isinstance(event, Reading):
        data = event.to_json()
        data["value"] = _json_value(event.value)
        return {"type": "reading", "path": event.path, **data}
    if isinstance(event, StatusEvent):
        return {
            "type": "status",
            "instrument": event.instrument,
            "state": event.state.value,
            "timestamp": event.timestamp,
            "detail": event.detail,
        }
    return {
        "type": "alert",
        "rule": event.rule,
        "instrument": event.instrument,
        "channel": event.channel,
        "state": event.state.value,
        "severity": event.severity,
        "summary": event.summary,
        "timestamp": event.timestamp,
        "value": _json_value(event.value),
        "labels": dict(event.labels),
    }


@dataclass(slots=True)
class Histogram:
    """Cumulative-bucket histogram (Prometheus style) of one instrument's reading ages."""

    counts: list[int] = field(default_factory=lambda: [0] * len(AGE_BUCKETS))
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(AGE_BUCKETS, value)
        if index < len(AGE_BUCKETS):
            self.counts[index] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, float]]:
        """``[(le, count), ...]`` ending with ``+Inf``."""
        running = 0
        out = []
        for bound, count in zip(AGE_BUCKETS, self.counts, strict=True):
            running += count
            out.append((repr(bound), float(running)))
        out.append(("+Inf", float(self.count)))
        return out


class LiveState:
    """Apply hub events with :meth:`apply`; read :meth:`snapshot` and the counters."""

    def __init__(
        self,
        *,
        max_channels: int = 10_000,
        max_alerts: int = 1_000,
        history: int = 50,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_channels = max_channels
        self.max_alerts = max_alerts
        self._clock = clock
        self.values: dict[str, Reading] = {}
        self.instruments: dict[str, StatusEvent] = {}
        self.alerts: dict[AlertKey, Alert] = {}
        self.resolved: deque[Alert] = deque(maxlen=history)
        #: (instrument, channel, quality) -> readings seen
        self.readings: dict[tuple[str, str, str], int] = {}
        #: instrument -> reading age histogram (acquisition to dashboard)
        self.ages: dict[str, Histogram] = {}
        #: instrument -> online->offline and offline->online transitions seen
        self.disconnects: dict[str, int] = {}
        self.reconnects: dict[str, int] = {}
        #: alert state -> transitions seen
        self.alert_transitions: dict[str, int] = {}
        self.ignored = 0  #: events beyond the caps

    def apply(self, event: Event) -> None:
        """Fold one hub event into the state."""
        if isinstance(event, Reading):
            self._reading(event)
        elif isinstance(event, StatusEvent):
            self._status(event)
        elif isinstance(event, Alert):
            self._alert(event)

    def _reading(self, reading: Reading) -> None:
        path = reading.path
        if path not in self.values and len(self.values) >= self.max_channels:
            self.ignored += 1
            return
        self.values[path] = reading
        key = (reading.instrument, reading.channel, reading.quality.value)
        self.readings[key] = self.readings.get(key, 0) + 1
        histogram = self.ages.get(reading.instrument)
        if histogram is None:
            histogram = self.ages[reading.instrument] = Histogram()
        histogram.observe(max(0.0, self._clock() - reading.timestamp))

    def _status(self, event: StatusEvent) -> None:
        name = event.instrument
        previous = self.instruments.get(name)
        if name not in self.instruments and len(self.instruments) >= self.max_channels:
            self.ignored += 1
            return
        self.instruments[name] = event
        if previous is None or previous.state is event.state:
            return
        if event.state is InstrumentState.OFFLINE:
            self.disconnects[name] = self.disconnects.get(name, 0) + 1
        else:
            self.reconnects[name] = self.reconnects.get(name, 0) + 1

    def _alert(self, alert: Alert) -> None:
        key = (alert.rule, alert.instrument, alert.channel)
        state = alert.state.value
        self.alert_transitions[state] = self.alert_transitions.get(state, 0) + 1
        if alert.state is AlertState.RESOLVED:
            self.alerts.pop(key, None)
            self.resolved.append(alert)
        elif key in self.alerts or len(self.alerts) < self.max_alerts:
            self.alerts[key] = alert
        else:
            self.ignored += 1

    def firing(self) -> dict[str, int]:
        """severity -> alerts firing now."""
        counts: dict[str, int] = {}
        for alert in self.alerts.values():
            if alert.state is AlertState.FIRING:
                counts[alert.severity] = counts.get(alert.severity, 0) + 1
        return counts

    def snapshot(self) -> dict[str, Any]:
        """Everything a freshly connected page needs (JSON)."""
        return {
            "instruments": {
                name: {"state": e.state.value, "timestamp": e.timestamp, "detail": e.detail}
                for name, e in self.instruments.items()
            },
            "values": [event_json(r) for r in self.values.values()],
            "alerts": [event_json(a) for a in self.alerts.values()],
            "resolved": [event_json(a) for a in self.resolved],
        }
