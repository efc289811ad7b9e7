"""NATS users and permissions from the gateway's own ``[[roles]]``: one source of truth
for who may do what, on the gateway's web and MQTT front ends and on the bus.

Each agent's configuration (``aiotmc agent --config bench1.toml``) lists its instruments
and may hold ``[[roles]]`` (docs/gateway.md, "Remote control and security"). Over NATS a
remote instrument takes raw operations (query, write, blocks, trigger...), which the
gateway grants only with ``scpi = true``; so:

* each agent becomes an ``agent`` user named after it (serves only its own instruments);
* a user of a role with ``scpi = true`` becomes an ``operator`` of that role's
  ``instruments`` on that agent (every instrument of the agent when the role names none);
* a user of any other role becomes a ``viewer``: sees presence and service requests,
  sends nothing to any instrument (named operations stay on the gateway's front ends);
* a user in roles of several agents gets the union of their instruments.

Passwords never come from a gateway configuration: they are given by user name (bcrypt
hashes from ``nats server passwd`` work as well, and :class:`~.auth.PasswordVariable`
names an environment variable of nats-server instead). Add collectors and admins as
:class:`~.auth.NatsUser` in ``extra``. :func:`~.auth.authorization_config` writes the
result for nats-server.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .._exceptions import ConfigError
from ..gateway.config import GatewayConfig
from ..gateway.control import GatewayController
from .auth import NatsUser, PasswordVariable

__all__ = ["users_from_roles"]


def users_from_roles(
    agents: Mapping[str, GatewayConfig],
    passwords: Mapping[str, str | PasswordVariable],
    *,
    extra: Iterable[NatsUser] = (),
) -> list[NatsUser]:
    """NATS users for ``agents`` (agent name -> its gateway configuration) and the users
    of their ``[[roles]]``; ``passwords`` by user (and agent) name.

    Raises :class:`~aiotmc.ConfigError` for a missing password or a name that is both an
    agent and a user.
    """

    def password(name: str) -> str | PasswordVariable:
        try:
            return passwords[name]
        except KeyError:
            raise ConfigError(f"no password for NATS user {name!r}") from None

    grants: dict[str, list[str]] = {}  # user -> agent/instrument patterns (may be empty)
    for agent, config in agents.items():
        controller = config.controller
        if not isinstance(controller, GatewayController):
            continue
        for role in controller.roles.values():
            for user in sorted(role.users):
                if user in agents:
                    raise ConfigError(
                        f"{user!r} is an agent and a user of role {role.name!r}: "
                        "give them different names"
                    )
                patterns = grants.setdefault(user, [])
                if not role.scpi:
                    continue
                wanted = sorted(role.instruments) if role.instruments is not None else ["*"]
                patterns.extend(f"{agent}/{name}" for name in wanted)
    users = [NatsUser(agent, password(agent), "agent") for agent in agents]
    for user, patterns in grants.items():
        unique = list(dict.fromkeys(patterns))
        kind = "operator" if unique else "viewer"
        users.append(NatsUser(user, password(user), kind, instruments=unique))
    users.extend(extra)
    return users
