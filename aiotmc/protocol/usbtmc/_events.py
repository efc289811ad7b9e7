"""What :meth:`~aiotmc.protocol.usbtmc.UsbtmcConnection.next_event` returns for a response."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, TypeAlias

__all__ = ["END_OF_MESSAGE", "NEED_REQUEST", "EndOfMessage", "Event", "NeedRequest", "ResponseData"]


@dataclass(frozen=True, slots=True)
class ResponseData:
    """Payload bytes of the response message, in order (a view into the received read)."""

    data: memoryview


@dataclass(frozen=True, slots=True)
class NeedRequest:
    """A transfer ended without EOM: call ``request_response`` for the rest.

    ``term_char`` is set when the transfer ended on the requested TermChar.
    """

    term_char: bool = False


@dataclass(frozen=True, slots=True)
class EndOfMessage:
    """The response message is complete (``term_char``: the last transfer ended on it)."""

    term_char: bool = False


Event: TypeAlias = ResponseData | NeedRequest | EndOfMessage

END_OF_MESSAGE: Final = EndOfMessage()
"""The shared EndOfMessage without TermChar (no allocation per message)."""
NEED_REQUEST: Final = NeedRequest()
"""The shared NeedRequest without TermChar."""
