"""The control operations of a HiSLIP link (one job).

:class:`ControlOperations` adds the operations that are not data transfer: the status
byte, device clear, trigger, remote/local control, locks and the server's descriptors.
Most go over the asynchronous channel (:mod:`._asyncchannel`) and do not hold the link;
clear, trigger and GetDescriptors use the synchronous channel too. A layer of the
transport for the reason given in :mod:`._core`.
"""

from __future__ import annotations

import math

from ..._exceptions import LocalProtocolError, RemoteProtocolError, UnsupportedOperation
from ..._types import RenMode
from ...protocol import hislip as hs
from ...protocol.hislip import MessageType as T
from ...protocol.hislip_descriptors import Descriptor, decode_descriptors
from ._reconnect import Reconnecting

__all__ = ["ControlOperations"]


class ControlOperations(Reconnecting):
    """Status byte, clear, trigger, remote/local, locks and descriptors."""

    async def read_stb(self, *, deadline: float = math.inf) -> int:
        """AsyncStatusQuery with the MessageID of the last message sent; MAV is the
        server's verdict on whether that message's answer is still unread."""
        await self._restore_idle(deadline)
        reply = await self._async.request(self._status_query, T.AsyncStatusResponse, deadline)
        return reply.control

    async def clear(self, *, deadline: float = math.inf) -> None:
        """Device clear: AsyncDeviceClear, DeviceClearComplete, DeviceClearAcknowledge."""
        await self._settle(deadline)
        self._begin()
        try:
            if self._failure is not None:  # under a reconnect policy: a new session first
                await self._restore(deadline)
            if self._sync.unsent:
                await self._sync.flush(deadline)
            await self._clear(deadline)
        finally:
            self._busy = False

    async def trigger(self, *, deadline: float = math.inf) -> None:
        """The HiSLIP Trigger message (GET)."""
        await self._settle(deadline)
        self._begin()
        try:
            await self._prepare(deadline)
            before = self._snapshot()
            self._rmt = False
            self._abandoned = None
            message = hs.encode(T.Trigger, int(before[2]), self._ids.take())
            sent = self._sync.sent
            try:
                await self._sync.send([message], deadline)
            except BaseException as exc:
                self._interrupted(sent, before)
                self._lost(exc)
                raise
        finally:
            self._busy = False

    async def control_ren(self, mode: RenMode, *, deadline: float = math.inf) -> None:
        """AsyncRemoteLocalControl with the VISA remote-enable operation ``mode`` (HiSLIP's
        codes 0-6 are VISA's)."""
        code = int(RenMode(mode))
        await self._restore_idle(deadline)
        request = hs.encode(T.AsyncRemoteLocalControl, code, self._ids.last)
        await self._async.request(request, T.AsyncRemoteLocalResponse, deadline)

    async def lock(
        self, *, timeout: float = 0.0, shared: str | None = None, deadline: float = math.inf
    ) -> bool:
        """AsyncLock: the exclusive lock, or the shared lock named ``shared``; wait up to
        ``timeout`` seconds for it. True if granted, False if the server gave up.

        ``deadline`` should lie beyond ``timeout``: a grant that arrives after the caller
        stopped waiting is dropped, and the lock stays held until :meth:`unlock`.
        """
        name = b"" if shared is None else shared.encode("ascii")
        if shared is not None and not 0 < len(name) <= hs.MAX_SUB_ADDRESS:
            raise ValueError(f"a shared lock name has 1 to 256 ASCII characters: {shared!r}")
        millis = min(max(0, round(timeout * 1000)), 0xFFFFFFFF)
        await self._restore_idle(deadline)
        request = hs.encode(T.AsyncLock, 1, millis, name)
        reply = await self._async.request(request, T.AsyncLockResponse, deadline)
        if reply.control == hs.LockResult.ERROR:
            raise RemoteProtocolError(f"{self._info.resource}: the server refused the lock request")
        granted = reply.control == hs.LockResult.SUCCESS
        if granted:
            self._locks.add(shared or "")
        return granted

    async def unlock(self, *, deadline: float = math.inf) -> None:
        """Release the lock this session holds (after the messages already sent)."""
        await self._restore_idle(deadline)
        request = hs.encode(T.AsyncLock, 0, self._ids.last)
        reply = await self._async.request(request, T.AsyncLockResponse, deadline)
        if reply.control == hs.LockResult.ERROR:
            self._locks.clear()
            raise LocalProtocolError(f"{self._info.resource}: no lock held by this session")
        if reply.control == hs.LockResult.SUCCESS:  # the exclusive one went first
            self._locks.discard("")
        else:
            self._locks = {name for name in self._locks if name == ""}

    async def lock_info(self, *, deadline: float = math.inf) -> tuple[bool, int]:
        """AsyncLockInfo: (an exclusive lock is granted, how many sessions hold locks)."""
        await self._restore_idle(deadline)
        reply = await self._async.request(
            hs.encode(T.AsyncLockInfo), T.AsyncLockInfoResponse, deadline
        )
        return bool(reply.control & 1), reply.param

    async def get_descriptors(self, *, deadline: float = math.inf) -> list[Descriptor]:
        """HiSLIP 2.0 GetDescriptors: the server's descriptors (type code and data each;
        the payload layout is an assumption, see :mod:`aiotmc.protocol.hislip_descriptors`).

        Call it between operations: an answer not yet read is discarded. A 1.x session,
        or a server that does not know the message, gives
        :class:`~aiotmc.UnsupportedOperation`.
        """
        version = self._info.details["protocol_version"]
        if tuple(int(part) for part in version.split(".")) < (2, 0):
            raise UnsupportedOperation(
                f"{self._info.resource}: GetDescriptors needs HiSLIP 2.0 (the session runs "
                f"{version})"
            )
        await self._settle(deadline)
        self._begin()
        try:
            await self._prepare(deadline)
            try:
                await self._sync.send([hs.encode(T.GetDescriptors)], deadline)
                while True:
                    message = await self._sync_message(deadline)
                    type_ = message.type
                    if type_ == T.GetDescriptorsResponse:
                        return decode_descriptors(message.payload, message.param)
                    if type_ in (T.Data, T.DataEnd):
                        self._abandoned = self._ids.last  # an unread answer: dropped
                    elif type_ == T.Error:
                        if message.control == hs.ErrorCode.UNRECOGNIZED_MESSAGE_TYPE:
                            raise UnsupportedOperation(
                                f"{self._info.resource}: the server does not know GetDescriptors"
                            )
                        hs.raise_if_error(message)
                    elif type_ != T.Interrupted:
                        self._fail_now(message)
            except BaseException as exc:
                if not isinstance(exc, (UnsupportedOperation, hs.HislipError)):
                    self._resync = True  # the response may still come: clear it first
                self._lost(exc)
                raise
        finally:
            self._busy = False
