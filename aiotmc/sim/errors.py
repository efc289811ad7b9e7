"""SCPI / IEEE 488.2 error codes, their standard texts, and :class:`ScpiError`."""

from __future__ import annotations

from typing import Final

__all__ = ["ERROR_MESSAGES", "ScpiError", "escape_text"]

NO_ERROR: Final = 0
COMMAND_ERROR: Final = -100
SYNTAX_ERROR: Final = -102
DATA_TYPE_ERROR: Final = -104
PARAMETER_NOT_ALLOWED: Final = -108
MISSING_PARAMETER: Final = -109
PROGRAM_MNEMONIC_TOO_LONG: Final = -112
UNDEFINED_HEADER: Final = -113
HEADER_SUFFIX_OUT_OF_RANGE: Final = -114
INVALID_SUFFIX: Final = -131
INVALID_CHARACTER_DATA: Final = -141
INVALID_STRING_DATA: Final = -151
INVALID_BLOCK_DATA: Final = -161
EXECUTION_ERROR: Final = -200
INIT_IGNORED: Final = -213
TRIGGER_DEADLOCK: Final = -214
SETTINGS_CONFLICT: Final = -221
DATA_OUT_OF_RANGE: Final = -222
TOO_MUCH_DATA: Final = -223
ILLEGAL_PARAMETER_VALUE: Final = -224
DATA_STALE: Final = -230
DEVICE_ERROR: Final = -300
QUEUE_OVERFLOW: Final = -350
QUERY_INTERRUPTED: Final = -410
QUERY_UNTERMINATED: Final = -420

ERROR_MESSAGES: Final[dict[int, str]] = {
    NO_ERROR: "No error",
    COMMAND_ERROR: "Command error",
    SYNTAX_ERROR: "Syntax error",
    DATA_TYPE_ERROR: "Data type error",
    PARAMETER_NOT_ALLOWED: "Parameter not allowed",
    MISSING_PARAMETER: "Missing parameter",
    PROGRAM_MNEMONIC_TOO_LONG: "Program mnemonic too long",
    UNDEFINED_HEADER: "Undefined header",
    HEADER_SUFFIX_OUT_OF_RANGE: "Header suffix out of range",
    INVALID_SUFFIX: "Invalid suffix",
    INVALID_CHARACTER_DATA: "Invalid character data",
    INVALID_STRING_DATA: "Invalid string data",
    INVALID_BLOCK_DATA: "Invalid block data",
    EXECUTION_ERROR: "Execution error",
    INIT_IGNORED: "Init ignored",
    TRIGGER_DEADLOCK: "Trigger deadlock",
    SETTINGS_CONFLICT: "Settings conflict",
    DATA_OUT_OF_RANGE: "Data out of range",
    TOO_MUCH_DATA: "Too much data",
    ILLEGAL_PARAMETER_VALUE: "Illegal parameter value",
    DATA_STALE: "Data corrupt or stale",
    DEVICE_ERROR: "Device-specific error",
    QUEUE_OVERFLOW: "Queue overflow",
    QUERY_INTERRUPTED: "Query INTERRUPTED",
    QUERY_UNTERMINATED: "Query UNTERMINATED",
}
"""Standard SCPI / IEEE 488.2 error texts by code."""


_PRINTABLE: Final = frozenset(range(0x20, 0x7F))
_MAX_DETAIL: Final = 200


def escape_text(text: str, limit: int = _MAX_DETAIL) -> str:
    """``text`` as printable ASCII: other characters become ``\\xNN`` (``\\uNNNN``...).

    For echoing what a client sent (a header, a parameter) into an error message, which
    clients read back with ``SYSTem:ERRor?`` and decode as ASCII. At most ``limit``
    characters of ``text`` are kept (``...`` marks the cut).
    """
    cut = text[:limit]
    if cut.isascii() and cut.isprintable():
        escaped = cut
    else:
        escaped = "".join(c if ord(c) in _PRINTABLE else ascii(c)[1:-1] for c in cut)
    return escaped + ("..." if len(text) > limit else "")


class ScpiError(Exception):
    """A SCPI error a handler reports; the device queues ``(code, message)``.

    ``detail`` is escaped to printable ASCII (see :func:`escape_text`): it often echoes
    what the client sent.
    """

    def __init__(self, code: int, detail: str = "") -> None:
        self.code = code
        text = ERROR_MESSAGES.get(code, "Error")
        detail = escape_text(detail)
        self.message = f"{text}; {detail}" if detail else text
        super().__init__(f"{code},{self.message!r}")
