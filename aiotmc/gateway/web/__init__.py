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

__all__ = ["DEMO_CONFIG", "from_config"]

Key = tuple[str | int, ...]

#: What ``aiotmc gateway --demo`` appends to its config: the dashboard on loopback and one
#: user, ``demo`` with password ``demo`` (a demo of simulated instruments only: never
#: copy this user into a real config).
_DEMO_HASH = (
    "$argon2id$v=19$m=65536,t=3,p=4$IhpT63FcXCNrU6MT+AJ4Pg"
    "$t5mufbMXxlX9CF8sjdNdRnJUgpf9nAsNuB4mkYptgPY"
)
DEMO_CONFIG = f"""\
[web]
bind = "127.0.0.1"
port = 8080

[[users]]
name = "demo"
# python -m aiotmc.gateway.web.passwords  <<< demo
password_hash = "{_DEMO_HASH}"
roles = ["operator"]
"""


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
