"""Typed reading of one config table, with errors that name the field (:class:`Fields`).

Every part of the gateway validates its own section up front; this helper makes the
errors uniform: ``ConfigError(message, key=("sinks", 1, "url"))``. The loader then adds
the file and line (see :mod:`aiotmc.gateway.config`)::

    fields = Fields(section, key)
    url = fields.string("url")
    batch = fields.integer("batch", default=500, minimum=1)
    fields.done()          # any other key in the table is an error naming the known ones
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from .._exceptions import ConfigError

__all__ = ["NAME_PATTERN", "Fields", "Key", "check_name", "duration"]

Key = tuple[str | int, ...]

#: Names that end up in MQTT topics and series names: no '/', '+', '#' or spaces.
NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")

_DURATION: Final = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(ms|s|m|h|d)?\s*")
_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_MISSING: Final[Any] = object()


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return "an array"
    return f"a {type(value).__name__}"


def check_name(value: str, key: Key, what: str = "name") -> str:
    """``value`` if it is usable in a topic (``NAME_PATTERN``), else ``ConfigError``."""
    if not NAME_PATTERN.fullmatch(value):
        raise ConfigError(
            f"{what} {value!r} must be 1-64 letters, digits, '_', '.' or '-' "
            "(it becomes part of MQTT topics and series names)",
            key=key,
        )
    return value


def duration(value: object, key: Key) -> float:
    """Seconds from a number or a string such as ``"250ms"``, ``"5s"``, ``"2m"``, ``"1h"``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value)):
        seconds = float(match[1]) * _UNITS[match[2]]
    else:
        raise ConfigError(
            f"expected a duration (seconds, or a string like '500ms', '5s', '2m'), got {value!r}",
            key=key,
        )
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(f"a duration must be finite and not negative, got {value!r}", key=key)
    return seconds


class Fields:
    """Read the fields of one table by type; :meth:`done` rejects the fields not read."""

    def __init__(self, table: object, key: Key = ()) -> None:
        if not isinstance(table, Mapping):
            raise ConfigError(f"expected a table, got {_kind(table)}", key=key)
        self.table: Mapping[str, Any] = table
        self.key = key
        self._read: set[str] = set()

    def at(self, name: str | int) -> Key:
        """The key path of field ``name``."""
        return (*self.key, name)

    def _get(self, name: str, default: Any) -> Any:
        self._read.add(name)
        if name in self.table:
            return self.table[name]
        if default is _MISSING:
            raise ConfigError(f"missing required field '{name}'", key=self.at(name))
        return default

    def has(self, name: str) -> bool:
        return name in self.table

    def raw(self, name: str, default: Any = _MISSING) -> Any:
        """The field as it is (marked read)."""
        return self._get(name, default)

    def string(self, name: str, default: Any = _MISSING, *, choices: Sequence[str] = ()) -> Any:
        value = self._get(name, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, str):
            raise ConfigError(f"expected a string, got {_kind(value)}", key=self.at(name))
        if choices and value not in choices:
            raise ConfigError(
                f"expected one of {', '.join(repr(c) for c in choices)}, got {value!r}",
                key=self.at(name),
            )
        return value

    def name(self, name: str = "name", default: Any = _MISSING) -> Any:
        value = self.string(name, default)
        if value is default and default is not _MISSING:
            return value
        return check_name(value, self.at(name), name)

    def boolean(self, name: str, default: Any = _MISSING) -> Any:
        value = self._get(name, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, bool):
            raise ConfigError(f"expected true or false, got {_kind(value)}", key=self.at(name))
        return value

    def number(
        self,
        name: str,
        default: Any = _MISSING,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
        positive: bool = False,
    ) -> Any:
        value = self._get(name, default)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"expected a number, got {_kind(value)}", key=self.at(name))
        if not math.isfinite(value):
            raise ConfigError(f"expected a finite number, got {value}", key=self.at(name))
        if positive and not value > 0:
            raise ConfigError(f"must be greater than 0, got {value}", key=self.at(name))
        if minimum is not None and value < minimum:
            raise ConfigError(f"must be at least {minimum}, got {value}", key=self.at(name))
        if maximum is not None and value > maximum:
            raise ConfigError(f"must be at most {maximum}, got {value}", key=self.at(name))
        return float(value)

    def integer(
        self,
        name: str,
        default: Any = _MISSING,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> Any:
        value = self._get(name, default)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"expected a whole number, got {_kind(value)}", key=self.at(name))
        if minimum is not None and value < minimum:
            raise ConfigError(f"must be at least {minimum}, got {value}", key=self.at(name))
        if maximum is not None and value > maximum:
            raise ConfigError(f"must be at most {maximum}, got {value}", key=self.at(name))
        return value

    def table_of(self, name: str, default: Any = _MISSING) -> Any:
        """A sub-table as a plain mapping (its fields unchecked)."""
        value = self._get(name, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"expected a table, got {_kind(value)}", key=self.at(name))
        return value

    def array(self, name: str, default: Any = _MISSING) -> Any:
        value = self._get(name, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, list | tuple):
            raise ConfigError(f"expected an array, got {_kind(value)}", key=self.at(name))
        return list(value)

    def strings(self, name: str, default: Any = _MISSING) -> Any:
        value = self.array(name, default)
        if value is default and default is not _MISSING:
            return value
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise ConfigError(
                    f"expected a string, got {_kind(item)}", key=(*self.at(name), index)
                )
        return tuple(value)

    def duration(self, name: str, default: Any = _MISSING) -> Any:
        """Seconds from a number or a string with a unit (``"500ms"``, ``"5s"``, ``"2m"``)."""
        value = self._get(name, default)
        if value is default and default is not _MISSING:
            return value
        return duration(value, self.at(name))

    def string_table(self, name: str) -> dict[str, str]:
        """A table of string values (``labels = {team = "lab"}``), empty when absent."""
        value = self._get(name, {})
        if not isinstance(value, Mapping):
            raise ConfigError(f"expected a table, got {_kind(value)}", key=self.at(name))
        for item, text in value.items():
            if not isinstance(text, str):
                raise ConfigError(
                    f"expected a string, got {_kind(text)}", key=(*self.at(name), item)
                )
        return dict(value)

    def done(self) -> None:
        """Raise ``ConfigError`` for the first field that was never read (a typo)."""
        known = sorted(self._read)
        for name in self.table:
            if name not in self._read:
                hint = f" (known fields: {', '.join(known)})" if known else ""
                raise ConfigError(f"unknown field '{name}'{hint}", key=self.at(name))
