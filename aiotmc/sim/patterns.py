"""SCPI header patterns (``"MEASure:VOLTage[:DC]?"``), the :func:`command` decorator and
the table that resolves received headers to handlers."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias, TypeVar

from .arguments import Call, short_form
from .responses import Response

__all__ = ["CommandTable", "Handler", "Pattern", "command", "parse_pattern", "short_form"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class _Node:
    short: str
    long: str
    optional: bool
    suffix: bool

    def match(self, token: str) -> tuple[bool, int | None]:
        if self.suffix:
            name = token.rstrip("0123456789")
            digits = token[len(name) :]
            if name in (self.short, self.long):
                return True, int(digits) if digits else None
            return False, None
        return token in (self.short, self.long), None


@dataclass(frozen=True, slots=True)
class Pattern:
    """A parsed header pattern; build with :func:`parse_pattern`."""

    text: str
    nodes: tuple[_Node, ...]
    query: bool
    common: bool

    def match(self, tokens: Sequence[str]) -> tuple[int | None, ...] | None:
        """Suffix values (one per ``#`` node, None if absent) if ``tokens`` match, else None."""
        return _match(self.nodes, 0, tokens, 0)


def _match(
    nodes: Sequence[_Node], i: int, tokens: Sequence[str], j: int
) -> tuple[int | None, ...] | None:
    if i == len(nodes):
        return () if j == len(tokens) else None
    node = nodes[i]
    if j < len(tokens):
        ok, value = node.match(tokens[j])
        if ok:
            rest = _match(nodes, i + 1, tokens, j + 1)
            if rest is not None:
                return (value, *rest) if node.suffix else rest
    if node.optional:
        rest = _match(nodes, i + 1, tokens, j)
        if rest is not None:
            return (None, *rest) if node.suffix else rest
    return None


@functools.lru_cache(maxsize=1024)
def parse_pattern(text: str) -> Pattern:
    """Parse ``"MEASure:VOLTage[:DC]?"``, ``"[SOURce:]FREQuency"``, ``"OUTPut#[:STATe]"``...

    Raises ``ValueError`` for a malformed pattern.
    """
    query = text.endswith("?")
    body = text[:-1] if query else text
    if body.startswith("*"):
        if not _NAME.fullmatch(body[1:]):
            raise ValueError(f"bad common command pattern {text!r}")
        name = body.upper()
        return Pattern(text, (_Node(name, name, False, False),), query, True)
    nodes: list[_Node] = []
    if body.endswith(":"):
        raise ValueError(f"pattern {text!r} ends with ':'")
    pos = 1 if body.startswith(":") else 0
    while pos < len(body):
        optional = body[pos] == "["
        if optional:
            end = body.find("]", pos)
            if end < 0:
                raise ValueError(f"unbalanced '[' in pattern {text!r}")
            item = body[pos + 1 : end]
            item = item[1:] if item.startswith(":") else item.removesuffix(":")
            pos = end + 1
        else:
            stops = [i for i in (body.find(":", pos), body.find("[", pos)) if i >= 0]
            end = min(stops, default=len(body))
            item, pos = body[pos:end], end
        if pos < len(body) and body[pos] == ":":
            pos += 1
        suffix = item.endswith("#")
        name = item[:-1] if suffix else item
        if not _NAME.fullmatch(name):
            raise ValueError(f"bad node {item!r} in pattern {text!r}")
        nodes.append(_Node(short_form(name).upper(), name.upper(), optional, suffix))
    if not nodes or all(node.optional for node in nodes):
        raise ValueError(f"pattern {text!r} has no mandatory node")
    return Pattern(text, tuple(nodes), query, False)


Handler: TypeAlias = Callable[[Call], Response]
F = TypeVar("F", bound=Callable[..., object])


def command(pattern: str, *, args: int | tuple[int, int | None] = 0) -> Callable[[F], F]:
    """Mark a :class:`~aiotmc.sim.SimDevice` method ``(self, call) -> Response`` as a handler.

    ``args`` is the number of parameters accepted: ``n`` or ``(min, max)`` (``max=None``:
    unbounded). Fewer gives -109 Missing parameter, more -108 Parameter not allowed. The
    decorator may be stacked to register one method under several patterns.
    """
    parse_pattern(pattern)  # fail at import time on a typo

    def mark(fn: F) -> F:
        specs: list[tuple[str, int | tuple[int, int | None]]] = getattr(fn, "__scpi__", [])
        fn.__scpi__ = [*specs, (pattern, args)]  # type: ignore[attr-defined]
        return fn

    return mark


@dataclass(frozen=True, slots=True)
class _Entry:
    pattern: Pattern
    handler: Handler
    min_args: int
    max_args: int | None


@dataclass(frozen=True, slots=True)
class _Resolved:
    entry: _Entry
    suffixes: tuple[int | None, ...]
    tokens: tuple[str, ...]


class CommandTable:
    """Header patterns and their handlers; earlier entries win; lookups are cached."""

    _CACHE_SIZE: Final = 4096

    def __init__(self) -> None:
        self._entries: list[_Entry] = []
        self._cache: dict[tuple[tuple[str, ...], tuple[str, ...], bool], _Resolved | None] = {}

    def add(
        self,
        pattern: str,
        handler: Handler,
        *,
        args: int | tuple[int, int | None] = 0,
        first: bool = False,
    ) -> None:
        """Register ``handler`` for ``pattern``; ``first=True`` overrides earlier entries."""
        lo, hi = (args, args) if isinstance(args, int) else args
        entry = _Entry(parse_pattern(pattern), handler, lo, hi)
        if first:
            self._entries.insert(0, entry)
        else:
            self._entries.append(entry)
        self._cache.clear()

    def patterns(self) -> list[str]:
        """The registered patterns, in match order."""
        return [entry.pattern.text for entry in self._entries]

    def resolve(
        self, path: tuple[str, ...], tokens: tuple[str, ...], query: bool
    ) -> _Resolved | None:
        """Find the entry for ``tokens`` relative to ``path`` (falling back to the root)."""
        key = (path, tokens, query)
        try:
            return self._cache[key]
        except KeyError:
            pass
        found = None
        for prefix in (path, ()) if path else ((),):
            full = prefix + tokens
            for entry in self._entries:
                if entry.pattern.query != query:
                    continue
                suffixes = entry.pattern.match(full)
                if suffixes is not None:
                    found = _Resolved(entry, suffixes, full)
                    break
            if found is not None:
                break
        if len(self._cache) >= self._CACHE_SIZE:
            self._cache.clear()
        self._cache[key] = found
        return found

    def resolve_common(self, name: str, query: bool) -> _Resolved | None:
        """Find a common (``*XXX``) command."""
        return self.resolve((), (name,), query)
