"""``[web]`` and ``[[users]]`` validation: every bad field named by its key path."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest
from argon2 import PasswordHasher, Type

from aiotmc import ConfigError
from aiotmc.gateway.web import DEMO_PORT, demo_section, from_config
from aiotmc.gateway.web.component import WebComponent
from aiotmc.gateway.web.passwords import verify_password
from aiotmc.gateway.web.settings import LOOPBACK_HOSTS, WebSettings, parse_settings
from tests.gateway.web.conftest import FAST_HASHER

HASH = FAST_HASHER.hash("pw")
PH = "password_hash"


def test_defaults_listen_on_loopback() -> None:
    component = from_config({}, [{"name": "ann", "password_hash": HASH, "roles": ["admin"]}])
    assert isinstance(component, WebComponent) and component.name == "web"
    settings = component.settings
    assert (settings.bind, settings.port, settings.allowed_hosts) == (
        "127.0.0.1",
        8080,
        LOOPBACK_HOSTS,
    )
    assert settings.loopback and settings.public_metrics
    assert component.users[0].roles == ("admin",)


def test_a_full_section() -> None:
    settings = parse_settings(
        {
            "bind": "0.0.0.0",
            "port": 8443,
            "allowed_hosts": ["Lab-GW.example.org", "[::1]"],
            "allowed_origins": ["https://lab-gw.example.org/"],
            "session_ttl": 3600,
            "login_attempts": 10,
            "login_window": 300,
            "public_metrics": False,
            "trusted_proxies": ["127.0.0.1", "10.0.0.0/8"],
        }
    )
    assert settings.allowed_hosts == ("lab-gw.example.org", "::1")
    assert settings.allowed_origins == ("https://lab-gw.example.org",)
    assert not settings.loopback and not settings.public_metrics


def test_a_specific_bind_address_is_allowed_as_host() -> None:
    settings = parse_settings({"bind": "192.168.1.5"})
    assert settings.allowed_hosts == (*LOOPBACK_HOSTS, "192.168.1.5")
    assert parse_settings({"bind": "localhost"}).bind == "127.0.0.1"


@pytest.mark.parametrize(
    ("section", "key", "message"),
    [
        ({"port": 70000}, ("web", "port"), "between 0 and 65535"),
        ({"port": "80"}, ("web", "port"), "integer"),
        ({"prot": 80}, ("web", "prot"), "unknown setting"),
        ({"bind": "0.0.0.0"}, ("web", "allowed_hosts"), "needs allowed_hosts"),
        ({"bind": "lab.example.org"}, ("web", "bind"), "IP address"),
        ({"allowed_hosts": "localhost"}, ("web", "allowed_hosts"), "list"),
        ({"allowed_hosts": []}, ("web", "allowed_hosts"), "refuse every request"),
        ({"allowed_hosts": ["gw:8080"]}, ("web", "allowed_hosts", 0), "without port"),
        ({"allowed_origins": ["lab.example.org"]}, ("web", "allowed_origins", 0), "origin"),
        ({"session_ttl": 1}, ("web", "session_ttl"), "between"),
        ({"login_attempts": 0}, ("web", "login_attempts"), "between"),
        ({"public_metrics": "yes"}, ("web", "public_metrics"), "true or false"),
        ({"trusted_proxies": ["proxy"]}, ("web", "trusted_proxies", 0), "address or network"),
    ],
)
def test_bad_web_settings(section: dict[str, Any], key: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        from_config(section, [])
    assert caught.value.key == key


ARGON2I = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1, type=Type.I).hash("pw")


@pytest.mark.parametrize(
    ("users", "key", "message"),
    [
        ([{"name": "a"}], ("users", 0), "missing password_hash"),
        ([{"password_hash": HASH}], ("users", 0), "missing name"),
        ([{"name": "a", "password_hash": "secret"}], ("users", 0, PH), "not an argon2"),
        ([{"name": "a", PH: "$argon2id$v=19$junk"}], ("users", 0, PH), "malformed"),
        ([{"name": "a", "password_hash": ARGON2I}], ("users", 0, PH), "use argon2id"),
        ([{"name": "a", "password_hash": HASH, "roles": "admin"}], ("users", 0, "roles"), "list"),
        (
            [{"name": "a", "password_hash": HASH, "password": "x"}],
            ("users", 0, "password"),
            "unknown",
        ),
        (
            [{"name": "a", "password_hash": HASH}, {"name": "a", "password_hash": HASH}],
            ("users", 1, "name"),
            "defined twice",
        ),
        (["a"], ("users", 0), "expected a table"),
    ],
)
def test_bad_users(users: list[Any], key: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        from_config({}, users)
    assert caught.value.key == key
    if key[-1] == "password_hash":  # the error says how to make a good one
        assert "python -m aiotmc.gateway.web.passwords" in str(caught.value)


def test_settings_are_frozen() -> None:
    with pytest.raises(AttributeError):
        WebSettings().port = 1  # type: ignore[misc]


def test_the_loaders_grouped_form() -> None:
    users = [{"name": "ann", "password_hash": HASH}]
    component = from_config({"web": {"port": 9000}, "users": users}, ())
    assert component.settings.port == 9000 and component.users[0].name == "ann"
    assert from_config({"users": users}, ()).settings.port == 8080
    with pytest.raises(ConfigError) as caught:
        from_config({"web": {"port": -1}}, ())
    assert caught.value.key == ("web", "port")
    with pytest.raises(ConfigError) as caught:
        from_config({"users": [{"name": "x", "password_hash": "x"}]}, ())
    assert caught.value.key == ("users", 0, "password_hash")


def test_the_demo_section_lets_demo_log_in() -> None:
    text, banner = demo_section()
    password = banner.rpartition(" ")[2]
    component = from_config(tomllib.loads(text), ())
    assert component.settings.loopback and component.settings.port == DEMO_PORT
    assert f"http://127.0.0.1:{DEMO_PORT}/" in banner
    (user,) = component.users
    assert user.name == "demo" and verify_password(user.password_hash, password)
    assert demo_section()[1] != banner  # a new password each time
