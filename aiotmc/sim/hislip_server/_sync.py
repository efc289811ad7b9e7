"""The synchronous channel: its read loop and what each message does (program messages
to the device, synchronized-mode interrupts, device clear, strict-mode checks)."""

from __future__ import annotations

from typing import Final

from anyio.lowlevel import checkpoint

from ...protocol import hislip as hs
from ...protocol.hislip import MessageType as T
from ...protocol.hislip_descriptors import encode_descriptors
from . import _security
from ._answers import send_response
from ._session import VERSION_SECURE, ServerState, Session, fatal

_UNWAITED_MAX: Final = 16  # messages handled without a wait before yielding to other tasks
_MAX_SKIP: Final = 64  # looks for a next message skipped after misses, at most


async def sync_loop(server: ServerState, session: Session) -> None:
    """Handle the session's synchronous-channel messages until idle too long."""
    channel = session.sync
    unwaited = 0  # messages handled since the last wait
    # The next message is rarely there already when an answer has gone out: after a
    # look that found nothing, skip the next 1, 2, 4 ... 64 looks (each a failed recv)
    skip, backoff = 0, 1
    while True:
        looked = not skip
        message = channel.receive_nowait(look=looked)
        if not looked:
            skip -= 1
        elif message is None:
            skip, backoff = backoff, min(backoff * 2, _MAX_SKIP)
        else:
            backoff = 1
        if message is None:
            unwaited = 0
            # the idle limit is a timer on the wait itself, not a cancel scope
            message = await channel.receive_until(channel.clock() + server.idle_timeout)
            if message is None:
                return  # idle too long: end the session
        elif unwaited >= _UNWAITED_MAX:  # a client that never lets us wait
            unwaited = 0
            await checkpoint()  # must not starve the other tasks
        unwaited += 1
        session.handling = True
        try:
            await _handle_sync(server, session, message)
        finally:
            session.handling = channel.reader.buffered > 0


async def _handle_sync(server: ServerState, session: Session, message: hs.Message) -> None:
    type_ = message.type
    if type_ in (T.Data, T.DataEnd, T.Trigger):
        if server.fatal_next is not None:
            await _fatal_now(server, session)
            return
        if session.clearing:
            return  # discarded until DeviceClearComplete
        if (server.require_tls or server.users is not None) and not await _security.admitted(
            server, session
        ):
            return
        if (
            server.strict or len(message.payload) > server.max_message_size - hs.HEADER_SIZE
        ) and await _breaks_rules(server, session, message):
            return
        if message.control & 1:
            if not session.unread:
                server.counters["rmt_extra"] += 1  # pyvisa-py never clears it
            session.unread = False
        elif session.unread:
            server.counters["rmt_missing"] += 1  # or an answer the client abandoned
        if message.param != session.next_id:
            server.counters["id_gap"] += 1  # not +2 from the previous one (§3.1.2)
        session.next_id = (message.param + 2) & 0xFFFFFFFF
        session.last_id = message.param
        if session.overlapped and type_ == T.Trigger:
            session.queue.append((message.param, None))  # in turn, after the others
            session.wake()
            return
        if type_ == T.Trigger:
            if server.device.busy:
                await _interrupt_if_pending(server, session, message.param)
            session.response_id = message.param
            server.device.trigger()
            session.wake()
            return
        payload = message.payload
        whole = type_ == T.DataEnd and not session.input and not session.dropping
        if whole and len(payload) <= server.max_input:
            program = payload  # the usual case: one DataEnd is the whole message
        else:
            if not session.dropping:
                if len(session.input) + len(payload) > server.max_input:
                    session.dropping = True
                    session.input.clear()
                    await session.error(hs.ErrorCode.MESSAGE_TOO_LARGE, "program message too large")
                else:
                    session.input += payload
            if type_ != T.DataEnd:
                return
            if session.dropping:
                session.dropping = False
                return
            program = bytes(session.input)
            session.input.clear()
        if session.overlapped:  # executed one after another, answers by MessageID
            session.queue.append((message.param, program))
            session.wake()
            return
        device = server.device
        if device.busy:
            await _interrupt_if_pending(server, session, message.param)
        session.response_id = message.param
        device.write(program)
        parts = device.read_parts()  # answered at once: no hand-over to the pump
        if parts is not None:
            session.unread = True
            await send_response(server, session, parts, message.param)
        if device.busy or device.next_deadline() is not None:
            session.wake()  # more to come later: the pump sends it
    elif type_ == T.DeviceClearComplete:
        session.overlapped = server.overlapped and bool(message.control & hs.Feature.OVERLAPPED)
        session.clearing = False
        session.input.clear()
        session.dropping = False
        session.last_id = hs.NO_MESSAGE_ID
        session.next_id = hs.FIRST_MESSAGE_ID
        await session.send(
            session.sync,
            session.sync_lock,
            [hs.encode(T.DeviceClearAcknowledge, int(session.overlapped))],
        )
    elif type_ == T.StartTLS:
        await _security.start_tls_sync(server, session)
    elif type_ == T.EndTLS:
        await _security.end_tls_sync(server, session)
    elif type_ == T.GetDescriptors and session.version >= VERSION_SECURE:
        count, payload = encode_descriptors(server.descriptors)
        await session.reply_sync(hs.encode(T.GetDescriptorsResponse, 0, count, payload))
    elif type_ in (T.GetSaslMechanismList, T.AuthenticationStart, T.AuthenticationExchange):
        await _security.authenticate(server, session, message)
    else:
        await session.error(hs.ErrorCode.UNRECOGNIZED_MESSAGE_TYPE, f"message type {type_}")


