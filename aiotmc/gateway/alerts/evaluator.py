"""The rule engine without I/O: events and a clock in, alert transitions out.

``feed(event, now)`` and ``advance(now)`` return the :class:`~aiotmc.gateway.Alert`
transitions that happened up to ``now`` (Unix seconds, the caller's clock), in time
order; ``next_deadline()`` says when ``advance`` has something to do next (a pending
alert's ``for`` elapses, a channel goes stale). No clock is read here, so the tests
drive time by hand.

Each rule tracks one *series* per matching (instrument, channel) (per instrument for
``offline``), with one state: ok → pending (condition true, ``for`` not yet elapsed) →
firing → resolved (back to ok). Exactly one Alert is emitted per transition, never one
per reading: that is the de-duplication. With ``for = 0`` a series goes from ok straight
to firing; a pending series whose condition clears emits ``resolved`` too (consumers
showing pending alerts need it; notifiers only tell about what fired).

Timer transitions carry the exact time they happened (``since + for``, ``last + after``),
not the time ``advance`` was called. Rates use the readings' own timestamps; only
readings of good quality count for thresholds, rates and freshness.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..model import Alert, AlertState, Event, InstrumentState, Quality, Reading, StatusEvent, Value
from .rules import Rule, RuleKind

__all__ = ["RuleEvaluator"]

SeriesKey = tuple[str, str, str | None]


@dataclass(slots=True)
class _Series:
    rule: Rule
    instrument: str
    channel: str | None
    labels: dict[str, str]
    state: AlertState | None = None  # None: ok
    since: float = 0.0  # when the condition became true
    value: Value = None
    unit: str = ""
    last_seen: float | None = None  # stale rules: time of the last good reading
    samples: deque[tuple[float, float]] = field(default_factory=deque)  # rate rules


def number(reading: Reading) -> float | None:
    """The reading's value as a finite float, or None (text, none, NaN, huge integers)."""
    try:
        return reading.numeric()
    except OverflowError:
        return None


