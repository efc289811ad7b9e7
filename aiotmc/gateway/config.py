"""``aiotmc gateway CONFIG.toml``: read and validate the whole configuration up front.

:func:`load_config` reads a TOML file; :func:`parse_config` a string. Both return a
:class:`GatewayConfig` with every part already built (sinks, components, the controller)
but nothing opened or connected, or raise one :class:`~aiotmc.ConfigError` whose message
names the file, the line and the field::

    gateway.toml:14: instruments[1].channels[0].period: must be greater than 0, got 0

This module owns ``[gateway]``, ``[[instruments]]`` (with ``[[instruments.channels]]``)
and the list of ``[[sinks]]``; every other section belongs to a part found through the
plug-in table (:mod:`aiotmc.gateway.plugins`), which validates it itself. See
docs/gateway.md for the reference.
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, cast

from .._exceptions import ConfigError, InvalidResourceName, UnsupportedOperation
from ._toml_lines import LineMap
from .fields import Fields, Key, check_name
from .model import Component, Controller, Sink
from .plugins import PLUGINS, Plugin, call, resolve

if TYPE_CHECKING:
    from ..instrument import Instrument

__all__ = [
    "ChannelConfig",
    "GatewayConfig",
    "GatewaySettings",
    "InstrumentConfig",
    "InstrumentDirectory",
    "load_config",
    "parse_config",
]

Parse = Literal["float", "int", "str", "bool"]
PARSERS: Final = ("float", "int", "str", "bool")

#: ``aiotmc.open`` keywords an instrument's ``options`` may set (the transport's own
#: options are checked against what it declares).
OPEN_OPTIONS: Final = frozenset(
    {
        "connect_timeout",
        "read_termination",
        "write_termination",
        "encoding",
        "max_message_size",
        "srq_poll_interval",
    }
)
#: Options the gateway decides itself, with the reason.
RESERVED_OPTIONS: Final = {
    "reconnect": "the gateway reconnects itself (instrument 'retry_min'/'retry_max')",
    "timeout": "use the instrument's 'timeout' field",
}

#: Resource kinds whose transport has no SRQ channel (``on_srq`` needs polling there).
NO_SRQ_CHANNEL: Final = frozenset({"tcpip-socket", "asrl"})

DEFAULT_SPOOL_MAX_READINGS: Final = 10_000_000
#: Seconds between the starts of two spool commits at most (``aiotmc gateway``'s default).
DEFAULT_SPOOL_COMMIT_INTERVAL: Final = 0.002


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """``[gateway]``: who this gateway is and where it keeps its files."""

    site: str
    host: str
    #: First half of every reading's idempotent key (default: ``host``).
    id: str
    #: The spool and the default SQLite database live here.
    data_dir: Path
    #: At most this many readings are kept in the spool (see docs/gateway.md, "Spool").
    spool_max_readings: int = DEFAULT_SPOOL_MAX_READINGS
    #: ``normal``: a commit survives the process being killed; ``full``: also power loss.
    spool_sync: Literal["normal", "full"] = "normal"
    #: Under load, a spool commit starts at most this often (seconds); None: the
    #: program's default (:data:`DEFAULT_SPOOL_COMMIT_INTERVAL`; an agent's is longer).
    spool_commit_interval: float | None = None
    #: The event loop ``aiotmc gateway`` runs on: asyncio's own, or uvloop's (faster).
    loop: Literal["asyncio", "uvloop"] = "asyncio"


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    """``[[instruments.channels]]``: one value read from an instrument."""

    name: str
    query: str
    parse: Parse = "float"
    unit: str = ""
    #: Seconds between reads; None for a channel read on service requests.
    period: float | None = None
    on_srq: bool = False
    #: No value for this long marks the channel stale (None: never).
    stale_after: float | None = None
    #: ``on_srq``: written after connecting and after each read, to start the next
    #: measurement (e.g. ``"INIT;*OPC"``).
    arm: str | None = None


@dataclass(frozen=True, slots=True)
class InstrumentConfig:
    """``[[instruments]]``: one instrument, opened by resource name."""

    name: str
    resource: str
    channels: tuple[ChannelConfig, ...]
    #: Keyword options for ``aiotmc.open`` (terminations, transport options...).
    options: Mapping[str, Any] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    #: Commands written after every (re)connect, e.g. SRQ enables.
    setup: tuple[str, ...] = ()
    #: Per-query timeout, seconds.
    timeout: float = 5.0
    #: Reconnect backoff: first and longest wait between attempts, seconds.
    retry_min: float = 0.5
    retry_max: float = 30.0


@dataclass(frozen=True)
class GatewayConfig:
    """A validated configuration: settings plus every part, built but not started."""

    gateway: GatewaySettings
    instruments: tuple[InstrumentConfig, ...]
    sinks: tuple[Sink, ...]
    components: tuple[Component, ...] = ()
    controller: Controller | None = None
    #: The file it came from (None for a string).
    path: Path | None = None
    #: Name → open instrument, filled in by the running gateway (``instrument_for``).
    directory: InstrumentDirectory = field(default_factory=lambda: InstrumentDirectory(set()))


class InstrumentDirectory:
    """``directory(name)``: the open instrument ``name``, or None while it is offline.

    Given to the parts that need instruments (the controller) as ``instrument_for``; the
    gateway's sources fill it in as they connect. ``LookupError`` for an unknown name.
    """

    def __init__(self, names: set[str]) -> None:
        self._names = frozenset(names)
        self._open: dict[str, Instrument] = {}

    def __call__(self, name: str) -> Instrument | None:
        if name not in self._names:
            raise LookupError(f"no instrument named {name!r} on this gateway")
        return self._open.get(name)

    def set(self, name: str, instrument: Instrument | None) -> None:
        """Record ``name``'s open instrument (None: it went offline)."""
        if instrument is None:
            self._open.pop(name, None)
        else:
            self._open[name] = instrument


