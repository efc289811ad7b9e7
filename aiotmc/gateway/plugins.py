"""The gateway's plug-in table: config section (and type) → ``"module:factory"``.

Each part of the gateway (storage sinks, the rule engine, notifiers, the MQTT bridge, the
controller, the web app) is one row here, imported only when a config uses it, so that
a part that is missing or cannot be imported (its dependency is not installed) gives a
:class:`~aiotmc.ConfigError` on the section that asks for it instead of an ImportError,
and ``import aiotmc.gateway`` stays cheap.

Every factory has one signature, ``factory(section, key) -> object``: it validates the
section up front and raises ``ConfigError(message, key=...)`` naming the bad field; the
loader adds file and line. What ``section`` and ``key`` are depends on the row:

* a **typed** row (``[[sinks]]``, ``[[notifiers]]``: ``type = "..."`` selects the row):
  one call per array element, with that table (``type`` and ``name`` included) and
  ``key = ("sinks", 2)``;
* a **grouped** row (``mqtt``, ``rules``, ``control``, ``web``): one call when any of the
  row's ``sections`` is in the document, with a mapping holding just those top-level
  sections (e.g. ``{"roles": [...], "control": {...}}``) and ``key = ()``, so that its
  errors name ``roles[1].allow`` directly.

A factory may also declare keyword parameters for what the gateway knows beyond its
section; the loader passes those it declares (see :func:`call`):

* ``config_dir`` (:class:`~pathlib.Path`): the configuration file's directory, which
  relative paths in it are relative to;
* ``data_dir`` (:class:`~pathlib.Path`): where the gateway keeps its files;
* ``gateway`` (:class:`~aiotmc.gateway.config.GatewaySettings`): site, host, id...;
* ``instruments`` (``tuple[str, ...]``): the configured instrument names, to check
  references against;
* ``instrument_for`` (``Callable[[str], Instrument | None]``): at run time, the open
  instrument of a name (None while it is offline; ``LookupError`` for an unknown name).

A typed row whose ``type`` is ``"*"`` takes every type not listed otherwise: its factory
dispatches on ``type`` itself (and rejects the unknown ones).

``kind`` says what the factory returns: a :class:`~aiotmc.gateway.Sink`, a
:class:`~aiotmc.gateway.Component`, or the :class:`~aiotmc.gateway.Controller` (which
the gateway also runs as a Component if it has a ``run`` method, to get the hub).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .._exceptions import ConfigError

__all__ = ["PLUGINS", "Plugin", "available", "call", "resolve"]

Key = tuple[str | int, ...]
Factory = Callable[..., object]


@dataclass(frozen=True, slots=True)
class Plugin:
    """One row of the table (see the module docstring)."""

    #: The top-level section(s) the row reads; a typed row has exactly one.
    sections: tuple[str, ...]
    #: ``type = "..."`` selecting this row in an array of tables, or None (grouped).
    type: str | None
    #: ``"package.module:attribute.path"``, imported on first use.
    target: str
    kind: Literal["sink", "component", "controller"]
    #: What to install when the module is missing.
    install: str = "pip install 'aiotmc[gateway]'"


PLUGINS: tuple[Plugin, ...] = (
    # storage (gwcore: sqlite; gwstore: postgres, influx)
    Plugin(("sinks",), "sqlite", "aiotmc.gateway.sinks.sqlite:SqliteSink.from_config", "sink"),
    Plugin(
        ("sinks",), "postgres", "aiotmc.gateway.sinks.postgres:PostgresSink.from_config", "sink"
    ),
    Plugin(("sinks",), "influx", "aiotmc.gateway.sinks.influx:InfluxSink.from_config", "sink"),
    # alerts (gwstore): the rule engine, and the notifiers (webhook, email, mqtt...)
    Plugin(("rules",), None, "aiotmc.gateway.alerts:RuleEngine.from_config", "component"),
    Plugin(("notifiers",), "*", "aiotmc.gateway.alerts:notifier_from_config", "component"),
    # MQTT bridge and remote control (gwmqtt)
    Plugin(("mqtt",), None, "aiotmc.gateway.mqtt:from_config", "component"),
    Plugin(("roles", "control"), None, "aiotmc.gateway.control:from_config", "controller"),
    # web dashboard, login, metrics, health (gwweb)
    Plugin(("users", "web"), None, "aiotmc.gateway.web:from_config", "component"),
)


def resolve(plugin: Plugin, key: Key) -> Factory:
    """Import ``plugin.target``; ``ConfigError`` at ``key`` when that part is missing."""
    module_name, _, attribute = plugin.target.partition(":")
    what = (
        f"[{plugin.sections[0]}] type {plugin.type!r}"
        if plugin.type
        else ("[" + "]/[".join(plugin.sections) + "]")
    )
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"{what} needs {module_name}, which cannot be imported here ({exc}); "
            f"is this part installed? ({plugin.install})",
            key=key,
        ) from exc
    try:
        for part in attribute.split("."):
            obj = getattr(obj, part)
    except AttributeError as exc:
        raise ConfigError(
            f"{what}: {plugin.target} does not exist in this installation ({exc})", key=key
        ) from exc
    if not callable(obj):
        raise ConfigError(f"{what}: {plugin.target} is not callable", key=key)
    factory: Factory = obj
    return factory


def call(
    factory: Factory, section: Mapping[str, Any], key: Key, context: Mapping[str, Any]
) -> object:
    """``factory(section, key, **c)`` with the entries ``c`` of ``context`` it declares."""
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return factory(section, key)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return factory(section, key, **context)
    wanted = {
        name: value
        for name, value in context.items()
        if name in parameters
        and parameters[name].kind
        in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    }
    return factory(section, key, **wanted)


def available(plugin: Plugin) -> bool:
    """Whether the row's module can be imported here (``--demo`` asks for the web app)."""
    try:
        resolve(plugin, ())
    except ConfigError:
        return False
    return True
