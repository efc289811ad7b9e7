"""MQTT 5 for the gateway: readings, statuses and alerts out, commands in (docs/gateway.md).

``from_config(section, key)`` builds the bridge from the ``[mqtt]`` table; the gateway runs
it as a component next to its sources and sinks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiotmc.gateway.mqtt.bridge import MqttBridge
from aiotmc.gateway.mqtt.config import MqttConfig, TlsConfig, parse_config
from aiotmc.gateway.mqtt.queue import Outgoing, PublishQueue
from aiotmc.gateway.mqtt.topics import Topics

__all__ = [
    "MqttBridge",
    "MqttConfig",
    "Outgoing",
    "PublishQueue",
    "TlsConfig",
    "Topics",
    "from_config",
    "parse_config",
]


def from_config(section: Mapping[str, Any], key: tuple[str | int, ...] = ("mqtt",)) -> MqttBridge:
    """The bridge for the ``[mqtt]`` table at ``key`` (validated: :class:`~aiotmc.ConfigError`)."""
    return MqttBridge(parse_config(section, key))
