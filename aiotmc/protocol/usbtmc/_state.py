"""The host-side session state table: every state change of a connection is listed here.

:class:`~aiotmc.protocol.usbtmc.UsbtmcConnection` moves only through :data:`TRANSITIONS`;
an event a state does not list is a :class:`~aiotmc.LocalProtocolError` (the caller
broke the rules). A receive error moves the connection to the sticky ``ERROR`` state.
"""

from __future__ import annotations

import enum
from typing import Final

from ..._exceptions import LocalProtocolError

__all__ = ["TRANSITIONS", "Ev", "UsbtmcState", "next_state"]


class UsbtmcState(enum.Enum):
    """Host-side session state."""

    IDLE = "IDLE"  #: nothing in progress
    SENDING = "SENDING"  #: a message was started with end=False; more of it must follow
    REQUESTED = "REQUESTED"  #: a REQUEST_DEV_DEP_MSG_IN was sent; a transfer header is due
    RECEIVING = "RECEIVING"  #: inside a DEV_DEP_MSG_IN transfer
    PARTIAL = "PARTIAL"  #: a transfer ended without EOM; request again for the rest
    ABORTING = "ABORTING"  #: an abort or clear sequence is running; ends with reset()
    ERROR = "ERROR"  #: the device broke the protocol; sticky until reset()


class Ev(enum.Enum):
    """What the connection does (the input of the state table)."""

    SEND_PART = enum.auto()
    SEND_END = enum.auto()
    TRIGGER = enum.auto()
    REQUEST = enum.auto()
    HEADER = enum.auto()
    TRANSFER_END = enum.auto()
    MESSAGE_END = enum.auto()
    ABORT = enum.auto()
    RESET = enum.auto()


_S = UsbtmcState
TRANSITIONS: Final[dict[UsbtmcState, dict[Ev, UsbtmcState]]] = {
    _S.IDLE: {
        Ev.SEND_PART: _S.SENDING,
        Ev.SEND_END: _S.IDLE,
        Ev.TRIGGER: _S.IDLE,
        Ev.REQUEST: _S.REQUESTED,
        Ev.ABORT: _S.ABORTING,
        Ev.RESET: _S.IDLE,
    },
    _S.SENDING: {
        Ev.SEND_PART: _S.SENDING,
        Ev.SEND_END: _S.IDLE,
        Ev.ABORT: _S.ABORTING,
        Ev.RESET: _S.IDLE,
    },
    _S.REQUESTED: {Ev.HEADER: _S.RECEIVING, Ev.ABORT: _S.ABORTING, Ev.RESET: _S.IDLE},
    _S.RECEIVING: {
        Ev.TRANSFER_END: _S.PARTIAL,
        Ev.MESSAGE_END: _S.IDLE,
        Ev.ABORT: _S.ABORTING,
        Ev.RESET: _S.IDLE,
    },
    # A new message may follow an unfinished response: the device discards the rest.
    _S.PARTIAL: {
        Ev.REQUEST: _S.REQUESTED,
        Ev.SEND_PART: _S.SENDING,
        Ev.SEND_END: _S.IDLE,
        Ev.TRIGGER: _S.IDLE,
        Ev.ABORT: _S.ABORTING,
        Ev.RESET: _S.IDLE,
    },
    _S.ABORTING: {Ev.ABORT: _S.ABORTING, Ev.RESET: _S.IDLE},
    _S.ERROR: {Ev.ABORT: _S.ABORTING, Ev.RESET: _S.IDLE},
}


def next_state(state: UsbtmcState, event: Ev) -> UsbtmcState:
    """The state after ``event``; LocalProtocolError if ``state`` does not allow it."""
    new = TRANSITIONS[state].get(event)
    if new is None:
        raise LocalProtocolError(f"cannot {event.name.lower()} in state {state.name}")
    return new