def load_config(path: str | os.PathLike[str]) -> GatewayConfig:
    """Read and validate ``path`` (``ConfigError`` names file, line and field)."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read the configuration: {exc.strerror or exc}", path=str(file)
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text: {exc.reason}", path=str(file)) from None
    return parse_config(text, path=file)


def parse_config(text: str, *, path: str | os.PathLike[str] | None = None) -> GatewayConfig:
    """Validate a configuration given as TOML text; relative paths in it are relative to
    the directory of ``path`` (the current directory without one)."""
    where = str(path) if path is not None else "<config>"
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = re.search(r"\(at line (\d+), column \d+\)", message)
        line = int(match[1]) if match else None
        reason = message[: match.start()].strip() if match else message
        raise ConfigError(f"TOML syntax error: {reason}", path=where, line=line) from None
    base = Path(path).resolve().parent if path is not None else Path.cwd()
    try:
        return _build(document, base=base, path=Path(path) if path is not None else None)
    except ConfigError as exc:
        raise exc.located(where, LineMap(text).find(exc.key)) from None


# -- building -------------------------------------------------------------------------------


def _build(document: Mapping[str, Any], *, base: Path, path: Path | None) -> GatewayConfig:
    known = {"gateway", "instruments", "sinks"} | {s for p in PLUGINS for s in p.sections}
    for name in document:
        if name not in known:
            raise ConfigError(
                f"unknown section '{name}' (known: {', '.join(sorted(known))})", key=(name,)
            )
    root = Fields(document)
    settings = _gateway(root.table_of("gateway", {}), base)
    instruments = _instruments(root.array("instruments", []))
    directory = InstrumentDirectory({i.name for i in instruments})
    context = {
        "config_dir": base,
        "data_dir": settings.data_dir,
        "gateway": settings,
        "instruments": tuple(i.name for i in instruments),
        "instrument_for": directory,
    }
    sinks = _sinks(root.array("sinks", []), settings, context)
    context["sinks"] = sinks
    if "collector" in document:  # instruments also come from agents: not known up front
        context["instruments"] = None
    components: list[Component] = []
    controller: Controller | None = None
    grouped = [p for p in PLUGINS if p.type is None]
    for plugin in grouped:
        present = {s: document[s] for s in plugin.sections if s in document}
        if not present:
            continue
        built = call(resolve(plugin, (plugin.sections[0],)), present, (), context)
        if plugin.kind == "controller":
            controller = cast("Controller", built)
            if hasattr(built, "run"):
                components.append(cast("Component", built))
        else:
            components.append(_component(built, plugin, (plugin.sections[0],)))
    for index, section in enumerate(root.array("notifiers", [])):
        key: Key = ("notifiers", index)
        built = call(_typed("notifiers", section, key), section, key, context)
        components.append(cast("Component", built))
    names = [c.name for c in components]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"two parts of the gateway are both named {name!r}")
    return GatewayConfig(
        gateway=settings,
        instruments=instruments,
        sinks=sinks,
        components=tuple(components),
        controller=controller,
        path=path,
        directory=directory,
    )


def _component(built: object, plugin: Plugin, key: Key) -> Component:
    if not callable(getattr(built, "run", None)) or not isinstance(
        getattr(built, "name", None), str
    ):
        raise ConfigError(f"{plugin.target} did not return a Component (name, run)", key=key)
    return cast("Component", built)


def _typed(section: str, table: object, key: Key) -> Any:
    fields = Fields(table, key)
    kind = fields.string("type")
    rows = {p.type: p for p in PLUGINS if p.sections == (section,) and p.type is not None}
    plugin = rows.get(kind) or rows.get("*")
    if plugin is None:
        known = ", ".join(sorted(t for t in rows if t != "*"))
        raise ConfigError(
            f"unknown {section[:-1]} type {kind!r} (known: {known})", key=(*key, "type")
        )
    return resolve(plugin, (*key, "type"))


def default_host() -> str:
    """This machine's short host name, made usable in topics."""
    name = socket.gethostname().split(".")[0]
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", name).strip("-.")[:64]
    return name or "localhost"


