"""What a command line's SCPI program asks for: which of its message units are queries.

``write`` refuses a program with a query (its answer would be paired with the ``*OPC?``
that ``write`` appends), ``query`` one without (it would wait the whole timeout for an
answer that never comes). Strings (``"..."``/``'...'``) may contain ``;`` and ``?``.
"""

from __future__ import annotations

__all__ = ["query_units", "units"]


def units(program: str) -> list[str]:
    """The message units of ``program``, split on ``;`` outside quoted strings."""
    out: list[str] = []
    start = 0
    quote = ""
    for index, char in enumerate(program):
        if quote:
            if char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char == ";":
            out.append(program[start:index].strip())
            start = index + 1
    out.append(program[start:].strip())
    return [unit for unit in out if unit]


def query_units(program: str) -> list[str]:
    """The units of ``program`` whose header ends in ``?`` (``*IDN?``, ``MEAS:VOLT? 10``)."""
    return [unit for unit in units(program) if unit.split(None, 1)[0].endswith("?")]
