"""The transport registry: which transport opens which kind of resource.

Every transport declares itself once, in a :class:`TransportSpec`: the resource kind it
serves, how it opens, the options it accepts, how to list its resources, and why it cannot
work on this machine when it cannot. :func:`aiotmc.open`, :func:`aiotmc.list_resources`,
``aiotmc list`` and ``aiotmc info`` all go through the registry.

Built-in transports are named in a table (as python-can's ``BACKENDS``); other packages
add theirs through the entry-point group ``aiotmc.transports`` (name: the resource kind,
value: ``module:ATTRIBUTE`` naming a :class:`TransportSpec`)::

    [project.entry-points."aiotmc.transports"]
    serial-demo = "mypkg.transport:TRANSPORT"

Specs are loaded on first use, so ``import aiotmc`` imports no transport. A spec that
cannot be imported (a missing dependency) is kept as *unavailable* with the reason, the way
pyvisa-py's ``register_unavailable`` does, instead of breaking the other transports.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Final

from ._exceptions import UnsupportedOperation
from .resources import ResourceName, parse_resource
from .transports.spec import FoundResource, LinkSettings, NoOptions, Opener, TransportSpec

__all__ = [
    "ENTRY_POINT_GROUP",
    "Discovery",
    "FoundResource",
    "LinkSettings",
    "NoOptions",
    "Opener",
    "TransportRegistry",
    "TransportSpec",
    "TransportStatus",
    "registry",
]

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP: Final = "aiotmc.transports"
"""The entry-point group through which other packages register transports."""

_BUILTIN: Final[Mapping[str, str]] = {
    "tcpip-socket": "aiotmc.transports.tcp:TRANSPORT",
    "tcpip-instr": "aiotmc.transports.vxi11:TRANSPORT",
    "usb": "aiotmc.transports.usbtmc:TRANSPORT",
    "sim": "aiotmc.transports.sim:TRANSPORT",
    "hislip": "aiotmc.transports.hislip:TRANSPORT",
    "asrl": "aiotmc.transports.serial:TRANSPORT",
    "prologix-tcpip": "aiotmc.transports.prologix:TRANSPORT",
    "prologix-asrl": "aiotmc.transports.prologix:TRANSPORT_ASRL",
    "nats": "aiotmc.transports.nats:TRANSPORT",
    "gpib": "aiotmc.transports.gpib:TRANSPORT",
}


@dataclass(frozen=True, slots=True)
class TransportStatus:
    """Whether a registered transport works here, as ``aiotmc info`` reports it."""

    kind: str
    summary: str
    reason: str | None  #: why it cannot work here; None when it can
    origin: str  #: ``"built-in"`` or the entry point's value

    @property
    def available(self) -> bool:
        """True when the transport can be used on this machine."""
        return self.reason is None


@dataclass(frozen=True, slots=True)
class Discovery:
    """What :meth:`TransportRegistry.discover` found, and what it could not look at."""

    found: list[FoundResource] = field(default_factory=list)
    #: kind -> why its resources could not be listed (unavailable or failing discovery)
    problems: dict[str, str] = field(default_factory=dict)


class TransportRegistry:
    """Resource kind -> :class:`TransportSpec`, loaded lazily.

    Args:
        builtin: kind -> ``"module:attribute"`` of the transports shipped with aiotmc.
        group: the entry-point group read for other transports (None: none).
    """

    def __init__(
        self, builtin: Mapping[str, str] = _BUILTIN, *, group: str | None = ENTRY_POINT_GROUP
    ) -> None:
        self._builtin = dict(builtin)
        self._group = group
        self._lock = threading.RLock()  # a spec module may register while loading
        self._targets: dict[str, str] | None = None  # kind -> "module:attr", lazily
        self._specs: dict[str, TransportSpec] = {}
        self._broken: dict[str, str] = {}  # kind -> why its spec could not be loaded

    # -- registration --------------------------------------------------------------------

    def register(self, spec: TransportSpec, *, replace: bool = False) -> None:
        """Register ``spec`` in code (tests, applications); ``replace`` to override one."""
        if not isinstance(spec, TransportSpec):
            raise TypeError(f"expected a TransportSpec, got {type(spec).__name__}")
        with self._lock:
            targets = self._load_targets()
            if not replace and (spec.kind in self._specs or spec.kind in targets):
                raise ValueError(f"a transport for {spec.kind!r} is already registered")
            self._specs[spec.kind] = spec
            self._broken.pop(spec.kind, None)
            targets.setdefault(spec.kind, f"{spec.open.__module__}:<registered>")

    def unregister(self, kind: str) -> None:
        """Forget the transport for ``kind`` (a built-in one comes back on next use)."""
        with self._lock:
            self._specs.pop(kind, None)
            self._broken.pop(kind, None)
            if self._targets is not None and kind not in self._builtin:
                self._targets.pop(kind, None)

    def reload(self) -> None:
        """Read the entry points again (after installing a plugin in a running process)."""
        with self._lock:
            self._targets = None
            self._specs.clear()
            self._broken.clear()

    # -- lookup --------------------------------------------------------------------------

    def kinds(self) -> list[str]:
        """Every registered kind, built-in first."""
        with self._lock:
            return list(self._load_targets())

    def get(self, kind: str) -> TransportSpec:
        """The spec for ``kind``; :class:`~aiotmc.UnsupportedOperation` if none works."""
        with self._lock:
            spec = self._load(kind)
            if spec is not None:
                return spec
            known = ", ".join(self._load_targets())
            reason = self._broken.get(kind)
        if reason is not None:
            raise UnsupportedOperation(f"the {kind} transport cannot be loaded: {reason}")
        raise UnsupportedOperation(
            f"the {kind} transport is not implemented yet (supported: {known})"
        )

    def for_resource(self, resource: str | ResourceName) -> tuple[ResourceName, TransportSpec]:
        """Parse ``resource`` and find its transport."""
        name = self.parse(resource)
        try:
            return name, self.get(name.kind)
        except UnsupportedOperation as exc:
            raise UnsupportedOperation(f"{name}: {exc}") from None

    def parse(self, text: str | ResourceName) -> ResourceName:
        """Parse a resource name with the built-in grammar or a registered transport's."""
        if isinstance(text, ResourceName):
            return text
        if isinstance(text, str):
            head = text.split("::", 1)[0].rstrip("0123456789").upper()
            for spec in self._parsing_specs():
                if head in spec.interface_types and spec.parse is not None:
                    return spec.parse(text)
        return parse_resource(text)

    def status(self) -> list[TransportStatus]:
        """Every registered transport and whether it works here (for ``aiotmc info``)."""
        rows = []
        for kind in self.kinds():
            origin = "built-in" if kind in self._builtin else self._target(kind)
            try:
                spec = self.get(kind)
            except UnsupportedOperation as exc:
                rows.append(TransportStatus(kind, "", str(exc), origin))
                continue
            rows.append(TransportStatus(kind, spec.summary, _reason(spec), origin))
        return rows

    async def discover(self, **options: Any) -> Discovery:
        """List the attached resources of every available transport that can list them.

        ``options`` go to the transports that declare them (``TransportSpec.list_options``,
        e.g. ``vxi11_hosts``); a name no transport declares is a ``TypeError``."""
        result = Discovery()
        listing: list[tuple[str, TransportSpec]] = []
        for kind in self.kinds():
            try:
                spec = self.get(kind)
            except UnsupportedOperation as exc:
                result.problems[kind] = str(exc)
                continue
            if spec.list_resources is not None:
                listing.append((kind, spec))
        accepted = set().union(*(spec.list_option_names for _, spec in listing))
        unknown = sorted(set(options) - accepted)
        if unknown:  # before anything is asked
            raise TypeError(f"unexpected discovery option(s): {', '.join(unknown)}")
        for kind, spec in listing:
            reason = _reason(spec)
            if reason is not None:
                result.problems[kind] = reason
                continue
            names = spec.list_option_names
            try:
                assert spec.list_resources is not None
                mine = {name: value for name, value in options.items() if name in names}
                result.found.extend(await spec.list_resources(**mine))
            except Exception as exc:  # a failing discovery must not hide the others
                logger.debug("listing %s resources failed", kind, exc_info=True)
                result.problems[kind] = f"cannot list {kind} resources: {_describe(exc)}"
        return result

    # -- internals -----------------------------------------------------------------------

    def _target(self, kind: str) -> str:
        with self._lock:
            return self._load_targets().get(kind, "")

    def _parsing_specs(self) -> Iterable[TransportSpec]:
        for kind in self.kinds():
            if kind in self._builtin:
                continue  # the built-in grammar parses these
            with self._lock:
                spec = self._load(kind)
            if spec is not None and spec.interface_types:
                yield spec

    def _load_targets(self) -> dict[str, str]:
        if self._targets is None:
            targets = dict(self._builtin)
            if self._group is not None:
                for point in entry_points(group=self._group):
                    if point.name in targets:
                        logger.warning(
                            "entry point %s = %s ignored: %r is already registered",
                            point.name,
                            point.value,
                            point.name,
                        )
                        continue
                    targets[point.name] = point.value
            self._targets = targets
        return self._targets

    def _load(self, kind: str) -> TransportSpec | None:
        spec = self._specs.get(kind)
        if spec is not None or kind in self._broken:
            return spec
        target = self._load_targets().get(kind)
        if target is None:
            return None
        try:
            spec = _import_spec(target)
        except Exception as exc:  # a plugin that cannot load must not break the others
            self._broken[kind] = f"{target}: {_describe(exc)}"
            logger.debug("cannot load transport %s", target, exc_info=True)
            return None
        if spec.kind != kind:
            self._broken[kind] = f"{target} declares kind {spec.kind!r}, registered as {kind!r}"
            return None
        self._specs[kind] = spec
        return spec


def _import_spec(target: str) -> TransportSpec:
    module_name, _, attribute = target.partition(":")
    value = getattr(importlib.import_module(module_name.strip()), attribute.strip())
    if not isinstance(value, TransportSpec):
        raise TypeError(f"{target} is a {type(value).__name__}, not a TransportSpec")
    return value


def _reason(spec: TransportSpec) -> str | None:
    try:
        return spec.unavailable()
    except Exception as exc:  # a broken check says so instead of raising
        return f"availability check failed: {_describe(exc)}"


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


registry: Final = TransportRegistry()
"""The process-wide registry that :func:`aiotmc.open` uses."""
