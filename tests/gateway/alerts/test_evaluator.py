"""The sans-IO rule engine: readings, status events and a hand-driven clock in, alert
transitions out. Plain sync tests, plus hypothesis against a reference model."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiotmc.gateway.alerts import Rule, RuleEvaluator, RuleKind
from aiotmc.gateway.model import Alert, AlertState, InstrumentState, Quality, Reading, StatusEvent

PENDING, FIRING, RESOLVED = AlertState.PENDING, AlertState.FIRING, AlertState.RESOLVED


def rd(value: object, t: float = 0.0, *, instrument: str = "psu", channel: str = "volt",
       quality: Quality = Quality.GOOD, unit: str = "V") -> Reading:  # fmt: skip
    return Reading("gw", 0, "lab", "bench", instrument, channel, value, unit, t, quality)  # type: ignore[arg-type]


def states(alerts: Sequence[Alert]) -> list[tuple[AlertState, float]]:
    return [(a.state, a.timestamp) for a in alerts]


def feed_all(ev: RuleEvaluator, values: Sequence[float], start: float = 1.0) -> list[Alert]:
    """Feed ``values`` one second apart (reading time = clock)."""
    out: list[Alert] = []
    for i, v in enumerate(values):
        out += ev.feed(rd(v, start + i), start + i)
    return out


# ------------------------------------------------------------------ thresholds


def test_above_fires_once_and_resolves_once() -> None:
    ev = RuleEvaluator([Rule("hot", RuleKind.THRESHOLD, above=10)], now=0)
    alerts = feed_all(ev, [5, 10, 11, 12, 30, 10, 9, 11])
    assert states(alerts) == [(FIRING, 3), (RESOLVED, 6), (FIRING, 8)]
    assert [a.value for a in alerts] == [11, 10, 11]
    assert ev.next_deadline() is None  # nothing timed: for = 0


def test_below_and_a_band() -> None:
    ev = RuleEvaluator([Rule("cold", RuleKind.THRESHOLD, below=0)], now=0)
    assert states(feed_all(ev, [1, 0, -1, -5, 0.5])) == [(FIRING, 3), (RESOLVED, 5)]
    ev = RuleEvaluator([Rule("band", RuleKind.THRESHOLD, below=1, above=2)], now=0)
    alerts = feed_all(ev, [1.5, 2.5, 1.5, 0.5, 0.7, 1, 3])
    assert states(alerts) == [(FIRING, 2), (RESOLVED, 3), (FIRING, 4), (RESOLVED, 6), (FIRING, 7)]
    assert alerts[1].summary == "psu/volt = 1.5 V (outside [1, 2])"


def test_hysteresis_is_a_deadband() -> None:
    ev = RuleEvaluator([Rule("hot", RuleKind.THRESHOLD, above=10, hysteresis=1)], now=0)
    # 10.5 fires; 9.5 and 9.1 are inside the deadband: still firing; 9 resolves;
    # 10 does not fire again (not above), 10.01 does.
    alerts = feed_all(ev, [10.5, 9.5, 9.1, 10.9, 9, 10, 10.01])
    assert states(alerts) == [(FIRING, 1), (RESOLVED, 5), (FIRING, 7)]
    band = Rule("band", RuleKind.THRESHOLD, above=10, below=0, hysteresis=2)
    ev = RuleEvaluator([band], now=0)
    alerts = feed_all(ev, [-1, 1, 2, 11, 8.5, 8])
    assert states(alerts) == [(FIRING, 1), (RESOLVED, 3), (FIRING, 4), (RESOLVED, 6)]


def test_for_makes_it_pending_first_then_firing_on_time() -> None:
    ev = RuleEvaluator([Rule("hot", RuleKind.THRESHOLD, above=10, for_=5)], now=0)
    assert states(ev.feed(rd(11, 1), 1)) == [(PENDING, 1)]
    assert ev.next_deadline() == 6
    assert ev.advance(5.999) == []
    assert ev.feed(rd(12, 3), 3) == []  # still pending, no new event
    fired = ev.advance(7.5)  # called late: the transition keeps its own time
    assert states(fired) == [(FIRING, 6)]
    assert ev.next_deadline() is None and ev.advance(100) == []
    assert states(ev.feed(rd(5, 101), 101)) == [(RESOLVED, 101)]


def test_a_pending_alert_that_clears_resolves_without_firing() -> None:
    ev = RuleEvaluator([Rule("hot", RuleKind.THRESHOLD, above=10, for_=5)], now=0)
    alerts = ev.feed(rd(11, 1), 1) + ev.feed(rd(9, 4), 4) + ev.advance(20)
    assert states(alerts) == [(PENDING, 1), (RESOLVED, 4)]
    # it starts over: the next breach waits the full duration again
    alerts = ev.feed(rd(11, 21), 21) + ev.advance(25.9) + ev.advance(26)
    assert states(alerts) == [(PENDING, 21), (FIRING, 26)]


def test_a_reading_after_the_deadline_fires_before_it_is_applied() -> None:
    ev = RuleEvaluator([Rule("hot", RuleKind.THRESHOLD, above=10, for_=2)], now=0)
    ev.feed(rd(11, 1), 1)
    assert states(ev.feed(rd(5, 4), 4)) == [(FIRING, 3), (RESOLVED, 4)]


def test_only_good_numeric_readings_count() -> None:
    ev = RuleEvaluator([Rule("hot", RuleKind.THRESHOLD, above=10)], now=0)
    ignored = [
        rd(50, 1, quality=Quality.BAD),
        rd(50, 2, quality=Quality.STALE),
        rd("OVLD", 3),
        rd(None, 4),
        rd(math.nan, 5),
        rd(math.inf, 6),
        rd(10**400, 7),
    ]
    assert [a for r in ignored for a in ev.feed(r, r.timestamp)] == []
    assert states(ev.feed(rd(True, 8), 8)) == []  # booleans are 0/1
    assert states(ev.feed(rd(11, 9), 9)) == [(FIRING, 9)]
    assert ev.feed(rd(0, 10, quality=Quality.BAD), 10) == []  # a bad reading does not resolve


def test_patterns_make_one_series_per_instrument_and_channel() -> None:
    rule = Rule("hot", RuleKind.THRESHOLD, instrument="psu*", channel="v?", above=1)
    ev = RuleEvaluator([rule], now=0)
    alerts = []
    for instrument, channel in [("psu1", "v1"), ("psu2", "v1"), ("psu1", "v2"), ("dmm", "v1"),
                                ("psu1", "volt"), ("psu1", "v1")]:  # fmt: skip
        alerts += ev.feed(rd(5, 1, instrument=instrument, channel=channel), 1)
    assert [(a.instrument, a.channel) for a in alerts] == [("psu1", "v1"), ("psu2", "v1"),
                                                           ("psu1", "v2")]  # fmt: skip
    assert {(a.instrument, a.channel) for a in ev.active()} == {
        ("psu1", "v1"), ("psu2", "v1"), ("psu1", "v2")
    }  # fmt: skip


def test_alerts_carry_labels_severity_and_summaries() -> None:
    rules = [
        Rule("hot", RuleKind.THRESHOLD, above=1, severity="critical", labels={"team": "cryo"},
             summary="{rule}: {instrument} {channel} at {value}{unit} is {state} ({severity})"),
        Rule("gone", RuleKind.OFFLINE),
    ]  # fmt: skip
    ev = RuleEvaluator(rules, now=0, labels={"site": "default", "host": "gw"})
    [hot] = ev.feed(rd(2.5, 1), 1)
    assert hot.labels == {"site": "lab", "host": "bench", "team": "cryo"}
    assert (hot.severity, hot.rule) == ("critical", "hot")
    assert hot.summary == "hot: psu volt at 2.5V is firing (critical)"
    [gone] = ev.feed(StatusEvent("psu", InstrumentState.OFFLINE, 2), 2)
    assert gone.labels == {"site": "default", "host": "gw"} and gone.channel is None
    assert gone.summary == "psu is offline" and gone.severity == "warning"


def test_alerts_fed_back_change_nothing() -> None:
    ev = RuleEvaluator([Rule("hot", RuleKind.THRESHOLD, above=1)], now=0)
    [alert] = ev.feed(rd(2, 1), 1)
    assert ev.feed(alert, 2) == [] and len(ev.active()) == 1


def test_series_are_bounded() -> None:
    ev = RuleEvaluator([Rule("hot", RuleKind.THRESHOLD, above=1)], now=0, max_series=2)
    alerts = [a for i in range(5) for a in ev.feed(rd(2, 1, instrument=f"i{i}"), 1)]
    assert [a.instrument for a in alerts] == ["i0", "i1"] and ev.overflow == 3


# ------------------------------------------------------------------ rate of change


def test_rate_between_consecutive_readings() -> None:
    ev = RuleEvaluator([Rule("ramp", RuleKind.RATE, above=2)], now=0)
    # reading times drive the rate: +1/s, +3/s, +2/s (not above), -4/s
    readings = [rd(0, 10), rd(1, 11), rd(4, 12), rd(6, 13), rd(2, 14)]
    alerts = [a for r in readings for a in ev.feed(r, r.timestamp + 100)]
    assert states(alerts) == [(FIRING, 112), (RESOLVED, 113)]
    assert alerts[0].value == 3.0
    assert alerts[0].summary == "psu/volt changes at 3 V/s (rate above 2/s)"


def test_rate_band_over_a_window_ignores_disorder() -> None:
    ev = RuleEvaluator([Rule("swing", RuleKind.RATE, above=1, below=-1, window=4)], now=0)
    out = []
    for t, v in [(0, 0), (1, 1.5), (2, 3), (2, 100), (1.5, -50), (3, 4), (4, 4), (8, 0)]:
        out += [(a.state, a.timestamp, a.value) for a in ev.feed(rd(v, t), t)]
    # t=1: 1.5/s; t=2: (3-0)/2; (2,100) repeats a time and (1.5,-50) is older: skipped;
    # t=3: 4/3; t=4: (4-0)/4 = 1, not above; t=8: (0-4)/4 = -1 from t=4 (in window), not below
    assert out == [(FIRING, 1, 1.5), (RESOLVED, 4, 1.0)]
    # the rate spans at least the window: from the newest sample at or before t - 4
    assert ev.feed(rd(-10, 9), 9)[0].value == pytest.approx((-10 - 4) / (9 - 4))


# ------------------------------------------------------------------ stale and offline


def test_a_named_channel_goes_stale_from_the_start() -> None:
    rule = Rule("quiet", RuleKind.STALE, instrument="psu", channel="volt", after=10)
    ev = RuleEvaluator([rule], now=100)
    assert ev.next_deadline() == 110 and ev.advance(109.9) == []
    [alert] = ev.advance(115)
    assert (alert.state, alert.timestamp, alert.value) == (FIRING, 110, None)
    assert alert.summary == "psu/volt: no reading for 10 s"
    assert ev.next_deadline() is None
    assert states(ev.feed(rd(1, 116), 116)) == [(RESOLVED, 116)]
    assert ev.next_deadline() == 126
    ev.feed(rd(1, 117, quality=Quality.STALE), 117)  # a stale-quality reading is not fresh
    assert states(ev.advance(126)) == [(FIRING, 126)]


def test_a_pattern_starts_at_the_first_reading_and_for_delays_firing() -> None:
    rule = Rule("quiet", RuleKind.STALE, instrument="*", channel="*", after=5, for_=2)
    ev = RuleEvaluator([rule], now=0)
    assert ev.next_deadline() is None and ev.advance(1000) == []
    ev.feed(rd(1, 1000, instrument="a"), 1000)
    ev.feed(rd(1, 1001, instrument="b"), 1001)
    assert ev.next_deadline() == 1005
    alerts = ev.advance(1010)  # late: both series, each transition at its own time
    assert [(a.instrument, a.state, a.timestamp) for a in alerts] == [
        ("a", PENDING, 1005), ("b", PENDING, 1006), ("a", FIRING, 1007), ("b", FIRING, 1008)
    ]  # fmt: skip


def test_offline_fires_after_for_and_resolves_online() -> None:
    ev = RuleEvaluator([Rule("gone", RuleKind.OFFLINE, instrument="psu*", for_=3)], now=0)
    off, on = InstrumentState.OFFLINE, InstrumentState.ONLINE
    assert ev.feed(StatusEvent("dmm", off, 1), 1) == []
    assert states(ev.feed(StatusEvent("psu1", off, 1), 1)) == [(PENDING, 1)]
    assert ev.feed(StatusEvent("psu1", off, 2), 2) == []  # repeated: no new event
    assert states(ev.feed(StatusEvent("psu1", on, 3), 3)) == [(RESOLVED, 3)]  # a blip
    ev.feed(StatusEvent("psu1", off, 10), 10)
    assert states(ev.advance(13)) == [(FIRING, 13)]
    [back] = ev.feed(StatusEvent("psu1", on, 20), 20)
    assert (back.state, back.value) == (RESOLVED, "online")


def test_readings_do_not_touch_offline_rules_nor_status_value_rules() -> None:
    rules = [Rule("gone", RuleKind.OFFLINE), Rule("hot", RuleKind.THRESHOLD, above=1)]
    ev = RuleEvaluator(rules, now=0)
    assert [a.rule for a in ev.feed(rd(5, 1), 1)] == ["hot"]
    assert [a.rule for a in ev.feed(StatusEvent("psu", InstrumentState.OFFLINE, 2), 2)] == ["gone"]


# ------------------------------------------------------------------ properties


def reference(values: Sequence[float], above: float, h: float) -> list[tuple[AlertState, int]]:
    """For = 0 with a deadband, written as a plain two-state machine."""
    out, on = [], False
    for i, v in enumerate(values):
        new = v > above - h if on else v > above
        if new != on:
            out.append((FIRING if new else RESOLVED, i))
            on = new
    return out


@given(
    st.lists(st.floats(-100, 100, allow_nan=False), max_size=60),
    st.floats(-50, 50),
    st.floats(0, 20),
)
def test_threshold_matches_a_reference_model(values: list[float], above: float, h: float) -> None:
    ev = RuleEvaluator([Rule("r", RuleKind.THRESHOLD, above=above, hysteresis=h)], now=0)
    got = [(a.state, int(a.timestamp)) for i, v in enumerate(values) for a in ev.feed(rd(v, i), i)]
    assert got == reference(values, above, h)


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(st.floats(0, 3), st.sampled_from([0.0, 5.0, 9.0, 10.0, 10.5, 20.0])),
        max_size=40,
    ),
    st.floats(0, 5),
)
def test_pending_firing_resolved_grammar(steps: list[tuple[float, float]], hold: float) -> None:
    """Whatever the readings and timing: transitions alternate as the state machine says,
    one per change, in time order; firing comes exactly ``for`` after pending while the
    condition held; the last transition is what ``active`` reports."""
    rule = Rule("r", RuleKind.THRESHOLD, above=10, hysteresis=1, for_=hold)
    ev = RuleEvaluator([rule], now=0)
    t, alerts = 0.0, []
    for dt, v in steps:
        t += dt
        alerts += ev.feed(rd(v, t), t)
    alerts += ev.advance(t + 10)
    state: AlertState | None = None
    pending_at = 0.0
    for alert in alerts:
        if state is None:
            assert alert.state is (PENDING if hold > 0 else FIRING)
            pending_at = alert.timestamp
        elif state is PENDING:
            assert alert.state in (FIRING, RESOLVED)
            if alert.state is FIRING:
                assert alert.timestamp == pytest.approx(pending_at + hold)
        else:
            assert alert.state is RESOLVED
        state = None if alert.state is RESOLVED else alert.state
    assert [a.timestamp for a in alerts] == sorted(a.timestamp for a in alerts)
    assert [a.state for a in ev.active()] == ([] if state is None else [state])
    assert state is not PENDING  # the final advance let every pending alert fire


def test_next_deadline_follows_the_series_not_old_timers() -> None:
    ev = RuleEvaluator([Rule("hot", RuleKind.THRESHOLD, above=10, for_=5)], now=0)
    ev.feed(rd(11, 1), 1)  # pending, due at 6
    ev.feed(rd(5, 2), 2)  # resolved before that
    ev.feed(rd(11, 3), 3)  # pending again, due at 8
    assert ev.next_deadline() == 8
    assert ev.advance(7.9) == []
    assert states(ev.advance(8)) == [(FIRING, 8)]
    ev.feed(rd(5, 9), 9)
    assert ev.next_deadline() is None


def test_a_busy_stale_channel_keeps_one_timer() -> None:
    rule = Rule("quiet", RuleKind.STALE, instrument="psu", channel="volt", after=1)
    ev = RuleEvaluator([rule], now=0)
    for i in range(10_000):
        assert ev.feed(rd(1, i / 1000), i / 1000) == []
    assert len(ev._timers) == 1  # not one per reading
    assert ev.next_deadline() == pytest.approx(9.999 + 1)


@given(
    st.lists(st.floats(0.01, 3), max_size=30),
    st.lists(st.floats(0, 1), max_size=10),
    st.floats(0.5, 2),
)
def test_stale_matches_a_reference_model(
    gaps: list[float], checks: list[float], after: float
) -> None:
    """Readings ``gaps`` apart, with extra ``advance`` calls in between: the channel fires
    exactly ``after`` seconds after each reading followed by a longer silence, and resolves
    at the next reading."""
    rule = Rule("quiet", RuleKind.STALE, instrument="psu", channel="volt", after=after)
    ev = RuleEvaluator([rule], now=0)
    times = [0.0]
    for gap in gaps:
        times.append(times[-1] + gap)
    got = []
    for i, t in enumerate(times[1:]):
        if i < len(checks):
            # a wake-up for some other reason, between two readings
            got += states(ev.advance(times[i] + checks[i] * (t - times[i])))
        got += states(ev.feed(rd(1, t), t))
    end = times[-1] + 5
    got += states(ev.advance(end))
    expected = []
    for prev, nxt in zip(times, [*times[1:], None], strict=True):
        if nxt is None or nxt >= prev + after:
            expected.append((FIRING, prev + after))
            if nxt is not None:
                expected.append((RESOLVED, nxt))
    assert got == expected
