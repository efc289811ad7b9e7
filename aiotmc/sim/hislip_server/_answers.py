"""The answer pump: every answer the device produces goes to the client as Data/DataEnd,
tagged with the MessageID of the message that asked and split to the client's limit."""

from __future__ import annotations

import math
from typing import Final

import anyio
from anyio.lowlevel import checkpoint

from ..._exceptions import TransportError
from ..._types import BytesLike
from ...protocol import hislip as hs
from ...protocol.hislip import MessageType as T
from ._session import ServerState, Session

_DATA_END: Final = int(T.DataEnd)


async def pump(server: ServerState, session: Session) -> None:
    """Send each answer the device produces, tagged, split to the client's limit."""
    try:
        await _pump_answers(server, session)
    except (TransportError, OSError):
        session.cancel()


async def _pump_answers(server: ServerState, session: Session) -> None:
    device = server.device
    while True:
        kick = session.kick = anyio.Event()
        if session.queue and not device.busy:  # overlapped: the next message, in turn
            message_id, program = session.queue.popleft()
            session.response_id = message_id
            if program is None:
                device.trigger()
            else:
                device.write(program)
            await checkpoint()  # a long pipeline must not starve the other tasks
            continue
        # nothing goes out before this session's first message: output left by
        # another session is not its answer (and must not precede StartTLS)
        parts = None if session.last_id == hs.NO_MESSAGE_ID else device.read_parts()
        if parts is not None:
            session.unread = True
            await send_response(server, session, parts, session.response_id)
            continue
        deadline = device.next_deadline()
        delay = math.inf if deadline is None else max(0.0, deadline - device.clock())
        with anyio.move_on_after(delay):
            await kick.wait()


async def send_response(
    server: ServerState, session: Session, parts: list[BytesLike], message_id: int
) -> None:
    """Send one answer as DataEnd (or Data ... DataEnd), all tagged ``message_id``."""
    session.unreported += 1
    limit = max(1, min(session.client_max, server.max_message_size) - hs.HEADER_SIZE)
    size = 0
    for part in parts:
        size += part.nbytes if isinstance(part, memoryview) else len(part)
    if 0 < size <= limit:  # the usual case: one DataEnd
        header = hs.HEADER.pack(hs.PROLOGUE, _DATA_END, 0, message_id, size)
        await session.send(session.sync, session.sync_lock, [header, *parts])
        return
    ids = _Fixed(message_id)
    messages = hs.data_messages(parts, max_payload=limit, end=True, ids=ids, rmt=False)
    for header, pieces in messages:
        await session.send(session.sync, session.sync_lock, [header, *pieces])


class _Fixed:
    """A MessageID source that always gives the same id (a server echoes one)."""

    __slots__ = ("last", "value")

    def __init__(self, value: int) -> None:
        self.value = value
        self.last = value

    def take(self) -> int:
        return self.value
