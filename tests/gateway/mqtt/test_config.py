"""The [mqtt] section: defaults, and errors that name the bad field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aiotmc import ConfigError
from aiotmc.gateway.mqtt import MqttBridge, from_config, parse_config


def test_defaults() -> None:
    config = parse_config({})
    assert (config.host, config.port, config.tls, config.qos) == ("127.0.0.1", 1883, None, 0)
    assert config.queue_size == 10_000 and config.discovery and config.commands
    assert isinstance(from_config({}), MqttBridge)


def test_tls_and_password_file(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    config = parse_config(
        {"tls": {"ca_file": str(ca)}, "username": "gw", "password_file": str(secret)}
    )
    assert config.port == 8883 and config.tls is not None and config.tls.ca_file == str(ca)
    assert config.password == "s3cret"
    assert parse_config({"tls": True}).tls is not None
    relative = from_config(
        {"mqtt": {"tls": {"ca_file": "ca.pem"}, "username": "gw", "password_file": "secret"}},
        config_dir=tmp_path,
    ).config
    assert relative.tls is not None and relative.tls.ca_file == str(ca)
    assert relative.password == "s3cret"


@pytest.mark.parametrize(
    ("section", "key", "message"),
    [
        ({"port": 0}, ("mqtt", "port"), "integer from 1"),
        ({"port": "1883"}, ("mqtt", "port"), "integer"),
        ({"qos": 3}, ("mqtt", "qos"), "0 to 2"),
        ({"queue_size": 0}, ("mqtt", "queue_size"), "integer from 1"),
        ({"topic_prefix": "a/b"}, ("mqtt", "topic_prefix"), "one MQTT topic level"),
        ({"password": "x"}, ("mqtt", "username"), "needs a username"),
        ({"tls": {"ca_file": "/no/such/file"}}, ("mqtt", "tls", "ca_file"), "no such file"),
        ({"tls": {"cafile": "x"}}, ("mqtt", "tls", "cafile"), "unknown field"),
        ({"tls": "yes"}, ("mqtt", "tls"), "true, false or a table"),
        ({"reconnect_min": 2, "reconnect_max": 1}, ("mqtt", "reconnect_max"), "at least"),
        ({"reconnect_min": -1}, ("mqtt", "reconnect_min"), "positive"),
        ({"discovery": "on"}, ("mqtt", "discovery"), "true or false"),
        ({"hostname": "x"}, ("mqtt", "hostname"), "unknown field"),
    ],
)
def test_errors_name_the_field(section: dict[str, Any], key: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        from_config({"mqtt": section}, ())  # as the gateway's loader calls it
    assert info.value.key == key


def test_the_loader_form_and_the_table_form() -> None:
    assert from_config({"mqtt": {"port": 1884}}, ()).config.port == 1884
    assert from_config({"port": 1884}).config.port == 1884
    with pytest.raises(ConfigError) as info:
        from_config({"port": 0})
    assert info.value.key == ("mqtt", "port")


def test_errors_use_the_given_key() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"port": -1}, ("gateway", "mqtt"))
    assert info.value.key == ("gateway", "mqtt", "port")
