"""MQTT 5 for the gateway: readings, statuses and alerts out, commands in (docs/gateway.md).

``from_config(section, key)`` builds the bridge from the ``[mqtt]`` table; the gateway runs
it as a component next to its sources and sinks.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
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


def from_config(
    section: Mapping[str, Any],
    key: tuple[str | int, ...] = (),
    *,
    config_dir: Path | str | None = None,
) -> MqttBridge:
    """The bridge for the ``[mqtt]`` table (validated: :class:`~aiotmc.ConfigError`).

    ``section`` is the gateway loader's mapping of top-level sections (``{"mqtt": {...}}``,
    at ``key`` ``()``), or the ``[mqtt]`` table itself. Relative file names in it are
    relative to ``config_dir`` (the configuration file's directory) when given.
    """
    base = Path(config_dir) if config_dir is not None else None
    table = section.get("mqtt") if isinstance(section, Mapping) else None
    if isinstance(table, Mapping):
        return MqttBridge(parse_config(table, (*key, "mqtt"), base=base))
    return MqttBridge(parse_config(section, key or ("mqtt",), base=base))
