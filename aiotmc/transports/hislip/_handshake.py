"""Opening a HiSLIP session: connect both channels and initialize them (one job).

:func:`handshake` connects the synchronous and the asynchronous channel, runs
Initialize, AsyncInitialize, the security set-up (:mod:`._security`) and
AsyncMaximumMessageSize, all within ``connect_timeout``, and returns the
:class:`Session`. :class:`Target` is where a link goes, kept for reconnection. Nothing
here knows the transport that uses them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

import anyio

from ..._exceptions import (
    ConnectError,
    ConnectionLostError,
    ConnectTimeout,
    LocalProtocolError,
    RemoteProtocolError,
)
from ..._hislip_wire import Channel
from ...protocol import hislip as hs
from ...protocol.hislip import MessageType as T
from ...reconnect import Reconnect
from ..tcp import connect_socket
from ._security import Security, secure_session

__all__ = ["Session", "Target", "handshake"]

_VERSION: Final = (2, 0)
_VENDOR: Final = b"AT"


@dataclass(frozen=True, slots=True)
class Target:
    """Where a link goes (kept for :meth:`HislipTransport.reconnect`)."""

    host: str
    port: int
    sub_address: str
    resource: str
    max_message_size: int
    overlapped: bool = False  #: ask for overlapped mode (if the server offers it)
    #: Encryption and credentials (``repr`` hides passwords).
    security: Security = field(default_factory=Security)
    reconnect: Reconnect | None = None  #: automatic reconnection policy
    connect_timeout: float | None = 10.0  #: bounds each new session's set-up


@dataclass(frozen=True, slots=True)
class Session:
    """An initialized session: both channels and what the server said."""

    sync: Channel
    async_: Channel
    session_id: int
    version: tuple[int, int]
    server_max: int
    vendor: str
    features: hs.Feature = hs.Feature.NONE
    encryption: str = "none"  #: the TLS version of both channels, or "none"


async def handshake(target: Target, connect_timeout: float | None) -> Session:
    """Connect both channels, Initialize, AsyncInitialize, AsyncMaximumMessageSize."""
    deadline = math.inf if connect_timeout is None else anyio.current_time() + connect_timeout
    channels: list[Channel] = []
    try:
        with anyio.CancelScope(deadline=deadline) as scope:
            sync = Channel(
                await connect_socket(target.host, target.port, timeout=connect_timeout),
                max_payload=target.max_message_size,
                name="synchronous",
            )
            channels.append(sync)
            await sync.send([hs.encode_initialize(_VERSION, _VENDOR, target.sub_address)])
            answer = hs.decode_initialize_response(await sync.receive())
            async_ = Channel(
                await connect_socket(target.host, target.port, timeout=connect_timeout),
                max_payload=target.max_message_size,
                name="asynchronous",
            )
            channels.append(async_)
            await async_.send([hs.encode(T.AsyncInitialize, 0, answer.session_id)])
            reply = await async_.receive()
            hs.raise_if_error(reply)
            if reply.type != T.AsyncInitializeResponse:
                raise RemoteProtocolError(
                    f"expected AsyncInitializeResponse, got message type {reply.type}"
                )
            vendor = bytes(((reply.param >> 8) & 0xFF, reply.param & 0xFF))
            encrypted = await secure_session(
                sync,
                async_,
                target.security,
                host=target.host,
                resource=target.resource,
                features=answer.features,
                version=answer.version,
                async_control=reply.control,
            )
            await async_.send(
                [hs.encode_max_message_size(T.AsyncMaximumMessageSize, target.max_message_size)]
            )
            reply = await async_.receive()
            hs.raise_if_error(reply)
            if reply.type != T.AsyncMaximumMessageSizeResponse:
                raise RemoteProtocolError(
                    f"expected AsyncMaximumMessageSizeResponse, got type {reply.type}"
                )
            server_max = hs.decode_max_message_size(reply)
        if scope.cancelled_caught:
            raise ConnectTimeout(
                f"{target.resource}: HiSLIP session not initialized within {connect_timeout} s",
                resource=target.resource,
            )
    except hs.HislipError as exc:
        for channel in channels:
            channel.close()
        raise ConnectError(f"{target.resource}: the server refused the session: {exc}") from exc
    except (RemoteProtocolError, LocalProtocolError, ConnectionLostError) as exc:
        for channel in channels:
            channel.close()
        raise ConnectError(f"{target.resource}: HiSLIP initialization failed: {exc}") from exc
    except BaseException:
        for channel in channels:
            channel.close()
        raise
    if server_max <= hs.HEADER_SIZE:
        server_max = hs.DEFAULT_MAX_MESSAGE_SIZE
    return Session(
        sync,
        async_,
        answer.session_id,
        answer.version,
        server_max,
        vendor.decode("ascii", "replace"),
        answer.features,
        (sync.tls.version() or "TLS") if encrypted and sync.tls is not None else "none",
    )