def _show(value: Value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


class RuleEvaluator:
    """Evaluate ``rules`` from time ``now`` on. ``labels`` (e.g. site and host) go into
    every alert, under the rule's own ``labels``. At most ``max_series`` series are
    tracked; readings that would need more are ignored and counted in ``overflow``."""

    def __init__(
        self,
        rules: Sequence[Rule],
        *,
        now: float,
        labels: Mapping[str, str] | None = None,
        max_series: int = 10_000,
    ) -> None:
        self.rules = tuple(rules)
        self.labels = dict(labels or {})
        self.max_series = max_series
        self.overflow = 0
        self._series: dict[SeriesKey, _Series] = {}
        for rule in self.rules:
            # A stale rule that names its channel counts from the start: a channel that
            # never answers goes stale too. With patterns it starts at the first reading.
            if rule.kind is RuleKind.STALE and rule.literal:
                series = self._get(rule, rule.instrument, rule.channel, self.labels)
                if series is not None:
                    series.last_seen = now

    # ------------------------------------------------------------------ public

    def feed(self, event: Event, now: float) -> list[Alert]:
        """Timers due by ``now`` first, then ``event``'s effect; transitions in order."""
        alerts = self.advance(now)
        if isinstance(event, Reading):
            alerts += self._reading(event, now)
        elif isinstance(event, StatusEvent):
            alerts += self._status(event, now)
        return alerts  # an Alert (ours, echoed by the hub) changes nothing

    def advance(self, now: float) -> list[Alert]:
        """The transitions timers cause up to ``now`` (``for`` elapsed, data gone stale)."""
        alerts: list[Alert] = []
        for series in self._series.values():
            rule = series.rule
            last = series.last_seen
            stale = rule.kind is RuleKind.STALE and series.state is None and last is not None
            if stale and last is not None and now >= last + rule.after:
                alerts += self._set(series, True, last + rule.after, None)
            if series.state is AlertState.PENDING and now >= series.since + rule.for_:
                alerts.append(self._to(series, AlertState.FIRING, series.since + rule.for_))
        alerts.sort(key=lambda a: a.timestamp)
        return alerts

    def next_deadline(self) -> float | None:
        """When ``advance`` will next have a transition to make, or None (only events)."""
        deadlines = []
        for series in self._series.values():
            if series.state is AlertState.PENDING:
                deadlines.append(series.since + series.rule.for_)
            elif (
                series.rule.kind is RuleKind.STALE
                and series.state is None
                and series.last_seen is not None
            ):
                deadlines.append(series.last_seen + series.rule.after)
        return min(deadlines, default=None)

    def active(self) -> list[Alert]:
        """The alerts now pending or firing (e.g. for a dashboard that starts late)."""
        return [
            self._alert(s, s.state, s.since) for s in self._series.values() if s.state is not None
        ]

    # ------------------------------------------------------------------ events

    def _reading(self, reading: Reading, now: float) -> list[Alert]:
        alerts: list[Alert] = []
        good = reading.quality is Quality.GOOD
        value = number(reading) if good else None
        labels = {**self.labels, "site": reading.site, "host": reading.host}
        for rule in self.rules:
            if rule.kind is RuleKind.OFFLINE or not rule.matches(
                reading.instrument, reading.channel
            ):
                continue
            if rule.kind is RuleKind.STALE:
                if not good:
                    continue
                series = self._get(rule, reading.instrument, reading.channel, labels)
                if series is None:
                    continue
                series.last_seen = now
                series.unit = reading.unit
                alerts += self._set(series, False, now, reading.value)
                continue
            if value is None:
                continue
            series = self._get(rule, reading.instrument, reading.channel, labels)
            if series is None:
                continue
            series.unit = reading.unit
            observed = value
            if rule.kind is RuleKind.RATE:
                rate = self._rate(series, reading.timestamp, value)
                if rate is None:
                    continue
                observed = rate
            active = self._breached(rule, series.state is not None, observed)
            alerts += self._set(series, active, now, observed)
        return alerts

    def _status(self, event: StatusEvent, now: float) -> list[Alert]:
        alerts: list[Alert] = []
        for rule in self.rules:
            if rule.kind is RuleKind.OFFLINE and rule.matches(event.instrument, None):
                series = self._get(rule, event.instrument, None, self.labels)
                if series is not None:
                    offline = event.state is InstrumentState.OFFLINE
                    alerts += self._set(series, offline, now, event.state.value)
        return alerts

    @staticmethod
    def _rate(series: _Series, timestamp: float, value: float) -> float | None:
        samples = series.samples
        if samples and timestamp <= samples[-1][0]:
            return None  # out of order or repeated: no rate from it
        samples.append((timestamp, value))
        window = series.rule.window
        while len(samples) > 2 and samples[1][0] <= timestamp - window:
            samples.popleft()  # keep the newest sample at or before the window start
        if len(samples) < 2:
            return None
        (t0, v0), (t1, v1) = samples[0], samples[-1]
        rate = (v1 - v0) / (t1 - t0)
        return rate if math.isfinite(rate) else None

    @staticmethod
    def _breached(rule: Rule, active: bool, value: float) -> bool:
        """The condition, with the deadband: once active, it holds until the value is
        back inside the limits by ``hysteresis``."""
        above, below = rule.above, rule.below
        if not active:
            return (above is not None and value > above) or (below is not None and value < below)
        margin = rule.hysteresis
        inside = (above is None or value <= above - margin) and (
            below is None or value >= below + margin
        )
        return not inside

    # ------------------------------------------------------------------ state machine

    def _get(
        self, rule: Rule, instrument: str, channel: str | None, labels: Mapping[str, str]
    ) -> _Series | None:
        key = (rule.name, instrument, channel)
        series = self._series.get(key)
        if series is None:
            if len(self._series) >= self.max_series:
                self.overflow += 1
                return None
            series = _Series(rule, instrument, channel, {**labels, **rule.labels})
            self._series[key] = series
        return series

    def _set(self, series: _Series, active: bool, at: float, value: Value) -> list[Alert]:
        series.value = value
        if active and series.state is None:
            series.since = at
            if series.rule.for_ > 0:
                return [self._to(series, AlertState.PENDING, at)]
            return [self._to(series, AlertState.FIRING, at)]
        if not active and series.state is not None:
            return [self._to(series, AlertState.RESOLVED, at)]
        return []

    def _to(self, series: _Series, state: AlertState, at: float) -> Alert:
        series.state = None if state is AlertState.RESOLVED else state
        return self._alert(series, state, at)

    def _alert(self, series: _Series, state: AlertState, at: float) -> Alert:
        rule = series.rule
        template = rule.summary or rule.default_summary()
        summary = template.format(
            rule=rule.name,
            instrument=series.instrument,
            channel=series.channel or "",
            value=_show(series.value),
            unit=series.unit,
            state=state.value,
            severity=rule.severity,
            condition=rule.condition(),
        )
        return Alert(
            rule=rule.name,
            instrument=series.instrument,
            channel=series.channel,
            state=state,
            severity=rule.severity,
            summary=" ".join(summary.split()),
            timestamp=at,
            value=series.value,
            labels=dict(series.labels),
        )
