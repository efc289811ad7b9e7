"""Tab completion for ``aiotmc shell``: its ``:`` commands and the SCPI headers seen.

Headers are learnt from every program unit sent in the session and from the history file,
so ``:MEAS:VOLT?`` typed once completes from ``:ME``. Matching ignores case (SCPI does).
Used through readline (see docs/cli.md for why readline and not prompt_toolkit).
"""

from __future__ import annotations

from collections.abc import Iterable

from ._program import units

__all__ = ["ShellCompleter", "headers"]

#: readline splits words only here: ':', '*' and '?' belong to SCPI headers.
DELIMITERS = " \t;"
_MAX_HEADERS = 10_000  # bound on what is learnt (a long history of distinct headers)


def headers(program: str) -> list[str]:
    """The headers of ``program``'s units (``"*RST;:MEAS:VOLT? 10"`` -> both headers)."""
    return [unit.split(None, 1)[0] for unit in units(program)]


class ShellCompleter:
    """A readline completer (``complete(text, state)``) over commands and learnt headers."""

    def __init__(self, commands: Iterable[str]) -> None:
        self._commands = sorted(set(commands))
        self._headers: dict[str, None] = {}  # ordered set, oldest first
        self._matches: list[str] = []

    def learn(self, line: str) -> None:
        """Remember the SCPI headers of ``line`` (a line sent to the instrument)."""
        for header in headers(line):
            if header not in self._headers and len(self._headers) < _MAX_HEADERS:
                self._headers[header] = None

    def candidates(self, text: str) -> list[str]:
        """Every completion of ``text``: shell commands first, then headers, sorted."""
        folded = text.casefold()
        found = [c for c in self._commands if c.startswith(folded)] if text.startswith(":") else []
        found += sorted(
            h for h in self._headers if h.casefold().startswith(folded) and h not in found
        )
        return found

    def complete(self, text: str, state: int) -> str | None:
        """readline's protocol: the ``state``-th completion of ``text``, None when done."""
        if state == 0:
            self._matches = self.candidates(text)
        return self._matches[state] if state < len(self._matches) else None
