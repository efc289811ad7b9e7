"""``[[rules]]`` and ``[[notifiers]]`` tables: what they build, and errors naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiotmc._exceptions import ConfigError
from aiotmc.gateway.alerts import (
    EmailNotifier,
    RuleEngine,
    RuleKind,
    WebhookNotifier,
    notifier_from_config,
    parse_rules,
    rules_from_config,
)


def test_every_kind_of_rule_is_built() -> None:
    rules = parse_rules(
        [
            {"name": "hot", "instrument": "psu*", "channel": "temp", "above": 60,
             "hysteresis": 2, "for": "30s", "severity": "critical", "labels": {"team": "a"}},
            {"name": "band", "below": 1, "above": 2.5},
            {"name": "ramp", "type": "rate", "above": 0.5, "window": "2m"},
            {"name": "quiet", "type": "stale", "instrument": "dmm", "channel": "v",
             "after": "250ms"},
            {"name": "gone", "type": "offline", "for": 1.5},
        ]
    )  # fmt: skip
    hot, band, ramp, quiet, gone = rules
    assert (hot.kind, hot.above, hot.below, hot.hysteresis, hot.for_) == (
        RuleKind.THRESHOLD, 60.0, None, 2.0, 30.0
    )  # fmt: skip
    assert (hot.instrument, hot.channel, hot.severity, dict(hot.labels)) == (
        "psu*", "temp", "critical", {"team": "a"}
    )  # fmt: skip
    assert (band.below, band.above, band.condition()) == (1.0, 2.5, "outside [1, 2.5]")
    assert (ramp.kind, ramp.window, ramp.condition()) == (RuleKind.RATE, 120.0, "rate above 0.5/s")
    assert (quiet.kind, quiet.after, quiet.literal) == (RuleKind.STALE, 0.25, True)
    assert (gone.kind, gone.for_, gone.instrument) == (RuleKind.OFFLINE, 1.5, "*")


def test_the_loaders_grouped_form_and_the_factory() -> None:
    engine = rules_from_config({"rules": [{"name": "a", "above": 1}]}, ())
    assert isinstance(engine, RuleEngine) and [r.name for r in engine.rules] == ["a"]
    assert RuleEngine.from_config([], ("rules",)).rules == ()
    with pytest.raises(ConfigError) as info:
        rules_from_config({"rules": [{"name": "a"}]}, ())
    assert info.value.key == ("rules", 0, "above")


@pytest.mark.parametrize(
    ("table", "field", "message"),
    [
        ({"above": 1}, "name", "missing required field 'name'"),
        ({"name": "a b", "above": 1}, "name", "letters"),
        ({"name": "a", "type": "magic"}, "type", "expected one of 'threshold'"),
        ({"name": "a"}, "above", "needs 'above', 'below' or both"),
        ({"name": "a", "type": "rate"}, "above", "needs 'above'"),
        ({"name": "a", "above": 1, "below": 2}, "below", "below < above"),
        ({"name": "a", "above": 2, "below": 1, "hysteresis": 0.5}, "hysteresis", "half"),
        ({"name": "a", "above": 1, "hysteresis": -1}, "hysteresis", "at least 0"),
        ({"name": "a", "above": "1"}, "above", "expected a number"),
        ({"name": "a", "above": 1, "for": "5 parsecs"}, "for", "expected a duration"),
        ({"name": "a", "above": 1, "for": -1}, "for", "not negative"),
        ({"name": "a", "type": "stale"}, "after", "missing required field 'after'"),
        ({"name": "a", "type": "stale", "after": 0}, "after", "after' > 0"),
        ({"name": "a", "above": 1, "after": 5}, "after", "unknown field 'after'"),
        ({"name": "a", "type": "offline", "channel": "x"}, "channel", "unknown field"),
        ({"name": "a", "above": 1, "summary": "{value.__class__}"}, "summary", "unknown field"),
        ({"name": "a", "above": 1, "summary": "{oops"}, "summary", "expected '}'"),
        ({"name": "a", "above": 1, "labels": {"x": 1}}, "labels", "expected a string"),
    ],
)
def test_rule_errors_name_the_field(table: dict[str, object], field: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_rules([{"name": "ok", "above": 0}, table], ("rules",))
    assert info.value.key[:3] == ("rules", 1, field)


def test_rule_names_are_unique_and_rules_an_array() -> None:
    with pytest.raises(ConfigError, match="used twice") as info:
        parse_rules([{"name": "a", "above": 1}, {"name": "a", "below": 1}], ("rules",))
    assert info.value.key == ("rules", 1, "name")
    with pytest.raises(ConfigError, match="array of tables") as info:
        parse_rules({"rules": {"name": "a"}})
    assert info.value.key == ("rules",)


def test_notifiers_are_built_by_type() -> None:
    hook = notifier_from_config(
        {"type": "webhook", "url": "https://hooks.example/x", "headers": {"X-Key": "k"},
         "severities": ["critical"], "retries": 5, "retry_delay": "2s"},
        ("notifiers", 0),
    )  # fmt: skip
    assert isinstance(hook, WebhookNotifier)
    assert repr(hook) == "<WebhookNotifier 'webhook' https://hooks.example>"  # no secret path
    assert (hook.name, hook.headers, hook.options.retries, hook.options.retry_delay) == (
        "webhook", {"X-Key": "k"}, 5, 2.0
    )  # fmt: skip
    for kind in ("email", "smtp"):
        mail = notifier_from_config(
            {"type": kind, "name": "oncall", "host": "smtp.example", "from": "gw@example",
             "to": ["a@example", "b@example"], "username": "u", "password": "p"},
            ("notifiers", 1),
        )  # fmt: skip
        assert isinstance(mail, EmailNotifier)
        assert (mail.name, mail.port, mail.tls, mail.recipients) == (
            "oncall", 587, "starttls", ("a@example", "b@example")
        )  # fmt: skip


@pytest.mark.parametrize(
    ("table", "field", "message"),
    [
        ({"type": "pager"}, "type", "must be one of 'webhook', 'email', 'smtp'"),
        ({"type": "webhook"}, "url", "missing required field 'url'"),
        ({"type": "webhook", "url": "mailto:x"}, "url", "http:// or https://"),
        ({"type": "webhook", "url": "http://x", "retries": 99}, "retries", "at most 20"),
        ({"type": "webhook", "url": "http://x", "severities": "critical"}, "severities",
         "expected an array"),
        ({"type": "email", "from": "a", "to": ["b"]}, "host", "missing required field"),
        ({"type": "email", "host": "h", "from": "a", "to": "b"}, "to", "expected an array"),
        ({"type": "email", "host": "h", "from": "a", "to": []}, "to", "at least one"),
        ({"type": "email", "host": "h", "from": "a", "to": ["b"], "tls": "maybe"}, "tls",
         "expected one of"),
        ({"type": "email", "host": "h", "from": "a", "to": ["b"], "username": "u"}, "password",
         "go together"),
        ({"type": "email", "host": "h", "from": "a", "to": ["b"], "tls": "none",
          "username": "u", "password": "p"}, "username", "clear text"),
    ],
)  # fmt: skip
def test_notifier_errors_name_the_field(table: dict[str, object], field: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        notifier_from_config(table, ("notifiers", 2))
    assert info.value.key == ("notifiers", 2, field)


def test_rules_must_name_configured_instruments() -> None:
    section = {"rules": [{"name": "a", "instrument": "psu*", "above": 1},
                         {"name": "b", "instrument": "dmm", "type": "offline"}]}  # fmt: skip
    engine = RuleEngine.from_config(section, (), instruments=("psu1", "dmm"))
    assert len(engine.rules) == 2
    with pytest.raises(ConfigError, match=r"'dmm' matches no configured instrument \(known: psu1"):
        RuleEngine.from_config(section, (), instruments=("psu1", "psu2"))
    with pytest.raises(ConfigError) as info:
        RuleEngine.from_config(section["rules"], ("rules",), instruments=("dmm",))
    assert info.value.key == ("rules", 0, "instrument")


def test_mqtt_notifiers_point_at_the_mqtt_section_and_ca_file_is_relative(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match=r"\[mqtt\] section"):
        notifier_from_config({"type": "mqtt"}, ("notifiers", 0))
    mail = notifier_from_config(
        {"type": "email", "host": "h", "from": "a", "to": ["b"], "ca_file": "certs/ca.pem"},
        ("notifiers", 0),
        config_dir=tmp_path,
    )
    assert isinstance(mail, EmailNotifier) and mail.ca_file == str(tmp_path / "certs/ca.pem")
