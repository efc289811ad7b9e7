"""Line numbers of a TOML document's tables and keys, by key path (for error messages).

``tomllib`` (and tomlkit) give values without positions, so this scans the text once:
table headers (``[a.b]``, ``[[a.b]]``, counting array elements) and ``key = value`` lines,
with strings, comments and multi-line arrays and inline tables skipped. It runs only on
documents that already parsed, so it need not diagnose anything. A path not recorded
(a key inside an inline table) maps to the line of its nearest recorded parent.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["LineMap"]

Key = tuple[str | int, ...]

_BARE: Final = re.compile(r"[A-Za-z0-9_-]+")


class LineMap:
    """``find(key)``: the 1-based line where ``key`` (or its nearest parent) is written."""

    def __init__(self, text: str) -> None:
        self._lines: dict[Key, int] = {}
        self._aot_count: dict[Key, int] = {}
        self._scan(text)

    def find(self, key: Key) -> int | None:
        for end in range(len(key), 0, -1):
            line = self._lines.get(key[:end])
            if line is not None:
                return line
        return None

    # -- scanning ---------------------------------------------------------------------------

    def _resolve(self, dotted: list[str]) -> Key:
        """A header's dotted key with the current index of every array of tables in it."""
        path: list[str | int] = []
        for part in dotted:
            path.append(part)
            count = self._aot_count.get(tuple(path))
            if count is not None:
                path.append(count - 1)
        return tuple(path)

    def _scan(self, text: str) -> None:
        table: Key = ()
        pos, line, n = 0, 1, len(text)
        while pos < n:
            # at the start of a logical line: skip blanks
            while pos < n and text[pos] in " \t":
                pos += 1
            if pos >= n:
                break
            char = text[pos]
            if char == "\n":
                pos, line = pos + 1, line + 1
                continue
            if char == "#":
                pos = _skip_comment(text, pos)
                continue
            if char == "[":
                is_aot = text.startswith("[[", pos)
                pos += 2 if is_aot else 1
                dotted, pos = _read_key(text, pos)
                pos = text.find("]", pos)
                pos = n if pos < 0 else pos + (2 if is_aot else 1)
                if is_aot:
                    parent = self._resolve(dotted[:-1])
                    own = (*parent, dotted[-1])
                    self._aot_count[own] = self._aot_count.get(own, 0) + 1
                table = self._resolve(dotted)
                self._lines.setdefault(table, line)
                if is_aot:
                    self._lines.setdefault(table[:-1], line)
                continue
            dotted, pos = _read_key(text, pos)
            if not dotted:  # not a key: skip the rest of the line
                pos = _line_end(text, pos)
                continue
            self._lines.setdefault((*table, *dotted), line)
            while pos < n and text[pos] in " \t=":
                pos += 1
            pos, line = _skip_value(text, pos, line)


def _line_end(text: str, pos: int) -> int:
    end = text.find("\n", pos)
    return len(text) if end < 0 else end


def _skip_comment(text: str, pos: int) -> int:
    return _line_end(text, pos)


def _read_key(text: str, pos: int) -> tuple[list[str], int]:
    """A dotted key at ``pos`` (bare or quoted parts); returns its parts and the end."""
    parts: list[str] = []
    n = len(text)
    while pos < n:
        while pos < n and text[pos] in " \t":
            pos += 1
        if pos < n and text[pos] in "\"'":
            quote = text[pos]
            end = pos + 1
            while end < n and text[end] != quote and text[end] != "\n":
                end += 2 if quote == '"' and text[end] == "\\" else 1
            raw = text[pos + 1 : end]
            parts.append(raw.encode().decode("unicode_escape") if quote == '"' else raw)
            pos = end + 1
        else:
            match = _BARE.match(text, pos)
            if not match:
                break
            parts.append(match.group())
            pos = match.end()
        while pos < n and text[pos] in " \t":
            pos += 1
        if pos < n and text[pos] == ".":
            pos += 1
            continue
        break
    return parts, pos


def _skip_value(text: str, pos: int, line: int) -> tuple[int, int]:
    """Skip one value (strings, nested arrays and inline tables); returns (pos, line)."""
    depth = 0
    n = len(text)
    while pos < n:
        char = text[pos]
        if char == "\n":
            line += 1
            if depth == 0:
                return pos + 1, line
            pos += 1
        elif char == "#":
            pos = _skip_comment(text, pos)
        elif char in "[{":
            depth += 1
            pos += 1
        elif char in "]}":
            depth -= 1
            pos += 1
        elif char in "\"'":
            triple = text.startswith(char * 3, pos)
            if triple:
                end = text.find(char * 3, pos + 3)
                while end >= 0 and char == '"' and _escaped(text, end):
                    end = text.find(char * 3, end + 1)
                end = n if end < 0 else end + 3
                # a closing run may hold up to two more quotes: """a""""
                while end < n and text[end] == char:
                    end += 1
            else:
                end = pos + 1
                while end < n and text[end] != char and text[end] != "\n":
                    end += 2 if char == '"' and text[end] == "\\" else 1
                end += 1
            line += text.count("\n", pos, min(end, n))
            pos = end
        else:
            pos += 1
    return pos, line


def _escaped(text: str, pos: int) -> bool:
    """Whether ``text[pos]`` is preceded by an odd number of backslashes."""
    count = 0
    while pos > 0 and text[pos - 1] == "\\":
        count += 1
        pos -= 1
    return count % 2 == 1
