"""The ``[web]`` section and the ``[[users]]`` table, validated up front.

Every bad field raises :class:`aiotmc.ConfigError` with its key path (``("web", "port")``,
``("users", 2, "password_hash")``), so that the config loader can name file and line.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiotmc._exceptions import ConfigError
from aiotmc.gateway.web.passwords import check_hash

__all__ = ["LOOPBACK_HOSTS", "User", "WebSettings", "parse_settings", "parse_users"]

Key = tuple[str | int, ...]

#: Host names accepted when the dashboard listens on loopback (the default).
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")

_WILDCARDS = ("0.0.0.0", "::")


@dataclass(frozen=True, slots=True)
class User:
    """One ``[[users]]`` entry: name, argon2 PHC hash, roles (for the controller)."""

    name: str
    password_hash: str
    roles: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class WebSettings:
    """The validated ``[web]`` section (defaults: loopback only, port 8080)."""

    #: Address to listen on; 127.0.0.1 unless told otherwise.
    bind: str = "127.0.0.1"
    port: int = 8080
    #: Host header names (no port) the dashboard answers to: the DNS-rebinding guard.
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS
    #: Extra origins (``scheme://host[:port]``) trusted besides the dashboard's own.
    allowed_origins: tuple[str, ...] = ()
    #: Seconds a login lasts (sessions and API tokens).
    session_ttl: float = 8 * 3600.0
    #: Login attempts allowed per client address within ``login_window`` seconds.
    login_attempts: int = 5
    login_window: float = 60.0
    #: ``/metrics`` without login (Prometheus scrapers); false: a session or token is needed.
    public_metrics: bool = True
    #: Reverse proxies whose X-Forwarded-For/-Proto are believed (uvicorn's forwarded_allow_ips).
    trusted_proxies: tuple[str, ...] = ()

    @property
    def loopback(self) -> bool:
        """Whether the dashboard listens on a loopback address only."""
        return ipaddress.ip_address(self.bind).is_loopback


def _fail(message: str, key: Key) -> ConfigError:
    return ConfigError(message, key=key)


def _string(value: Any, key: Key) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail("expected a non-empty string", key)
    return value.strip()


def _strings(value: Any, key: Key) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise _fail("expected a list of strings", key)
    return tuple(_string(item, (*key, i)) for i, item in enumerate(value))


def _number(value: Any, key: Key, *, minimum: float, maximum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail("expected a number", key)
    if not minimum <= value <= maximum:
        raise _fail(f"must be between {minimum:g} and {maximum:g}, got {value!r}", key)
    return float(value)


def _integer(value: Any, key: Key, *, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail("expected an integer", key)
    if not minimum <= value <= maximum:
        raise _fail(f"must be between {minimum} and {maximum}, got {value!r}", key)
    return value


def _origin(value: Any, key: Key) -> str:
    text = _string(value, key).rstrip("/")
    scheme, sep, rest = text.partition("://")
    if scheme not in ("http", "https") or not sep or not rest or "/" in rest:
        raise _fail(f"expected an origin such as https://lab.example.org, got {text!r}", key)
    return text.lower()


def _host_name(value: Any, key: Key) -> str:
    text = _string(value, key).lower()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if any(c in text for c in "/@ ") or (":" in text and not _is_ip(text)):
        raise _fail(f"expected a host name or address without port, got {text!r}", key)
    return text


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def parse_settings(section: Mapping[str, Any], key: Key = ("web",)) -> WebSettings:
    """Validate the ``[web]`` section (``key``: its path in the document)."""
    if not isinstance(section, Mapping):
        raise _fail("expected a table", key)
    known = set(WebSettings.__dataclass_fields__)
    for name in section:
        if name not in known:
            raise _fail(f"unknown setting (known: {', '.join(sorted(known))})", (*key, name))
    values: dict[str, Any] = {}
    if "bind" in section:
        bind = _host_name(section["bind"], (*key, "bind"))
        if bind == "localhost":
            bind = "127.0.0.1"
        if not _is_ip(bind):
            raise _fail(f"expected an IP address to listen on, got {bind!r}", (*key, "bind"))
        values["bind"] = bind
    if "port" in section:
        values["port"] = _integer(section["port"], (*key, "port"), minimum=0, maximum=65535)
    if "allowed_hosts" in section:
        hosts_key = (*key, "allowed_hosts")
        hosts = section["allowed_hosts"]
        if isinstance(hosts, str) or not isinstance(hosts, Sequence):
            raise _fail("expected a list of host names", hosts_key)
        values["allowed_hosts"] = tuple(_host_name(h, (*hosts_key, i)) for i, h in enumerate(hosts))
        if not values["allowed_hosts"]:
            raise _fail("an empty list would refuse every request", hosts_key)
    if "allowed_origins" in section:
        origins_key = (*key, "allowed_origins")
        origins = section["allowed_origins"]
        if isinstance(origins, str) or not isinstance(origins, Sequence):
            raise _fail("expected a list of origins", origins_key)
        values["allowed_origins"] = tuple(
            _origin(o, (*origins_key, i)) for i, o in enumerate(origins)
        )
    if "session_ttl" in section:
        values["session_ttl"] = _number(
            section["session_ttl"], (*key, "session_ttl"), minimum=60, maximum=30 * 86400
        )
    if "login_attempts" in section:
        values["login_attempts"] = _integer(
            section["login_attempts"], (*key, "login_attempts"), minimum=1, maximum=1000
        )
    if "login_window" in section:
        values["login_window"] = _number(
            section["login_window"], (*key, "login_window"), minimum=1, maximum=86400
        )
    if "public_metrics" in section:
        if not isinstance(section["public_metrics"], bool):
            raise _fail("expected true or false", (*key, "public_metrics"))
        values["public_metrics"] = section["public_metrics"]
    if "trusted_proxies" in section:
        proxies_key = (*key, "trusted_proxies")
        proxies = _strings(section["trusted_proxies"], proxies_key)
        for i, proxy in enumerate(proxies):
            try:
                ipaddress.ip_network(proxy)
            except ValueError:
                problem = f"expected an address or network, got {proxy!r}"
                raise _fail(problem, (*proxies_key, i)) from None
        values["trusted_proxies"] = proxies
    settings = WebSettings(**values)
    return _check_hosts(settings, section, key)


def _check_hosts(settings: WebSettings, section: Mapping[str, Any], key: Key) -> WebSettings:
    """Defaults for ``allowed_hosts`` that follow ``bind``; a wildcard bind must list names."""
    if "allowed_hosts" in section:
        return settings
    if settings.bind in _WILDCARDS:
        raise _fail(
            f"listening on {settings.bind!r} needs allowed_hosts: the "
            "names clients use to reach this gateway (the Host header guard against DNS "
            "rebinding)",
            (*key, "allowed_hosts"),
        )
    if settings.loopback:
        return settings
    hosts = (*LOOPBACK_HOSTS, settings.bind.lower())
    return WebSettings(**{**_as_dict(settings), "allowed_hosts": hosts})


def _as_dict(settings: WebSettings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in WebSettings.__dataclass_fields__}


def parse_users(users: Sequence[Mapping[str, Any]], key: Key = ("users",)) -> tuple[User, ...]:
    """Validate the ``[[users]]`` table: unique names, argon2 PHC hashes, role lists."""
    if isinstance(users, str | bytes) or not isinstance(users, Sequence):
        raise _fail("expected an array of tables ([[users]])", key)
    parsed: list[User] = []
    seen: set[str] = set()
    for index, entry in enumerate(users):
        here = (*key, index)
        if not isinstance(entry, Mapping):
            raise _fail("expected a table with name, password_hash and roles", here)
        for name in entry:
            if name not in ("name", "password_hash", "roles"):
                raise _fail("unknown field (known: name, password_hash, roles)", (*here, name))
        for required in ("name", "password_hash"):
            if required not in entry:
                raise _fail(f"missing {required}", here)
        name = _string(entry["name"], (*here, "name"))
        if name in seen:
            raise _fail(f"user {name!r} is defined twice", (*here, "name"))
        seen.add(name)
        password_hash = _string(entry["password_hash"], (*here, "password_hash"))
        problem = check_hash(password_hash)
        if problem is not None:
            raise _fail(
                f"{problem} (make one with `python -m aiotmc.gateway.web.passwords`)",
                (*here, "password_hash"),
            )
        roles = _strings(entry.get("roles", []), (*here, "roles"))
        parsed.append(User(name, password_hash, roles))
    return tuple(parsed)
