"""The gateway's web dashboard: login, live values, alerts, control, metrics, health.

Starlette and uvicorn (the ``web`` extra), argon2-cffi and prometheus-client (the
``gateway`` extra); it runs inside the gateway's asyncio loop. One job per module:

* :mod:`~aiotmc.gateway.web.settings`: the ``[web]`` section and ``[[users]]``, validated;
* :mod:`~aiotmc.gateway.web.passwords`: argon2id hashes (``python -m
  aiotmc.gateway.web.passwords`` prints one);
* :mod:`~aiotmc.gateway.web.guard`: Host allow-list and Origin checks (plain ASGI);
* :mod:`~aiotmc.gateway.web.sessions`, :mod:`~aiotmc.gateway.web.ratelimit`: logins;
* :mod:`~aiotmc.gateway.web.state`: the live view built from the hub's events;
* :mod:`~aiotmc.gateway.web.metrics`: ``/metrics`` and the :class:`MetricsSource` protocol;
* :mod:`~aiotmc.gateway.web.app`: the ASGI app; :mod:`~aiotmc.gateway.web.component`: the
  gateway component that serves it.

Importing this package imports none of them: :mod:`~aiotmc.gateway.web.guard` is usable
with Starlette alone (``examples/web_dashboard`` does).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiotmc.gateway.web.component import WebComponent

__all__ = ["DEMO_PORT", "demo_section", "from_config"]

Key = tuple[str | int, ...]

#: Where ``aiotmc gateway --demo`` serves the dashboard.
DEMO_PORT = 8080


def demo_section(password: str | None = None) -> tuple[str, str]:
    """What ``aiotmc gateway --demo`` appends to its config, and the line it prints.

    ``[web]`` on 127.0.0.1 and one user, ``demo`` (role ``operator``), whose password is
    made up now (``password`` to choose it) and shown in the returned banner line: no
    fixed password to forget in a real deployment.
    """
    import secrets

    from aiotmc.gateway.web.passwords import hash_password

    password = secrets.token_urlsafe(9) if password is None else password
    text = f"""\
[web]
bind = "127.0.0.1"
port = {DEMO_PORT}

[[users]]
name = "demo"
password_hash = "{hash_password(password)}"
roles = ["operator"]
"""
    banner = f"dashboard on http://127.0.0.1:{DEMO_PORT}/, log in as demo, password {password}"
    return text, banner


def _as_key(value: object) -> Key | None:
    """``value`` if it is a key path (a tuple of str/int), else None."""
    if isinstance(value, tuple) and all(isinstance(k, str | int) for k in value):
        return value
    return None


def from_config(
    section: Mapping[str, Any],
    users: Sequence[Mapping[str, Any]] | Key | None = None,
    key: Key | None = None,
) -> WebComponent:
    """The web component for a ``[web]`` section and the ``[[users]]`` table.

    Two call forms: ``from_config(web_table, users_list, key=("web",))``, or the gateway
    loader's grouped one, ``from_config({"web": {...}, "users": [...]}, key)`` where
    ``key`` is the path of that mapping (``()`` for the document). Both validate
    everything up front: a bad field raises :class:`aiotmc.ConfigError` with its key path
    (``("web", "port")``, ``("users", 2, "password_hash")``).
    """
    from aiotmc.gateway.web.component import WebComponent
    from aiotmc.gateway.web.settings import parse_settings, parse_users

    base = () if users is None else _as_key(users)
    if key is None and base is not None and set(section) <= {"web", "users"}:
        # the loader's grouped form: {"web": ..., "users": ...} and its key
        return WebComponent(
            parse_settings(section.get("web", {}), (*base, "web")),
            parse_users(section.get("users", []), (*base, "users")),
        )
    user_list: Any = [] if users is None or base == () else users
    return WebComponent(
        parse_settings(section, ("web",) if key is None else key),
        parse_users(user_list, ("users",)),
    )
