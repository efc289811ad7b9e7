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

__all__ = ["from_config"]


def from_config(
    section: Mapping[str, Any],
    users: Sequence[Mapping[str, Any]],
    key: tuple[str | int, ...] = ("web",),
) -> WebComponent:
    """The web component for a ``[web]`` section and the ``[[users]]`` table.

    Validates both up front: a bad field raises :class:`aiotmc.ConfigError` with its key
    path (``key`` + field for ``[web]``, ``("users", index, field)`` for users).
    """
    from aiotmc.gateway.web.component import WebComponent
    from aiotmc.gateway.web.settings import parse_settings, parse_users

    return WebComponent(parse_settings(section, key), parse_users(users, ("users",)))