async def _fatal_now(server: ServerState, session: Session) -> None:
    """The ``fatal_next`` fault hook: FatalError with its text, and the session ends."""
    text, server.fatal_next = server.fatal_next or "", None
    async with session.sync_lock:
        await fatal(server, session.sync, hs.FatalCode.UNIDENTIFIED, text)
    session.cancel()


async def _breaks_rules(server: ServerState, session: Session, message: hs.Message) -> bool:
    """A Data, DataEnd or Trigger above our maximum message size (header included) is
    counted (``too_large``); in strict mode it, RMT-delivered without a delivered
    response and a MessageID not +2 from the previous one are refused: Error, and the
    program message is dropped. True when refused."""
    too_large = len(message.payload) > server.max_message_size - hs.HEADER_SIZE
    if too_large:
        server.counters["too_large"] += 1
    if not server.strict:
        return False
    rmt_ok = session.report_delivery() if message.control & 1 else True
    if too_large:
        code, reason = hs.ErrorCode.MESSAGE_TOO_LARGE, "message above the maximum size"
    elif not rmt_ok:
        server.counters["rmt_extra"] += 1
        code, reason = hs.ErrorCode.UNIDENTIFIED, "RMT-delivered, but nothing was delivered"
    elif message.param != session.next_id:
        server.counters["id_gap"] += 1
        code = hs.ErrorCode.UNIDENTIFIED
        reason = f"MessageID {message.param:#x}, expected {session.next_id:#x}"
    else:
        return False
    server.counters["strict_refused"] += 1
    if message.control & 1:
        session.unread = False
    session.next_id = (message.param + 2) & 0xFFFFFFFF
    session.last_id = message.param
    session.input.clear()
    session.dropping = message.type == T.Data  # the rest of this program message too
    await session.error(code, reason)
    return True


async def _interrupt_if_pending(server: ServerState, session: Session, message_id: int) -> None:
    """A new message while an answer is pending interrupts it (synchronized mode)."""
    if not server.device.busy:
        return
    server.counters["interrupted"] += 1
    server.device.device_clear()
    await session.send(session.sync, session.sync_lock, [hs.encode(T.Interrupted, 0, message_id)])
    if session.async_ is not None:
        await session.send(
            session.async_, session.async_lock, [hs.encode(T.AsyncInterrupted, 0, message_id)]
        )
