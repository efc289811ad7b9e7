"""The asynchronous channel: its read loop and its requests (status query, device clear,
remote/local, maximum message size, locks, TLS), and service requests sent on it."""

from __future__ import annotations

from typing import Final

from anyio.lowlevel import checkpoint

from ..._exceptions import TransportError
from ...protocol import hislip as hs
from ...protocol.hislip import MessageType as T
from . import _locks, _security
from ._session import ServerState, Session

_MAV: Final = 0x10
_MSS: Final = 0x40
_CATCH_UP_STEPS: Final = 200  # scheduler steps a status query waits for the sync channel


async def async_loop(server: ServerState, session: Session) -> None:
    """Handle the session's asynchronous-channel requests; the session ends with it."""
    channel = session.async_
    assert channel is not None
    try:
        with session.async_scope:
            while True:
                message = await channel.receive()
                await _handle_async(server, session, message)
    finally:
        session.cancel()  # one channel gone ends the session


async def _handle_async(server: ServerState, session: Session, message: hs.Message) -> None:
    assert session.async_ is not None
    type_ = message.type
    reply: bytes
    if type_ == T.AsyncMaximumMessageSize:
        session.client_max = max(hs.HEADER_SIZE + 1, hs.decode_max_message_size(message))
        reply = hs.encode_max_message_size(
            T.AsyncMaximumMessageSizeResponse, server.max_message_size
        )
    elif type_ == T.AsyncStatusQuery:
        await _catch_up(session)
        if server.strict and await _refuses_status(server, session, message):
            return
        if message.control & 1:
            session.unread = False
        if message.param != session.last_id:
            server.counters["status_id_mismatch"] += 1
        stb = server.device.serial_poll()
        if session.unread or (session.overlapped and (session.queue or server.device.busy)):
            stb |= _MAV  # sent and not reported delivered, or still to come
        session.srq_latched = False
        reply = hs.encode(T.AsyncStatusResponse, stb & 0xFF)
        if session.srq_missed:  # requested while latched: send it now if still due
            session.srq_missed = False
            status = server.device.status_byte
            if status & _MSS:
                session.srq_latched = True
                reply += hs.encode(T.AsyncServiceRequest, status & 0xFF)
    elif type_ == T.AsyncDeviceClear:
        await _catch_up(session)
        server.device.device_clear()
        session.clearing = True
        session.unread = False
        session.unreported = 0
        session.input.clear()
        session.queue.clear()
        reply = hs.encode(T.AsyncDeviceClearAcknowledge, int(server.overlapped))
    elif type_ == T.AsyncRemoteLocalControl:
        session.remote_local.append(message.control)
        reply = hs.encode(T.AsyncRemoteLocalResponse)
    elif type_ == T.AsyncLock:
        reply = hs.encode(T.AsyncLockResponse, await _locks.lock(server, session, message))
    elif type_ == T.AsyncStartTLS:
        await _security.start_tls_async(server, session)
        return
    elif type_ == T.AsyncEndTLS:
        await _security.end_tls_async(server, session)
        return
    elif type_ == T.AsyncLockInfo:
        reply = hs.encode(T.AsyncLockInfoResponse, *_locks.lock_info(server))
    else:
        server.counters["errors"] += 1
        reply = hs.encode(T.Error, hs.ErrorCode.UNRECOGNIZED_MESSAGE_TYPE)
    await session.send(session.async_, session.async_lock, [reply])


async def _refuses_status(server: ServerState, session: Session, message: hs.Message) -> bool:
    """Strict mode: Error instead of AsyncStatusResponse for a status query whose
    MessageID the client never sent (since the last device clear), or with
    RMT-delivered when no response was delivered.

    The two channels are read by two tasks, so the synchronous one may already have
    handled messages the client sent after this query: any MessageID sent since the
    clear is accepted (they are +2 apart: strict mode refuses gaps), the next one
    (pyvisa-py's mistake) is not."""
    if not _sent_since_clear(session, message.param):
        server.counters["status_id_mismatch"] += 1
        reason = f"status query MessageID {message.param:#x}, last was {session.last_id:#x}"
    elif message.control & 1 and not session.report_delivery():
        reason = "RMT-delivered in a status query, but no response was delivered"
    else:
        return False
    if message.control & 1:
        session.unread = False
    server.counters["strict_refused"] += 1
    assert session.async_ is not None
    error = hs.encode(T.Error, hs.ErrorCode.UNIDENTIFIED, 0, reason.encode())
    await session.send(session.async_, session.async_lock, [error])
    return True


def _sent_since_clear(session: Session, message_id: int) -> bool:
    """Did the client send ``message_id`` since the last device clear (or nothing yet)?"""
    last = session.last_id
    if message_id in (last, hs.NO_MESSAGE_ID):
        return True
    if last == hs.NO_MESSAGE_ID:
        return False
    offset = (message_id - hs.FIRST_MESSAGE_ID) & 0xFFFFFFFF
    return offset % 2 == 0 and offset <= (last - hs.FIRST_MESSAGE_ID) & 0xFFFFFFFF


async def _catch_up(session: Session) -> None:
    """Let the synchronous channel hand what the client sent before this asynchronous
    request to the device first (both reach us in any order; bounded)."""
    for _ in range(_CATCH_UP_STEPS):
        if not (session.handling or session.sync.readable_now()):
            return
        await checkpoint()


def on_srq(server: ServerState, status: int) -> None:
    """The device requests service: AsyncServiceRequest to every session, unless one
    is latched there (then it follows that session's next status response)."""
    task_group = server._task_group
    if task_group is None:
        return
    for session in server._sessions.values():
        if session.async_ is None:
            continue
        if session.srq_latched:
            session.srq_missed = True
        else:
            session.srq_latched = True
            task_group.start_soon(_send_srq, session, status)


async def _send_srq(session: Session, status: int) -> None:
    channel = session.async_
    if channel is None or channel.closed:
        return
    try:
        message = hs.encode(T.AsyncServiceRequest, status & 0xFF)
        await session.send(channel, session.async_lock, [message])
    except (TransportError, OSError):
        pass
