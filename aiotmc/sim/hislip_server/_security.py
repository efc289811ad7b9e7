"""HiSLIP 2.0 security: StartTLS / EndTLS on both channels, SASL client authentication
(SCRAM-SHA-256, PLAIN, ANONYMOUS), and who may send program messages."""

from __future__ import annotations

from typing import Final

import anyio

from ..._exceptions import AuthenticationError, TransportError
from ..._hislip_wire import Channel
from ...protocol import hislip as hs
from ...protocol import sasl
from ...protocol.hislip import MessageType as T
from ._session import ServerState, Session, fatal

_START_TLS_OK: Final = 1
_START_TLS_ERROR: Final = 3
_AUTH_FAILED: Final = 0x01
_AUTH_SUCCESS: Final = 0x02


async def admitted(server: ServerState, session: Session) -> bool:
    """May this session send program messages (encrypted / authenticated if required)?"""
    if server.require_tls and not session.encrypted:
        await fatal(
            server, session.sync, hs.FatalCode.SECURE_CONNECTION_FAILED, "encryption required"
        )
        session.cancel()
        return False
    if server.users is not None and session.user is None:
        await session.error(hs.ErrorCode.AUTHENTICATION_FAILED, "authenticate first")
        return False
    return True


async def start_tls_async(server: ServerState, session: Session) -> None:
    """AsyncStartTLS: answer, then the TLS handshake on the asynchronous channel."""
    channel = session.async_
    assert channel is not None
    async with session.async_lock:
        if server.tls is None or channel.tls is not None:
            reply = hs.encode(T.AsyncStartTLSResponse, _START_TLS_ERROR)
            await channel.send([reply], anyio.current_time() + server.send_timeout)
            return
        await channel.send(
            [hs.encode(T.AsyncStartTLSResponse, _START_TLS_OK)],
            anyio.current_time() + server.send_timeout,
        )
        await _handshake(server, session, channel)


async def end_tls_async(server: ServerState, session: Session) -> None:
    """AsyncEndTLS: answer, then close TLS on the asynchronous channel (refused while
    encryption is required or off)."""
    channel = session.async_
    assert channel is not None
    async with session.async_lock:
        deadline = anyio.current_time() + server.send_timeout
        if server.require_tls or channel.tls is None:
            await channel.send([hs.encode(T.AsyncEndTLSResponse, _START_TLS_ERROR)], deadline)
            return
        session.encrypted = False
        await channel.send([hs.encode(T.AsyncEndTLSResponse, _START_TLS_OK)], deadline)
        await channel.end_tls(deadline=deadline)


async def start_tls_sync(server: ServerState, session: Session) -> None:
    """StartTLS: the TLS handshake on the synchronous channel (Error without TLS)."""
    if server.tls is None or session.sync.tls is not None:
        await session.error(hs.ErrorCode.UNRECOGNIZED_CONTROL_CODE, "no TLS here")
        return
    async with session.sync_lock:
        await _handshake(server, session, session.sync)
    session.encrypted = session.async_ is not None and session.async_.tls is not None


async def end_tls_sync(server: ServerState, session: Session) -> None:
    """EndTLS: close TLS on the synchronous channel."""
    async with session.sync_lock:
        deadline = anyio.current_time() + server.init_timeout
        await session.sync.end_tls(deadline=deadline)
    server.counters["tls_ended"] += 1


async def _handshake(server: ServerState, session: Session, channel: Channel) -> None:
    assert server.tls is not None
    try:
        await channel.start_tls(
            server.tls, server_side=True, deadline=anyio.current_time() + server.init_timeout
        )
    except (AuthenticationError, TransportError):
        server.counters["tls_failed"] += 1
        session.cancel()
        raise
    server.counters["tls"] += 1


def _mechanisms(server: ServerState) -> list[str]:
    if server.users is None:
        return ["ANONYMOUS"]
    return ["SCRAM-SHA-256", "PLAIN"]


async def authenticate(server: ServerState, session: Session, message: hs.Message) -> None:
    """GetSaslMechanismList, AuthenticationStart, AuthenticationExchange."""
    type_ = message.type
    if type_ == T.GetSaslMechanismList:
        names = " ".join(_mechanisms(server)).encode("ascii")
        await session.reply_sync(hs.encode(T.GetSaslMechanismListResponse, 0, 0, names))
        return
    if type_ == T.AuthenticationStart:
        chosen = message.payload.decode("ascii", "replace").upper()
        session.sasl_mechanism = chosen
        wants_scram = chosen == "SCRAM-SHA-256"
        session.scram = sasl.ScramServer(server.users or {}) if wants_scram else None
        return
    name = session.sasl_mechanism
    user: str | None = None
    final = b""
    if not session.encrypted or name not in _mechanisms(server):
        pass  # SASL only inside TLS, and only what we offered
    elif name == "ANONYMOUS":
        user = ""
    elif name == "PLAIN":
        user = sasl.verify_plain(message.payload, server.users or {})
    elif session.scram is not None:
        scram = session.scram
        outcome: tuple[str, bytes] | None = None
        try:
            if not scram.started:
                challenge = scram.first(message.payload)
                reply = hs.encode(T.AuthenticationExchange, 0, 0, challenge)
                await session.reply_sync(reply)
                return  # the client answers with its proof
            outcome = scram.final(message.payload)
        except sasl.SaslError:
            outcome = None
        if outcome is not None:
            user, final = outcome
    if user is None:
        server.counters["auth_failed"] += 1
        session.sasl_mechanism = session.scram = None
        result = hs.encode(T.AuthenticationResult, _AUTH_FAILED, 1)
    else:
        server.counters["auth_ok"] += 1
        session.user = user
        session.sasl_mechanism = session.scram = None
        result = hs.encode(T.AuthenticationResult, _AUTH_SUCCESS, 0, final)
    await session.reply_sync(result)
