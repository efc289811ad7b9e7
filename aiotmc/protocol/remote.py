"""The remote-instrument protocol carried over NATS between a client and ``aiotmc agent``.

One request per transport operation, on the subject ``aiotmc.rpc.<agent>.<instrument>``;
what to do travels in headers, bytes in the payload. Replies go to the request's reply
subject: one message, or for a block several chunks (each at most the server's payload
limit) that the client writes straight into its buffer.

========================  ===============================================================
Request header            Meaning
========================  ===============================================================
``Aiotmc-Op``             ``describe``, ``send``, ``receive``, ``exchange``, ``block``,
                          ``stb``, ``clear``, ``trigger``, ``lock``, ``unlock``, ``ren``
``Aiotmc-Timeout``        milliseconds left before the caller's deadline (absent: none)
``Aiotmc-Max-Size``       the largest answer the caller takes
``Aiotmc-End``            ``0`` when a ``send`` is not the end of its message
``Aiotmc-Session``        the client link's id (whose lock a ``lock`` takes)
``Aiotmc-Arg``            ``ren``: the RenMode value; ``lock``: seconds to wait;
                          ``trigger_at``: the Unix time to trigger at
========================  ===============================================================

A reply carries ``Aiotmc-Status: ok`` or ``error``; an error names its class in
``Aiotmc-Error`` (one of aiotmc's exception tree, anything else becomes
:class:`RemoteProtocolError`) with the message as payload. Block chunks carry
``Aiotmc-Chunk: <index>/<count>`` and ``Aiotmc-Size``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

from .. import _exceptions
from .._exceptions import AiotmcError, RemoteProtocolError, TransportError

__all__ = [
    "OPS",
    "error_from_reply",
    "error_headers",
    "rpc_subject",
    "srq_subject",
    "timeout_header",
]

OPS: Final = frozenset(
    {
        "describe",
        "send",
        "receive",
        "exchange",
        "block",
        "stb",
        "clear",
        "trigger",
        "lock",
        "unlock",
        "ren",
        "trigger_at",
    }
)

OP: Final = "Aiotmc-Op"
TIMEOUT: Final = "Aiotmc-Timeout"
MAX_SIZE: Final = "Aiotmc-Max-Size"
END: Final = "Aiotmc-End"
SESSION: Final = "Aiotmc-Session"
ARG: Final = "Aiotmc-Arg"
STATUS: Final = "Aiotmc-Status"
ERROR: Final = "Aiotmc-Error"
CHUNK: Final = "Aiotmc-Chunk"
SIZE: Final = "Aiotmc-Size"

_PREFIX: Final = "aiotmc"
#: How many chunks one block may take at most (the size is bounded by max_size anyway).
MAX_CHUNKS: Final = 1 << 20


def rpc_subject(agent: str, instrument: str) -> str:
    """Where requests for ``instrument`` on ``agent`` go."""
    return f"{_PREFIX}.rpc.{agent}.{instrument}"


def srq_subject(agent: str, instrument: str) -> str:
    """Where the agent publishes ``instrument``'s service requests (status byte payload)."""
    return f"{_PREFIX}.srq.{agent}.{instrument}"


def presence_subject(agent: str) -> str:
    """Where an agent publishes its heartbeat (JSON: its instruments)."""
    return f"{_PREFIX}.presence.{agent}"


DISCOVER_SUBJECT: Final = f"{_PREFIX}.discover"


def timeout_header(deadline: float, now: float) -> str | None:
    """The ``Aiotmc-Timeout`` value for ``deadline``: whole milliseconds left, at least 1."""
    if deadline == math.inf:
        return None
    return str(max(1, math.ceil((deadline - now) * 1000)))


def parse_timeout(value: str | None) -> float | None:
    """Seconds from an ``Aiotmc-Timeout`` header (None: none; junk raises ValueError)."""
    if value is None:
        return None
    ms = int(value)
    if ms < 1 or ms > 10_000_000:
        raise ValueError(f"timeout {value!r} ms out of range")
    return ms / 1000


def error_headers(exc: BaseException) -> dict[str, str]:
    """The reply headers that carry ``exc`` to the client."""
    return {STATUS: "error", ERROR: type(exc).__name__}


def error_from_reply(headers: Mapping[str, str], payload: bytes, *, resource: str) -> AiotmcError:
    """The exception an error reply describes (only classes of aiotmc's tree)."""
    name = headers.get(ERROR, "")
    message = payload.decode("utf-8", "replace") or name
    cls = getattr(_exceptions, name, None)
    if not (isinstance(cls, type) and issubclass(cls, AiotmcError)) or name in {
        "InstrumentError",
        "ConfigError",
    }:
        return RemoteProtocolError(f"{resource}: remote error {name or '?'}: {message}")
    if issubclass(cls, TransportError):
        return cls(message, resource=resource)
    return cls(message)
