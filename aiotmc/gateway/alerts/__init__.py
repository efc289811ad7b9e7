"""Alerts: rules on readings and instrument status, and the notifiers that tell people.

* :mod:`.rules`: what a ``[[rules]]`` table says (threshold, rate, stale, offline);
* :mod:`.evaluator`: the rule engine without I/O (events and a clock in, transitions out);
* :mod:`.engine`: :class:`RuleEngine`, the Component running it on the hub;
* :mod:`.notifier`, :mod:`.webhook`, :mod:`.smtp`: Components delivering the alerts
  (Alertmanager-compatible webhook, e-mail). The MQTT alert topic is the MQTT bridge's.

The loader builds them with :func:`rules_from_config` and :func:`notifier_from_config`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..._exceptions import ConfigError
from .._checks import Key
from .engine import RuleEngine, rules_from_config
from .evaluator import RuleEvaluator
from .notifier import DeliveryError, Notifier, NotifierOptions
from .rules import Rule, RuleKind, parse_rules
from .smtp import EmailNotifier
from .webhook import WebhookNotifier, alertmanager_payload

__all__ = [
    "DeliveryError",
    "EmailNotifier",
    "Notifier",
    "NotifierOptions",
    "Rule",
    "RuleEngine",
    "RuleEvaluator",
    "RuleKind",
    "WebhookNotifier",
    "alertmanager_payload",
    "notifier_from_config",
    "parse_rules",
    "rules_from_config",
]

_NOTIFIERS: dict[str, Any] = {
    "webhook": WebhookNotifier.from_config,
    "email": EmailNotifier.from_config,
    "smtp": EmailNotifier.from_config,
}


def notifier_from_config(section: Mapping[str, Any], key: Key = ()) -> Notifier:
    """One ``[[notifiers]]`` table: ``type = "webhook"`` or ``"email"`` (alias ``"smtp"``)."""
    kind = section.get("type") if isinstance(section, Mapping) else None
    factory = _NOTIFIERS.get(kind) if isinstance(kind, str) else None
    if factory is None:
        known = ", ".join(repr(k) for k in _NOTIFIERS)
        raise ConfigError(f"notifier type must be one of {known}, got {kind!r}", key=(*key, "type"))
    notifier: Notifier = factory(section, key)
    return notifier