def _gateway(table: Mapping[str, Any], base: Path) -> GatewaySettings:
    fields = Fields(table, ("gateway",))
    site = fields.name("site", "lab")
    host = fields.name("host", None) or default_host()
    gateway_id = fields.name("id", None) or host
    data_dir = fields.string("data_dir", "data")
    spool_max = fields.integer(
        "spool_max_readings", DEFAULT_SPOOL_MAX_READINGS, minimum=1000, maximum=1 << 40
    )
    spool_sync = fields.string("spool_sync", "normal", choices=("normal", "full"))
    commit_interval = fields.duration("spool_commit_interval", None)
    if commit_interval is not None and commit_interval > 1.0:
        raise ConfigError(
            f"must be at most 1 s, got {commit_interval:g} s",
            key=fields.at("spool_commit_interval"),
        )
    loop = fields.string("loop", "asyncio", choices=("asyncio", "uvloop"))
    if loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        raise ConfigError(
            "uvloop is not installed here (pip install uvloop)", key=fields.at("loop")
        )
    fields.done()
    return GatewaySettings(
        site=site,
        host=host,
        id=gateway_id,
        data_dir=(base / Path(data_dir).expanduser()),
        spool_max_readings=spool_max,
        spool_sync=spool_sync,
        spool_commit_interval=commit_interval,
        loop=loop,
    )


def _instruments(items: list[Any]) -> tuple[InstrumentConfig, ...]:
    instruments = tuple(_instrument(item, ("instruments", i)) for i, item in enumerate(items))
    _unique([i.name for i in instruments], "instrument", ("instruments",))
    return instruments


def _unique(names: list[str], what: str, key: Key) -> None:
    seen: set[str] = set()
    for index, name in enumerate(names):
        if name in seen:
            raise ConfigError(f"duplicate {what} name {name!r}", key=(*key, index, "name"))
        seen.add(name)


