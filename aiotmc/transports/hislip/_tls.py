"""Encryption of a running HiSLIP session: StartTLS and EndTLS (one job).

:class:`TlsOperations` switches both channels of a session to TLS and back (HiSLIP 2.0
§6.15, §6.16), the client authenticated again after StartTLS (:mod:`._security`). The
asynchronous channel's part is done by its reader (:mod:`._asyncchannel`). A layer of
the transport for the reason given in :mod:`._core`.
"""

from __future__ import annotations

import math
import struct
from dataclasses import replace
from typing import Final

from ..._exceptions import AuthenticationError, RemoteProtocolError, TransportError
from ...protocol import hislip as hs
from ...protocol.hislip import MessageType as T
from ._asyncchannel import TLS_RESPONSE_OK
from ._reconnect import Reconnecting
from ._security import authenticate

__all__ = ["TlsOperations"]

_U32: Final = struct.Struct("!I")


class TlsOperations(Reconnecting):
    """StartTLS and EndTLS in a running session."""

    async def start_tls(self, *, deadline: float = math.inf) -> None:
        """StartTLS in a running session (one opened plain, or after :meth:`end_tls`):
        both channels encrypted and the client authenticated again, with the security
        options the link was opened with. Call it between operations. A refusal is
        :class:`~aiotmc.AuthenticationError` and leaves the session plain; a failed
        handshake breaks it (reopen or ``reconnect()``)."""
        if self._sync.tls is not None:
            return
        security = self._target.security
        if security.tls is False:
            raise AuthenticationError(f"{self._info.resource}: opened with tls=False")
        resource = self._info.resource
        await self._settle(deadline)
        self._begin()
        try:
            await self._prepare(deadline)
            context = security.ssl_context()
            name = security.server_name or self._target.host
            payload = _U32.pack(self._ids.last)
            request = hs.encode(T.AsyncStartTLS, 0, self._ids.last, payload)
            reply = await self._async.request_start_tls(request, context, name, deadline)
            if reply.control != TLS_RESPONSE_OK:
                raise AuthenticationError(
                    f"{resource}: the server refused AsyncStartTLS (code {reply.control})"
                )
            try:
                assert self._async.channel.tls is not None
                security.check_pin(self._async.channel.tls, "asynchronous")
                await self._sync.send([hs.encode(T.StartTLS)], deadline)
                tls = await self._sync.start_tls(context, server_hostname=name, deadline=deadline)
                security.check_pin(tls, "synchronous")
                await authenticate(self._sync, security, resource, deadline)
            except (AuthenticationError, TransportError) as exc:
                self._fail(exc)  # half-encrypted: the session cannot go on
                raise
            details = dict(self._info.details)
            details["encryption"] = tls.version() or "TLS"
            self._info = replace(self._info, details=details)
        finally:
            self._busy = False

    async def end_tls(self, *, deadline: float = math.inf) -> None:
        """EndTLS: both channels go back to plaintext (HiSLIP 2.0 §6.16). Call it between
        operations; a server that insists on encryption refuses (``RemoteProtocolError``,
        the session stays encrypted)."""
        if self._sync.tls is None:
            return
        await self._settle(deadline)
        self._begin()
        try:
            await self._prepare(deadline)
            payload = _U32.pack(self._ids.last)
            request = hs.encode(T.AsyncEndTLS, 0, self._ids.last, payload)
            # the reader ends TLS on the asynchronous channel before handing the reply over
            reply = await self._async.request(request, T.AsyncEndTLSResponse, deadline)
            if reply.control != TLS_RESPONSE_OK:
                raise RemoteProtocolError(
                    f"{self._info.resource}: the server refused EndTLS (code {reply.control})"
                )
            await self._sync.send([hs.encode(T.EndTLS)], deadline)
            await self._sync.end_tls(deadline=deadline)
            details = dict(self._info.details)
            details["encryption"] = "none"
            self._info = replace(self._info, details=details)
        finally:
            self._busy = False
