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
from pathlib import Path
from typing import Any

from ..._exceptions import ConfigError
from ..fields import Key
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


def notifier_from_config(
    section: Mapping[str, Any], key: Key = (), *, config_dir: Path | None = None
) -> Notifier:
    """One ``[[notifiers]]`` table: ``type = "webhook"`` or ``"email"`` (alias ``"smtp"``).
    ``config_dir`` is where relative file names (``ca_file``) are taken from."""
    kind = section.get("type") if isinstance(section, Mapping) else None
    if kind == "email" or kind == "smtp":
        return EmailNotifier.from_config(section, key, config_dir=config_dir)
    if kind == "webhook":
        return WebhookNotifier.from_config(section, key)
    hint = " (alerts go to MQTT with the [mqtt] section)" if kind == "mqtt" else ""
    raise ConfigError(
        f"notifier type must be one of 'webhook', 'email', 'smtp', got {kind!r}{hint}",
        key=(*key, "type"),
    )
