"""Alert rules: what each ``[[rules]]`` table says, validated up front.

Four kinds (``type``), each for the instruments and channels its glob patterns match:

* ``threshold``: the value is ``above`` a limit, ``below`` one, or outside the band
  ``[below, above]`` when both are given;
* ``rate``: the same limits on the rate of change, in units per second, over ``window``
  seconds (0: between consecutive readings);
* ``stale``: no good reading for ``after`` seconds;
* ``offline``: the instrument is offline.

``hysteresis`` (threshold and rate) is a deadband: an alert that started resolves only
once the value is back inside by that margin (``value <= above - hysteresis``...), so a
value hovering at the limit does not flap. ``for`` is the minimum duration: the alert is
pending until the condition has held that long, then firing; 0 fires at once.
"""

from __future__ import annotations

import enum
import fnmatch
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from ..._exceptions import ConfigError
from ..fields import Fields, Key

__all__ = ["SUMMARY_FIELDS", "Rule", "RuleError", "RuleKind", "parse_rules"]

#: The fields a ``summary`` template may use (all strings).
SUMMARY_FIELDS: Final = frozenset(
    {"rule", "instrument", "channel", "value", "unit", "state", "severity", "condition"}
)


class RuleError(ValueError):
    """A rule's fields do not fit together; ``field`` names the one to fix."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(f"{field}: {message}")
        self.reason = message
        self.field = field


class RuleKind(enum.StrEnum):
    THRESHOLD = "threshold"
    RATE = "rate"
    STALE = "stale"
    OFFLINE = "offline"


@dataclass(frozen=True, slots=True)
class Rule:
    """One alert rule (see the module docstring for the meaning of each field)."""

    name: str
    kind: RuleKind
    instrument: str = "*"
    channel: str = "*"
    above: float | None = None
    below: float | None = None
    hysteresis: float = 0.0
    window: float = 0.0
    after: float = 0.0
    for_: float = 0.0
    severity: str = "warning"
    summary: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        limited = self.kind in (RuleKind.THRESHOLD, RuleKind.RATE)
        if limited and self.above is None and self.below is None:
            raise RuleError("needs 'above', 'below' or both (a band)", "above")
        if self.above is not None and self.below is not None:
            if not self.below < self.above:
                raise RuleError("a band needs below < above (it fires outside it)", "below")
            if 2 * self.hysteresis >= self.above - self.below:
                raise RuleError("must be less than half the band, or never clears", "hysteresis")
        if self.kind is RuleKind.STALE and not self.after > 0:
            raise RuleError("needs 'after' > 0 (seconds without a reading)", "after")
        for name in ("hysteresis", "window", "after", "for_"):
            if getattr(self, name) < 0:
                raise RuleError("must not be negative", name.rstrip("_"))
        check_template(self.summary)

    def matches(self, instrument: str, channel: str | None) -> bool:
        if not fnmatch.fnmatchcase(instrument, self.instrument):
            return False
        return channel is None or fnmatch.fnmatchcase(channel, self.channel)

    @property
    def literal(self) -> bool:
        """Whether the rule names one instrument and channel (no glob characters)."""
        return not any(c in p for p in (self.instrument, self.channel) for c in "*?[")

    def condition(self) -> str:
        """The condition in words, for summaries: "above 30", "outside [0, 30]"..."""
        if self.kind is RuleKind.STALE:
            return f"no reading for {self.after:g} s"
        if self.kind is RuleKind.OFFLINE:
            return "offline"
        per = "/s" if self.kind is RuleKind.RATE else ""
        what = "rate " if per else ""
        if self.above is not None and self.below is not None:
            return f"{what}outside [{self.below:g}{per}, {self.above:g}{per}]"
        if self.above is not None:
            return f"{what}above {self.above:g}{per}"
        return f"{what}below {self.below:g}{per}"

    def default_summary(self) -> str:
        if self.kind is RuleKind.OFFLINE:
            return "{instrument} is offline"
        if self.kind is RuleKind.STALE:
            return "{instrument}/{channel}: {condition}"
        if self.kind is RuleKind.RATE:
            return "{instrument}/{channel} changes at {value} {unit}/s ({condition})"
        return "{instrument}/{channel} = {value} {unit} ({condition})"


def check_template(template: str) -> None:
    """``RuleError`` unless ``template`` is a format string using only SUMMARY_FIELDS."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise RuleError(str(exc), "summary") from exc
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in SUMMARY_FIELDS or spec or conversion:
            known = ", ".join("{" + f + "}" for f in sorted(SUMMARY_FIELDS))
            raise RuleError(f"unknown field {{{name}}} (fields: {known})", "summary")


def parse_rule(table: object, key: Key) -> Rule:
    """One ``[[rules]]`` table; ``ConfigError`` naming the bad field."""
    fields = Fields(table, key)
    name = fields.name("name")
    kind = RuleKind(fields.string("type", "threshold", choices=tuple(k.value for k in RuleKind)))
    options: dict[str, Any] = {
        "instrument": fields.string("instrument", "*"),
        "severity": fields.name("severity", "warning"),
        "summary": fields.string("summary", ""),
        "labels": fields.string_table("labels"),
        "for_": fields.duration("for", 0.0),
    }
    if kind is not RuleKind.OFFLINE:
        options["channel"] = fields.string("channel", "*")
    if kind in (RuleKind.THRESHOLD, RuleKind.RATE):
        options["above"] = fields.number("above", None)
        options["below"] = fields.number("below", None)
        options["hysteresis"] = fields.number("hysteresis", 0.0, minimum=0)
    if kind is RuleKind.RATE:
        options["window"] = fields.duration("window", 0.0)
    if kind is RuleKind.STALE:
        options["after"] = fields.duration("after")
    fields.done()
    try:
        return Rule(name, kind, **options)
    except RuleError as exc:
        raise ConfigError(exc.reason, key=fields.at(exc.field)) from exc


def parse_rules(section: Sequence[Any] | Mapping[str, Any], key: Key = ()) -> tuple[Rule, ...]:
    """The ``[[rules]]`` array, or a mapping holding it under ``"rules"`` (the loader's
    grouped form); rule names must be unique."""
    if isinstance(section, Mapping):
        key = (*key, "rules")
        section = section.get("rules", [])
    if isinstance(section, str | bytes) or not isinstance(section, Sequence):
        raise ConfigError("expected an array of tables ([[rules]])", key=key)
    rules: list[Rule] = []
    seen: set[str] = set()
    for index, table in enumerate(section):
        rule = parse_rule(table, (*key, index))
        if rule.name in seen:
            raise ConfigError(f"rule name {rule.name!r} is used twice", key=(*key, index, "name"))
        seen.add(rule.name)
        rules.append(rule)
    return tuple(rules)
