"""How a transport declares itself to the registry (see :mod:`aiotmc.registry`).

This sits at the seam, beside :mod:`.base`: transports import it to describe themselves,
the registry imports it to find them, and neither imports the other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

import anyio

from ..resources import ResourceName
from .base import MessageTransport

if TYPE_CHECKING:
    from ..reconnect import Reconnect

__all__ = [
    "FoundResource",
    "LinkSettings",
    "NoOptions",
    "Opener",
    "TransportSpec",
    "closing_link",
]

L = TypeVar("L", bound=MessageTransport)


@asynccontextmanager
async def closing_link(link: L) -> AsyncIterator[L]:
    """An opener's body for a link that is open already: yield it, and close it when the
    block ends, also when the block is cancelled (``aclose`` runs shielded)."""
    try:
        yield link
    finally:
        with anyio.CancelScope(shield=True):
            await link.aclose()


class NoOptions(TypedDict):
    """The options of a transport that takes none besides the common ones."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkSettings:
    """What :func:`aiotmc.open` hands every transport besides its own options."""

    connect_timeout: float | None = 10.0  #: seconds to establish the link (None: no bound)
    read_termination: str = "\n"  #: framing terminator on byte-stream buses
    encoding: str = "ascii"  #: text encoding (the terminator is encoded with it)
    reconnect: Reconnect | None = None  #: automatic reconnection policy, or None


@dataclass(frozen=True, slots=True)
class FoundResource:
    """One resource a transport found: its canonical name and what it is."""

    resource: str
    description: str = ""


Opener = Callable[
    [ResourceName, LinkSettings, Mapping[str, Any]],
    AbstractAsyncContextManager[MessageTransport],
]
"""``open(resource, settings, options)``: an async context manager yielding the link."""


def _always_available() -> str | None:
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class TransportSpec:
    """Everything aiotmc needs to know about one transport, declared in one place.

    Args:
        kind: the resource kind it serves (``ResourceName.kind``, e.g. ``"usb"``).
        summary: a few words for ``aiotmc info`` ("raw SCPI over TCP").
        example: an example resource name.
        open: the opener (see :data:`Opener`).
        options: a ``TypedDict`` of the transport's own keyword options; ``aiotmc.open``
            rejects any other name with a ``TypeError`` listing the accepted ones.
        list_resources: finds attached resources of this kind (None: no discovery).
        list_options: a ``TypedDict`` of keyword options ``list_resources`` takes (e.g.
            the hosts to ask); :func:`aiotmc.list_resources` passes each spec the ones it
            declares.
        unavailable: the reason the transport cannot work here (missing extra, missing
            system library), or None when it can. Called by ``info``/``list`` only.
        interface_types: VISA interface keywords (``"ASRL"``) this transport parses
            itself with ``parse``; for kinds the built-in grammar does not know.
        parse: parses a resource name of those interface types.
    """

    kind: str
    summary: str
    example: str
    open: Opener
    options: type = NoOptions
    list_resources: Callable[..., Awaitable[Sequence[FoundResource]]] | None = None
    list_options: type = NoOptions
    unavailable: Callable[[], str | None] = _always_available
    interface_types: tuple[str, ...] = ()
    parse: Callable[[str], ResourceName] | None = None

    @property
    def list_option_names(self) -> frozenset[str]:
        """The keyword options ``list_resources`` accepts."""
        return frozenset(getattr(self.list_options, "__annotations__", {}))

    @property
    def option_names(self) -> frozenset[str]:
        """The keyword options this transport accepts."""
        return frozenset(getattr(self.options, "__annotations__", {}))

    def check_options(self, resource: ResourceName, options: Mapping[str, Any]) -> None:
        """Raise ``TypeError`` naming the accepted options if ``options`` has others."""
        unknown = sorted(set(options) - self.option_names)
        if unknown:
            accepted = ", ".join(sorted(self.option_names))
            raise TypeError(
                f"{resource}: unexpected option(s) {', '.join(unknown)} for a {self.kind} "
                f"resource" + (f" (accepted: {accepted})" if accepted else " (it takes none)")
            )
