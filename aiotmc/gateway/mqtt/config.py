"""The ``[mqtt]`` section: broker address, credentials, TLS, queue and reconnect policy."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiotmc._exceptions import ConfigError

__all__ = ["MqttConfig", "TlsConfig", "parse_config"]

Key = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """TLS to the broker: ``ca_file`` None trusts the system's CAs; a client certificate
    when ``cert_file`` is given. The broker's host name is always checked."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


@dataclass(frozen=True, slots=True)
class MqttConfig:
    """Everything the MQTT bridge needs (defaults: a local broker without TLS)."""

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls: TlsConfig | None = None
    client_id: str | None = None  # default: aiotmc-<gateway_id>
    topic_prefix: str = "aiotmc"
    #: QoS and retain flag of readings (status, alerts, replies: QoS 1).
    qos: int = 0
    retain_readings: bool = False
    keepalive: int = 30
    #: Readings waiting for the broker; when full the oldest is dropped and counted.
    queue_size: int = 10_000
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0
    discovery: bool = True
    discovery_prefix: str = "homeassistant"
    commands: bool = True


_KEYS = frozenset(
    {"host", "port", "username", "password", "password_file", "tls", "client_id"}
    | {"topic_prefix", "qos", "retain_readings", "keepalive", "queue_size"}
    | {"reconnect_min", "reconnect_max", "discovery", "discovery_prefix", "commands"}
)
_TLS_KEYS = frozenset({"ca_file", "cert_file", "key_file"})


def parse_config(
    section: Mapping[str, Any], key: Key = ("mqtt",), *, base: Path | None = None
) -> MqttConfig:
    """Validate the ``[mqtt]`` table; :class:`~aiotmc.ConfigError` names the bad field.

    Relative file names (TLS files, ``password_file``) are relative to ``base`` (the
    configuration file's directory), or to the current directory.
    """
    if not isinstance(section, Mapping):
        raise ConfigError("must be a table", key=key)
    for name in section:
        if name not in _KEYS:
            raise ConfigError(
                f"unknown field (known: {', '.join(sorted(_KEYS))})", key=(*key, name)
            )
    tls = _tls(section.get("tls", False), (*key, "tls"), base)
    host = _text(section.get("host", "127.0.0.1"), (*key, "host"))
    port = _int(section.get("port", 8883 if tls else 1883), (*key, "port"), 1, 65535)
    username = _optional_text(section.get("username"), (*key, "username"))
    password = _optional_text(section.get("password"), (*key, "password"))
    if "password_file" in section:
        if password is not None:
            raise ConfigError("give password or password_file, not both", key=(*key, "password"))
        password = _read_secret(section["password_file"], (*key, "password_file"), base)
    if password is not None and username is None:
        raise ConfigError("a password needs a username", key=(*key, "username"))
    reconnect_min = _seconds(section.get("reconnect_min", 0.5), (*key, "reconnect_min"))
    reconnect_max = _seconds(section.get("reconnect_max", 30.0), (*key, "reconnect_max"))
    if reconnect_max < reconnect_min:
        raise ConfigError("must be at least reconnect_min", key=(*key, "reconnect_max"))
    return MqttConfig(
        host=host,
        port=port,
        username=username,
        password=password,
        tls=tls,
        client_id=_optional_text(section.get("client_id"), (*key, "client_id")),
        topic_prefix=_level(section.get("topic_prefix", "aiotmc"), (*key, "topic_prefix")),
        qos=_int(section.get("qos", 0), (*key, "qos"), 0, 2),
        retain_readings=_bool(section.get("retain_readings", False), (*key, "retain_readings")),
        keepalive=_int(section.get("keepalive", 30), (*key, "keepalive"), 5, 3600),
        queue_size=_int(section.get("queue_size", 10_000), (*key, "queue_size"), 1, 10_000_000),
        reconnect_min=reconnect_min,
        reconnect_max=reconnect_max,
        discovery=_bool(section.get("discovery", True), (*key, "discovery")),
        discovery_prefix=_level(
            section.get("discovery_prefix", "homeassistant"), (*key, "discovery_prefix")
        ),
        commands=_bool(section.get("commands", True), (*key, "commands")),
    )


def _tls(value: Any, key: Key, base: Path | None) -> TlsConfig | None:
    if value is False:
        return None
    if value is True:
        return TlsConfig()
    if not isinstance(value, Mapping):
        raise ConfigError("must be true, false or a table with ca_file/cert_file/key_file", key=key)
    for name in value:
        if name not in _TLS_KEYS:
            raise ConfigError(
                f"unknown field (known: {', '.join(sorted(_TLS_KEYS))})", key=(*key, name)
            )
    files = {name: _file(value.get(name), (*key, name), base) for name in _TLS_KEYS}
    if (files["cert_file"] is None) != (files["key_file"] is None):
        raise ConfigError("a client certificate needs both cert_file and key_file", key=key)
    return TlsConfig(**files)


def _file(value: Any, key: Key, base: Path | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError("must be a file name", key=key)
    path = Path(value).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    if not path.is_file():
        raise ConfigError(f"no such file: {str(path)!r}", key=key)
    return str(path)


def _read_secret(value: Any, key: Key, base: Path | None) -> str:
    path = _file(value, key, base)
    assert path is not None
    secret = Path(path).read_text(encoding="utf-8").strip()
    if not secret:
        raise ConfigError("the file is empty", key=key)
    return secret


def _text(value: Any, key: Key) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError("must be a non-empty string", key=key)
    return value


def _optional_text(value: Any, key: Key) -> str | None:
    return None if value is None else _text(value, key)


def _level(value: Any, key: Key) -> str:
    text = _text(value, key)
    if any(c in text for c in "/+#$") or any(ord(c) < 0x20 for c in text):
        raise ConfigError("must be one MQTT topic level (no '/', '+', '#', '$')", key=key)
    return text


def _int(value: Any, key: Key, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"must be an integer from {low} to {high}", key=key)
    return value


def _seconds(value: Any, key: Key) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value <= 0:
        raise ConfigError("must be a positive number of seconds", key=key)
    return float(value)


def _bool(value: Any, key: Key) -> bool:
    if not isinstance(value, bool):
        raise ConfigError("must be true or false", key=key)
    return value
