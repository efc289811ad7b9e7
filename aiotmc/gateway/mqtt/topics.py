"""Topic names and JSON payloads (no I/O): what the bridge publishes and listens to.

Under ``<prefix>/<site>/<host>/`` (prefix ``aiotmc``)::

    <instrument>/<channel>            a reading: {"value", "unit", "timestamp", "quality", "key"}
    <instrument>/$status              retained: "online" / "offline"
    $status                           retained: the gateway, "online"; its Last Will "offline"
    $alerts/<rule>/<instrument>       alert transitions (JSON)
    $cmd/<user>/<instrument>/<op>     commands in ({"value": ...}); MQTT 5 response topic
    $reply/<user>/...                 where replies may go ({"ok", "detail", "answer", "error"})

Levels starting with ``$`` are the gateway's own (after Homie's ``$state``): they cannot
clash with an instrument or channel name, which may not start with ``$``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiotmc.gateway.model import Alert, CommandResult, Reading

try:  # about six times faster than json.dumps for a reading's payload
    from orjson import dumps as _fast_dumps
except ImportError:  # pragma: no cover - orjson comes with the gateway extra
    _fast_dumps = None  # type: ignore[assignment]
_dumps: Callable[[Any], bytes] | None = _fast_dumps

__all__ = ["Topics", "check_level"]


def check_level(name: str) -> str:
    """``name`` if it is usable as one topic level, else :class:`ValueError`."""
    if (
        not name
        or name.startswith("$")
        or any(c in name for c in "/+#")
        or any(ord(c) < 0x20 for c in name)
    ):
        raise ValueError(f"{name!r} cannot be an MQTT topic level")
    return name


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: those become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass(frozen=True, slots=True)
class Topics:
    """The topic tree of one gateway (``prefix/site/host``)."""

    prefix: str
    site: str
    host: str
    gateway_id: str
    discovery_prefix: str = "homeassistant"

    @property
    def base(self) -> str:
        return f"{self.prefix}/{check_level(self.site)}/{check_level(self.host)}"

    @property
    def status(self) -> str:
        """The gateway's retained online/offline (its Last Will)."""
        return f"{self.base}/$status"

    def reading(self, instrument: str, channel: str) -> str:
        return f"{self.base}/{check_level(instrument)}/{check_level(channel)}"

    def instrument_status(self, instrument: str) -> str:
        return f"{self.base}/{check_level(instrument)}/$status"

    def alert(self, rule: str, instrument: str) -> str:
        return f"{self.base}/$alerts/{check_level(rule)}/{check_level(instrument)}"

    @property
    def commands(self) -> str:
        """The subscription filter for every command to this gateway."""
        return f"{self.base}/$cmd/+/+/+"

    def command(self, user: str, instrument: str, operation: str) -> str:
        return f"{self.base}/$cmd/{user}/{instrument}/{operation}"

    def parse_command(self, topic: str) -> tuple[str, str, str] | None:
        """``(user, instrument, operation)`` of a command topic, else None."""
        head = f"{self.base}/$cmd/"
        if not topic.startswith(head):
            return None
        parts = topic[len(head) :].split("/")
        if len(parts) != 3 or not all(parts):
            return None
        user, instrument, operation = parts
        return user, instrument, operation

    def reply_prefix(self, user: str) -> str:
        """Replies to ``user`` must go below this (the ACL lets only ``user`` read it)."""
        return f"{self.base}/$reply/{user}/"

    def reply_allowed(self, user: str, topic: str) -> bool:
        prefix = self.reply_prefix(user)
        rest = topic[len(prefix) :]
        return topic.startswith(prefix) and bool(rest) and not any(c in rest for c in "+#")

    @property
    def discovery_status(self) -> str:
        """Home Assistant's birth/will topic: on "online", discovery is sent again."""
        return f"{self.discovery_prefix}/status"

    def discovery(self, instrument: str, channel: str) -> str:
        node = f"aiotmc_{_slug(self.gateway_id)}"
        return f"{self.discovery_prefix}/sensor/{node}/{_slug(instrument)}_{_slug(channel)}/config"


def _slug(text: str) -> str:
    """Home Assistant ids: letters, digits, ``_`` and ``-`` only."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "_-") else "_" for c in text)


def reading_payload(reading: Reading) -> bytes:
    """The JSON of a reading as published (compact; UTF-8)."""
    body = {
        "value": _finite(reading.value),
        "unit": reading.unit,
        "timestamp": reading.timestamp,
        "quality": reading.quality.value,
        "key": f"{reading.gateway_id}:{reading.seq}",
    }
    if _dumps is not None:
        try:
            return _dumps(body)
        except TypeError:  # orjson: an integer beyond 64 bits
            pass
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def alert_payload(alert: Alert) -> bytes:
    return json.dumps(
        {
            "rule": alert.rule,
            "instrument": alert.instrument,
            "channel": alert.channel,
            "state": alert.state.value,
            "severity": alert.severity,
            "summary": alert.summary,
            "timestamp": alert.timestamp,
            "value": _finite(alert.value),
            "labels": dict(alert.labels),
        },
        separators=(",", ":"),
    ).encode()


def reply_payload(result: CommandResult) -> bytes:
    """``{"ok", "detail", "answer", "error"}``; ``error`` is the refusal reason or null."""
    reason = getattr(result, "reason", None)
    return json.dumps(
        {
            "ok": result.ok,
            "detail": result.detail,
            "answer": result.answer,
            "error": None if result.ok else str(reason or "failed"),
        }
    ).encode()


def discovery_payload(topics: Topics, reading: Reading) -> bytes:
    """A Home Assistant MQTT discovery config for the reading's channel (a sensor that is
    available while both the gateway and the instrument are online)."""
    device_id = f"aiotmc_{_slug(topics.gateway_id)}_{_slug(reading.instrument)}"
    config: dict[str, Any] = {
        "name": reading.channel,
        "unique_id": f"{device_id}_{_slug(reading.channel)}",
        "state_topic": topics.reading(reading.instrument, reading.channel),
        "value_template": "{{ value_json.value }}",
        "json_attributes_topic": topics.reading(reading.instrument, reading.channel),
        "availability": [
            {"topic": topics.status},
            {"topic": topics.instrument_status(reading.instrument)},
        ],
        "availability_mode": "all",
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": {
            "identifiers": [device_id],
            "name": reading.instrument,
            "manufacturer": "aiotmc",
            "via_device": f"aiotmc_{_slug(topics.gateway_id)}",
        },
        "origin": {"name": "aiotmc gateway"},
    }
    if reading.unit:
        config["unit_of_measurement"] = reading.unit
    if reading.numeric() is not None and not isinstance(reading.value, bool):
        config["state_class"] = "measurement"
    return json.dumps(config).encode()
