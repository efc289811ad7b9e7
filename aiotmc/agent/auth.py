"""NATS users and permissions for a lab: who may serve, use or watch which instruments.

:func:`authorization_config` writes the ``authorization`` block of a nats-server
configuration from a list of :class:`NatsUser`. Roles:

* ``agent``: serves its own instruments only (``aiotmc.rpc.<agent>.>``), publishes their
  service requests, its presence and its readings (into the stream a collector or an
  admin created: it may read streams' info, not create them); cannot use other agents'
  instruments;
* ``operator``: may use the instruments it lists (``agent/instrument``, ``*`` for every
  instrument of an agent) and see their service requests;
* ``viewer``: sees presence, service requests and the measurement stream; cannot send
  anything to an instrument;
* ``collector``: consumes the measurement stream durably (JetStream API and acks);
* ``admin``: everything.

Every user may subscribe to ``_INBOX.>`` (request/reply answers), as NATS clients do;
answers go to random inbox names. Passwords may be given as bcrypt hashes
(``nats server passwd``); plain text works but then protect the file (mode 0600). A
:class:`PasswordVariable` instead names a variable that nats-server resolves from its
environment when it loads the file, so that no password is written at all.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from .._exceptions import ConfigError

__all__ = ["ROLES", "NatsUser", "PasswordVariable", "authorization_config", "permissions"]

ROLES: Final = ("agent", "operator", "viewer", "collector", "admin")
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_INSTRUMENT = re.compile(r"([A-Za-z0-9_-]{1,64})/([A-Za-z0-9_-]{1,64}|\*)")
_READINGS: Final = "aiotmc.readings"
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


@dataclass(frozen=True)
class PasswordVariable:
    """A password nats-server takes from its environment variable ``name`` (written
    unquoted as ``$name``: nats-server resolves a variable the file does not define from
    the environment it was started with)."""

    name: str

    def __post_init__(self) -> None:
        if not _VARIABLE.fullmatch(self.name):
            raise ConfigError(
                f"{self.name!r} is not a usable variable name ([A-Za-z_][A-Za-z0-9_]*)"
            )


@dataclass(frozen=True)
class NatsUser:
    """One NATS login and its role (``agent`` users are named after their agent)."""

    name: str
    #: The password as nats-server checks it: plain text, a bcrypt hash, or a variable.
    password: str | PasswordVariable = field(repr=False)
    role: str
    #: operator: the instruments it may use, as ``agent/instrument`` or ``agent/*``.
    instruments: Sequence[str] = ()


def permissions(user: NatsUser) -> dict[str, dict[str, list[str]]]:
    """The user's ``publish`` / ``subscribe`` allow-lists."""
    if user.role not in ROLES:
        raise ConfigError(f"unknown role {user.role!r} (known: {', '.join(ROLES)})")
    if not _NAME.fullmatch(user.name):
        raise ConfigError(f"user name {user.name!r}: 1-64 letters, digits, '_' or '-'")
    inbox = "_INBOX.>"
    if user.role == "admin":
        return {"publish": {"allow": [">"]}, "subscribe": {"allow": [">"]}}
    if user.role == "agent":
        me = user.name
        return {
            "publish": {
                "allow": [
                    inbox,
                    f"aiotmc.srq.{me}.>",
                    f"aiotmc.presence.{me}",
                    f"{_READINGS}.{me}.>",
                    f"$KV.aiotmc_presence.{me}",
                    "$JS.API.STREAM.CREATE.KV_aiotmc_presence",
                    # the measurement stream's info (a collector or an admin creates it)
                    "$JS.API.STREAM.INFO.*",
                ]
            },
            "subscribe": {"allow": [inbox, f"aiotmc.rpc.{me}.>", "aiotmc.discover"]},
        }
    if user.role == "operator":
        publish, subscribe = ["aiotmc.discover"], [inbox, "aiotmc.presence.>"]
        for item in user.instruments:
            match = _INSTRUMENT.fullmatch(item)
            if match is None:
                raise ConfigError(f"{user.name}: instrument {item!r} is not agent/instrument")
            agent, instrument = match.groups()
            token = ">" if instrument == "*" else instrument
            publish.append(f"aiotmc.rpc.{agent}.{token}")
            subscribe.append(f"aiotmc.srq.{agent}.{token}")
        return {"publish": {"allow": publish}, "subscribe": {"allow": subscribe}}
    if user.role == "viewer":
        return {
            "publish": {"allow": ["aiotmc.discover"]},
            "subscribe": {"allow": [inbox, "aiotmc.presence.>", "aiotmc.srq.>"]},
        }
    # collector
    return {
        "publish": {"allow": ["$JS.API.>", "$JS.ACK.>", "aiotmc.discover"]},
        "subscribe": {"allow": [inbox, "aiotmc.presence.>", f"{_READINGS}.>"]},
    }


def authorization_config(users: Iterable[NatsUser]) -> str:
    """The ``authorization { users = [...] }`` block for nats-server's configuration."""
    entries = []
    seen: set[str] = set()
    for user in users:
        if user.name in seen:
            raise ConfigError(f"user {user.name!r} defined twice")
        seen.add(user.name)
        secret = user.password
        password = f"${secret.name}" if isinstance(secret, PasswordVariable) else json.dumps(secret)
        entries.append(
            f'    {{"user": {json.dumps(user.name)}, "password": {password}, '
            f'"permissions": {json.dumps(permissions(user))}}}'
        )
    return "authorization {\n  users = [\n" + ",\n".join(entries) + "\n  ]\n}\n"
