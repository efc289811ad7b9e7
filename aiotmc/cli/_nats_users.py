"""``aiotmc nats-users [NAME=]GATEWAY.toml...``: nats-server users from the gateway's roles.

Prints (or writes to ``--out``, mode 0600) the ``authorization { users = [...] }`` block
that :func:`aiotmc.agent.roles.users_from_roles` derives from the agents' configurations,
ready for ``include`` in nats-server.conf. Passwords are never invented or read from a
gateway configuration: each user's password is a variable reference
(``$AIOTMC_NATS_PASSWORD_ALICE``) that nats-server resolves from its environment, unless
``--passwords FILE`` gives it (a bcrypt hash from ``nats server passwd``, or plain text,
which is written as given).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ._errors import CommandError, UsageError
from ._runtime import Options

if TYPE_CHECKING:
    from ..agent.auth import NatsUser, PasswordVariable
    from ..gateway.config import GatewayConfig

__all__ = ["add_nats_users_parser", "cmd_nats_users", "password_variable"]

_BCRYPT = re.compile(r"\$2[aby]?\$\d\d\$[./A-Za-z0-9]{53}")
_PREFIX = "AIOTMC_NATS_PASSWORD_"


def add_nats_users_parser(command: argparse.ArgumentParser) -> None:
    """The ``nats-users`` subcommand's arguments."""
    command.add_argument(
        "configs",
        nargs="+",
        metavar="[AGENT=]GATEWAY.toml",
        help="an agent's gateway configuration (aiotmc agent --config), under the agent's "
        "name (default: the configuration's [gateway] host)",
    )
    command.add_argument(
        "--passwords",
        metavar="FILE",
        help="'user:password' lines (a bcrypt hash from 'nats server passwd', or plain text); "
        f"users not in it get ${_PREFIX}<USER>, resolved by nats-server from its environment",
    )
    command.add_argument(
        "--collector",
        action="append",
        default=[],
        metavar="USER",
        help="also a user that consumes the measurement stream (the central gateway)",
    )
    command.add_argument(
        "--admin", action="append", default=[], metavar="USER", help="also a user with every right"
    )
    command.add_argument(
        "--format",
        choices=("conf", "json"),
        default="conf",
        help="conf: the block for nats-server.conf (default); json: users, roles, "
        "instruments and permissions, for inspection",
    )
    command.add_argument("--out", metavar="FILE", help="write here (mode 0600), not to stdout")


def password_variable(user: str) -> str:
    """The environment variable nats-server reads ``user``'s password from."""
    return _PREFIX + re.sub(r"[^A-Za-z0-9_]", "_", user).upper()


def _configs(items: list[str]) -> dict[str, GatewayConfig]:
    from .._exceptions import ConfigError
    from ..gateway.config import load_config

    agents: dict[str, GatewayConfig] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = "", item
        try:
            config = load_config(path)
        except ConfigError as exc:
            raise CommandError(str(exc)) from None
        name = name or config.gateway.host
        if name in agents:
            raise UsageError(f"agent {name!r} named twice")
        agents[name] = config
    return agents


def _given_passwords(path: str | None) -> dict[str, str]:
    if path is None:
        return {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise CommandError(f"cannot read the password file: {exc}") from None
    given: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        user, sep, secret = line.partition(":")
        if not sep or not user.strip() or not secret:
            raise CommandError(f"{path}:{number}: expected 'user:password'")
        given[user.strip()] = secret
    return given


def _users(args: argparse.Namespace) -> list[NatsUser]:
    from .._exceptions import ConfigError
    from ..agent.auth import NatsUser, PasswordVariable
    from ..agent.roles import users_from_roles

    agents = _configs(args.configs)
    given = _given_passwords(args.passwords)
    plain = sorted(u for u, s in given.items() if not _BCRYPT.fullmatch(s))
    if plain:
        print(
            f"aiotmc: warning: plain-text passwords for {', '.join(plain)} are written as "
            "given; prefer bcrypt hashes ('nats server passwd')",
            file=sys.stderr,
        )

    class Passwords(dict[str, "str | PasswordVariable"]):
        def __missing__(self, user: str) -> PasswordVariable:
            return PasswordVariable(password_variable(user))

    passwords = Passwords(given)
    extra = [NatsUser(u, passwords[u], "collector") for u in args.collector]
    extra += [NatsUser(u, passwords[u], "admin") for u in args.admin]
    try:
        return users_from_roles(agents, passwords, extra=extra)
    except ConfigError as exc:
        raise CommandError(str(exc)) from None


def _as_json(users: list[NatsUser]) -> str:
    from ..agent.auth import PasswordVariable, permissions

    out = []
    for user in users:
        secret = user.password
        out.append(
            {
                "user": user.name,
                "role": user.role,
                "instruments": list(user.instruments),
                "password": {"env": secret.name}
                if isinstance(secret, PasswordVariable)
                else {"given": "bcrypt" if _BCRYPT.fullmatch(secret) else "plain"},
                "permissions": permissions(user),
            }
        )
    return json.dumps({"users": out}, indent=2) + "\n"


def cmd_nats_users(args: argparse.Namespace, options: Options) -> int:
    from .._exceptions import ConfigError
    from ..agent.auth import PasswordVariable, authorization_config

    users = _users(args)
    try:
        text = authorization_config(users) if args.format == "conf" else _as_json(users)
    except ConfigError as exc:
        raise CommandError(str(exc)) from None
    variables = sorted(u.password.name for u in users if isinstance(u.password, PasswordVariable))
    if args.format == "conf":
        header = "# aiotmc nats-users: nats-server users from the gateway's [[roles]]\n"
        if variables:
            header += "# nats-server needs these environment variables: " + " ".join(variables)
            header += "\n"
        text = header + text
    if args.out is None:
        sys.stdout.write(text)
    else:
        try:
            fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as exc:
            raise CommandError(f"cannot write {args.out}: {exc}") from None
        print(f"aiotmc: {len(users)} NATS users written to {args.out}", file=sys.stderr)
    if variables and args.format == "conf":
        print(
            "aiotmc: start nats-server with the passwords in: " + " ".join(variables),
            file=sys.stderr,
        )
    return 0
