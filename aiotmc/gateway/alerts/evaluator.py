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

Cost: a reading touches only the rules matching its channel (matched once, cached);
timers live in a heap with at most one entry per series, so neither depends on how many
series there are.

Timer transitions carry the exact time they happened (``since + for``, ``last + after``),
not the time ``advance`` was called. Rates use the readings' own timestamps; only
readings of good quality count for thresholds, rates and freshness.
"""

from __future__ import annotations

import heapq
import itertools
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
    queued: float | None = None  # the time of its entry in the timer heap

    def due(self) -> float | None:
        """When a timer next changes this series: ``for`` elapses, or it goes stale."""
        if self.state is AlertState.PENDING:
            return self.since + self.rule.for_
        if self.state is None and self.last_seen is not None:
            return self.last_seen + self.rule.after  # only stale rules set last_seen
        return None


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
        # (time, tie-break, series): at most one live entry per series (``queued``);
        # an entry whose series has moved on is dropped or re-queued when it comes up.
        self._timers: list[tuple[float, int, _Series]] = []
        self._tie = itertools.count()
        self._matching: dict[tuple[str, str], tuple[Rule, ...]] = {}
        for rule in self.rules:
            # A stale rule that names its channel counts from the start: a channel that
            # never answers goes stale too. With patterns it starts at the first reading.
            if rule.kind is RuleKind.STALE and rule.literal:
                series = self._get(rule, rule.instrument, rule.channel, None)
                if series is not None:
                    series.last_seen = now
                    self._schedule(series)

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
        timers = self._timers
        while timers and timers[0][0] <= now:
            at, _, series = heapq.heappop(timers)
            if series.queued != at:
                continue  # superseded by an earlier entry
            series.queued = None
            due = series.due()
            while due is not None and due <= now:
                if series.state is AlertState.PENDING:
                    alerts.append(self._to(series, AlertState.FIRING, due))
                else:  # gone stale
                    alerts += self._set(series, True, due, None)
                due = series.due()
            self._schedule(series)
        alerts.sort(key=lambda a: a.timestamp)
        return alerts

    def next_deadline(self) -> float | None:
        """When ``advance`` will next have a transition to make, or None (only events)."""
        timers = self._timers
        while timers:
            at, _, series = timers[0]
            if series.queued != at:
                heapq.heappop(timers)
            elif series.due() != at:  # the series moved on: re-queue at its real time
                heapq.heappop(timers)
                series.queued = None
                self._schedule(series)
            else:
                return at
        return None

    def _schedule(self, series: _Series) -> None:
        due = series.due()
        if due is not None and (series.queued is None or due < series.queued):
            series.queued = due
            heapq.heappush(self._timers, (due, next(self._tie), series))

    def active(self) -> list[Alert]:
        """The alerts now pending or firing (e.g. for a dashboard that starts late)."""
        return [
            self._alert(s, s.state, s.since) for s in self._series.values() if s.state is not None
        ]

    # ------------------------------------------------------------------ events

    def _rules_for(self, instrument: str, channel: str) -> tuple[Rule, ...]:
        """The reading rules matching a channel (cached: patterns are matched once)."""
        key = (instrument, channel)
        rules = self._matching.get(key)
        if rules is None:
            if len(self._matching) >= 4 * self.max_series:
                self._matching.clear()  # bounded, whatever names arrive
            rules = tuple(
                r for r in self.rules
                if r.kind is not RuleKind.OFFLINE and r.matches(instrument, channel)
            )  # fmt: skip
            self._matching[key] = rules
        return rules

    def _reading(self, reading: Reading, now: float) -> list[Alert]:
        rules = self._rules_for(reading.instrument, reading.channel)
        if not rules:
            return []
        alerts: list[Alert] = []
        good = reading.quality is Quality.GOOD
        value = number(reading) if good else None
        for rule in rules:
            if rule.kind is RuleKind.STALE:
                if not good:
                    continue
                series = self._get(rule, reading.instrument, reading.channel, reading)
                if series is None:
                    continue
                series.last_seen = now
                series.unit = reading.unit
                alerts += self._set(series, False, now, reading.value)
                self._schedule(series)
                continue
            if value is None:
                continue
            series = self._get(rule, reading.instrument, reading.channel, reading)
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
                series = self._get(rule, event.instrument, None, None)
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
        self, rule: Rule, instrument: str, channel: str | None, reading: Reading | None
    ) -> _Series | None:
        key = (rule.name, instrument, channel)
        series = self._series.get(key)
        if series is None:
            if len(self._series) >= self.max_series:
                self.overflow += 1
                return None
            labels = dict(self.labels)
            if reading is not None:  # a reading knows its own site and host
                labels.update(site=reading.site, host=reading.host)
            series = _Series(rule, instrument, channel, {**labels, **rule.labels})
            self._series[key] = series
        return series

    def _set(self, series: _Series, active: bool, at: float, value: Value) -> list[Alert]:
        series.value = value
        if active and series.state is None:
            series.since = at
            if series.rule.for_ > 0:
                alert = self._to(series, AlertState.PENDING, at)
                self._schedule(series)
                return [alert]
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
