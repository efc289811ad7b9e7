"""SCPI command tables for simulated instruments (stdlib only, no I/O): one import for all.

The pieces live in modules with one job each; this module gathers their public names
(``from aiotmc.sim.commands import command, Call, ScpiError`` keeps working):

* :mod:`~aiotmc.sim.patterns`: :func:`command` marks a :class:`~aiotmc.sim.SimDevice`
  method as the handler of a SCPI header pattern such as ``"MEASure:VOLTage[:DC]?"``:
  upper-case letters are the short form, the whole word the long form (matched
  case-insensitively), ``[...]`` marks an optional node and a trailing ``#`` a node that
  takes a numeric suffix (``OUTPut#`` accepts ``OUTP``, ``OUTP2``, ``OUTPUT3``;
  :meth:`Call.suffix` reads it).
* :mod:`~aiotmc.sim.program`: :func:`parse_program` splits received bytes into program
  messages and message units, skipping over IEEE 488.2 blocks (``#<n><len>`` may contain
  ``0x0A``, ``;`` and ``,``) and quoted strings.
* :mod:`~aiotmc.sim.arguments`: the :class:`Call` a handler receives and its parameter
  parsers; :mod:`~aiotmc.sim.responses`: what a handler returns (see :data:`Response`);
  :mod:`~aiotmc.sim.errors`: :class:`ScpiError`, which the device records in its error
  queue, and the standard codes.
"""

from __future__ import annotations

from .._types import BytesLike
from .arguments import Call
from .errors import (
    COMMAND_ERROR,
    DATA_OUT_OF_RANGE,
    DATA_STALE,
    DATA_TYPE_ERROR,
    DEVICE_ERROR,
    ERROR_MESSAGES,
    EXECUTION_ERROR,
    HEADER_SUFFIX_OUT_OF_RANGE,
    ILLEGAL_PARAMETER_VALUE,
    INIT_IGNORED,
    INVALID_BLOCK_DATA,
    INVALID_CHARACTER_DATA,
    INVALID_STRING_DATA,
    INVALID_SUFFIX,
    MISSING_PARAMETER,
    NO_ERROR,
    PARAMETER_NOT_ALLOWED,
    PROGRAM_MNEMONIC_TOO_LONG,
    QUERY_INTERRUPTED,
    QUERY_UNTERMINATED,
    QUEUE_OVERFLOW,
    SETTINGS_CONFLICT,
    SYNTAX_ERROR,
    TOO_MUCH_DATA,
    TRIGGER_DEADLOCK,
    UNDEFINED_HEADER,
    ScpiError,
    escape_text,
)
from .patterns import CommandTable, Handler, Pattern, command, parse_pattern, short_form
from .program import MAX_HEADER_LENGTH, ProgramUnit, find_open_block, parse_program
from .responses import Block, Later, Raw, Response, format_nr3, render

__all__ = [
    "COMMAND_ERROR",
    "DATA_OUT_OF_RANGE",
    "DATA_STALE",
    "DATA_TYPE_ERROR",
    "DEVICE_ERROR",
    "ERROR_MESSAGES",
    "EXECUTION_ERROR",
    "HEADER_SUFFIX_OUT_OF_RANGE",
    "ILLEGAL_PARAMETER_VALUE",
    "INIT_IGNORED",
    "INVALID_BLOCK_DATA",
    "INVALID_CHARACTER_DATA",
    "INVALID_STRING_DATA",
    "INVALID_SUFFIX",
    "MAX_HEADER_LENGTH",
    "MISSING_PARAMETER",
    "NO_ERROR",
    "PARAMETER_NOT_ALLOWED",
    "PROGRAM_MNEMONIC_TOO_LONG",
    "QUERY_INTERRUPTED",
    "QUERY_UNTERMINATED",
    "QUEUE_OVERFLOW",
    "SETTINGS_CONFLICT",
    "SYNTAX_ERROR",
    "TOO_MUCH_DATA",
    "TRIGGER_DEADLOCK",
    "UNDEFINED_HEADER",
    "Block",
    "BytesLike",
    "Call",
    "CommandTable",
    "Handler",
    "Later",
    "Pattern",
    "ProgramUnit",
    "Raw",
    "Response",
    "ScpiError",
    "command",
    "escape_text",
    "find_open_block",
    "format_nr3",
    "parse_pattern",
    "parse_program",
    "render",
    "short_form",
]