def _instrument(table: object, key: Key) -> InstrumentConfig:
    fields = Fields(table, key)
    name = fields.name()
    resource = fields.string("resource")
    options = dict(fields.table_of("options", {}))
    kind = _check_resource(resource, options, key)
    tags = fields.table_of("tags", {})
    for tag, value in tags.items():
        check_name(tag, (*key, "tags", tag), "tag")
        if not isinstance(value, str):
            raise ConfigError("tag values must be strings", key=(*key, "tags", tag))
    setup = fields.strings("setup", ())
    timeout = fields.number("timeout", 5.0, positive=True, maximum=1000)
    retry_min = fields.number("retry_min", 0.5, positive=True, maximum=3600)
    retry_max = fields.number("retry_max", 30.0, positive=True, maximum=86400)
    if retry_max < retry_min:
        raise ConfigError(
            f"must be at least retry_min ({retry_min}), got {retry_max}", key=(*key, "retry_max")
        )
    channels_raw = fields.array("channels")
    if not channels_raw:
        raise ConfigError("an instrument needs at least one channel", key=(*key, "channels"))
    channels = tuple(
        _channel(item, (*key, "channels", i), timeout) for i, item in enumerate(channels_raw)
    )
    _unique([c.name for c in channels], "channel", (*key, "channels"))
    if kind in NO_SRQ_CHANNEL and "srq_poll_interval" not in options:
        for index, channel in enumerate(channels):
            if channel.on_srq:
                raise ConfigError(
                    f"a {kind} resource has no service-request channel: set "
                    "options.srq_poll_interval (seconds) to poll the status byte",
                    key=(*key, "channels", index, "on_srq"),
                )
    fields.done()
    return InstrumentConfig(
        name=name,
        resource=resource,
        channels=channels,
        options=options,
        tags=dict(tags),
        setup=setup,
        timeout=timeout,
        retry_min=retry_min,
        retry_max=retry_max,
    )


def _check_resource(resource: str, options: dict[str, Any], key: Key) -> str:
    """Check the resource name and the ``aiotmc.open`` options; the resource's kind."""
    from ..registry import registry

    try:
        name, spec = registry.for_resource(resource)
    except InvalidResourceName as exc:
        raise ConfigError(
            f"invalid resource name: {str(exc).splitlines()[0]}", key=(*key, "resource")
        ) from None
    except UnsupportedOperation as exc:
        raise ConfigError(str(exc), key=(*key, "resource")) from None
    for option, why in RESERVED_OPTIONS.items():
        if option in options:
            raise ConfigError(f"not an option here: {why}", key=(*key, "options", option))
    own = {k: v for k, v in options.items() if k not in OPEN_OPTIONS}
    try:
        spec.check_options(name, own)
    except TypeError as exc:
        bad = sorted(set(own) - spec.option_names)
        raise ConfigError(
            f"{exc} (or one of {', '.join(sorted(OPEN_OPTIONS))})",
            key=(*key, "options", bad[0]) if bad else (*key, "options"),
        ) from None
    return spec.kind


def _channel(table: object, key: Key, timeout: float) -> ChannelConfig:
    fields = Fields(table, key)
    name = fields.name()
    query = fields.string("query")
    parse = fields.string("parse", "float", choices=PARSERS)
    unit = fields.string("unit", "")
    on_srq = fields.boolean("on_srq", False)
    period = fields.number("period", None, minimum=0.001, maximum=86400)
    if on_srq and period is not None:
        raise ConfigError("give either 'period' or 'on_srq = true', not both", key=(*key, "period"))
    if not on_srq and period is None:
        raise ConfigError(
            "missing 'period' (seconds between reads) or 'on_srq = true'", key=(*key, "period")
        )
    stale_default = None if period is None else max(3 * period, period + timeout)
    stale_after = fields.number("stale_after", stale_default, positive=True)
    arm = fields.string("arm", None)
    if arm is not None and not on_srq:
        raise ConfigError("'arm' is for 'on_srq' channels", key=(*key, "arm"))
    fields.done()
    return ChannelConfig(
        name=name,
        query=query,
        parse=cast("Parse", parse),
        unit=unit,
        period=period,
        on_srq=on_srq,
        stale_after=stale_after,
        arm=arm,
    )


def _sinks(
    items: list[Any], settings: GatewaySettings, context: Mapping[str, Any]
) -> tuple[Sink, ...]:
    if not items:
        from .sinks.sqlite import SqliteSink

        return (SqliteSink(settings.data_dir / "readings.sqlite"),)
    sinks: list[Sink] = []
    for index, table in enumerate(items):
        key: Key = ("sinks", index)
        sink = call(_typed("sinks", table, key), table, key, context)
        if not isinstance(sink, Sink):
            raise ConfigError("the sink factory did not return a Sink", key=key)
        relocate = getattr(sink, "under", None)  # relative paths are under data_dir
        if callable(relocate):
            sink = relocate(settings.data_dir)
        sinks.append(sink)
    _unique([s.name for s in sinks], "sink", ("sinks",))
    return tuple(sinks)
