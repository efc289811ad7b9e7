"""Reconnection of a HiSLIP link: a new session in place of a failed one (one job).

:class:`Reconnecting` adds to :class:`._core.LinkCore` the replacement of both channels
by a new session (:meth:`reconnect`, or under a ``reconnect=`` policy before the next
operation and in the background), and the one report of the locks a replaced session
lost. It is a layer of the transport, not an object of its own, because a replacement
resets the session state the query path keeps on the transport (see :mod:`._core`).
"""

from __future__ import annotations

import logging
import math

import anyio

from ..._background import spawn
from ..._exceptions import ConnectionLostError, ConnectTimeout, LockLostError
from ...protocol import hislip as hs
from ...reconnect import retry_connect
from ._core import LinkCore
from ._handshake import handshake

__all__ = ["Reconnecting"]

_log = logging.getLogger("aiotmc.transports.hislip")


class Reconnecting(LinkCore):
    """A HiSLIP link that can replace its session."""

    async def reconnect(self, *, deadline: float = math.inf) -> None:
        """Replace both channels with a new session (after a FatalError or a lost
        connection); the transport object and its SRQ fan-out stay. With a ``reconnect=``
        policy it makes up to that many tries. If the old session held locks, the new
        one is up but :class:`~aiotmc.LockLostError` says they are gone."""
        if self._closed:
            raise anyio.ClosedResourceError
        if self._busy:
            raise anyio.BusyResourceError("another task is using this transport")
        self._busy = True
        try:
            await self._renew(deadline)
        finally:
            self._busy = False

    async def _renew(self, deadline: float) -> None:
        """A new session, one try or the policy's (``_busy`` is held by the caller); then
        the report of lost locks."""
        policy = self._target.reconnect
        if policy is None:
            await self._replace(deadline)
        else:
            await retry_connect(
                policy,
                lambda: self._replace(deadline),
                resource=self._target.resource,
                deadline=deadline,
            )
        self._lost_locks |= self._locks
        self._locks = set()
        self._report_lost_locks()

    def _report_lost_locks(self) -> None:
        """:class:`~aiotmc.LockLostError`, once, for the locks of a replaced session."""
        lost, self._lost_locks = self._lost_locks, set()
        if lost:
            names = ", ".join("exclusive" if n == "" else f"shared {n!r}" for n in sorted(lost))
            raise LockLostError(
                f"the HiSLIP session was replaced and its locks ({names}) are gone; the "
                "operation was not performed: lock again",
                resource=self._target.resource,
            )

    async def _settle(self, deadline: float) -> None:
        """Before an operation: wait for a background reconnect's try in progress (it
        holds the link), then report the locks a replaced session lost."""
        attempt = self._attempt
        if attempt is not None and self._busy:
            with anyio.CancelScope(deadline=deadline) as scope:
                await attempt.wait()
            if scope.cancelled_caught:
                raise ConnectTimeout(
                    "the HiSLIP session was not restored in time", resource=self._target.resource
                )
        if self._lost_locks:
            self._report_lost_locks()

    def _schedule_reconnect(self) -> None:
        """Under a ``reconnect=`` policy, once the session failed: a new one in the
        background, so that service-request subscribers of an idle link hear from the
        instrument again without waiting for an operation to bring it back."""
        if self._target.reconnect is None or self._closed or self._reconnector is not None:
            return
        self._reconnector = spawn(
            self._background_reconnect, name=f"aiotmc hislip reconnect {self._target.resource}"
        )

    async def _background_reconnect(self) -> None:
        policy = self._target.reconnect
        assert policy is not None
        replaced = False

        async def attempt() -> None:
            nonlocal replaced
            if self._closed:
                raise anyio.ClosedResourceError
            if self._failure is None:  # an operation brought it back meanwhile
                return
            if self._busy or self._overlap.busy:  # an operation is failing: later
                raise ConnectionLostError("the link is in use", resource=self._target.resource)
            self._busy = True
            self._attempt = done = anyio.Event()
            try:
                await self._replace(math.inf)
                replaced = True
            finally:
                self._busy = False
                self._attempt = None
                done.set()

        try:
            await anyio.sleep(policy.backoff)  # a restarted instrument needs a moment
            await retry_connect(policy, attempt, resource=self._target.resource)
        except anyio.ClosedResourceError:
            pass
        except Exception as exc:  # the next operation tries again (or reports it)
            _log.warning("%s: background reconnect gave up: %s", self._target.resource, exc)
        else:
            if replaced:
                self._lost_locks |= self._locks  # reported by the next operation
                self._locks = set()
        finally:
            self._reconnector = None

    async def _restore(self, deadline: float) -> None:
        """Under a ``reconnect=`` policy: a new session before an operation, when the
        old one failed (``_busy`` is held by the caller); without one, the typed error."""
        if self._target.reconnect is None:
            self._check_failure()
        _log.info("%s: session failed (%s); reconnecting", self._target.resource, self._failure)
        await self._renew(deadline)

    async def _restore_idle(self, deadline: float) -> None:
        """:meth:`_restore` for the asynchronous-channel operations (read_stb, locks...),
        which do not hold the link: only when nobody else does."""
        await self._settle(deadline)
        if (
            self._failure is None
            or self._target.reconnect is None
            or self._closed
            or self._busy
            or self._overlap.busy
        ):
            return
        self._busy = True
        try:
            await self._restore(deadline)
        finally:
            self._busy = False

    async def _replace(self, deadline: float) -> None:
        """One try at a new session (``_busy`` is held by the caller)."""
        timeout = self._target.connect_timeout
        if deadline != math.inf:
            left = max(0.0, deadline - anyio.current_time())
            timeout = left if timeout is None else min(timeout, left)
        session = await handshake(self._target, timeout)
        await self._async.stop_reader()
        self._sync.close()
        self._async.channel.close()
        self._async.wake_all()
        if self._closed:  # closed while we were connecting
            session.sync.close()
            session.async_.close()
            raise anyio.ClosedResourceError
        self._sync, self._async.channel = session.sync, session.async_
        self._server_max = session.server_max
        self._ids.reset()
        self._rmt = False
        self._abandoned = None
        self._resync = False
        self._acks_due = 0
        self._failure = None
        self._overlapped = bool(session.features & hs.Feature.OVERLAPPED)
        self._info = self._describe(session)
        self.reconnects += 1
        _log.info("%s: new HiSLIP session (reconnect %d)", self._target.resource, self.reconnects)
        self._async.start_reader()
        if self._overlapped != self._target.overlapped:
            await self._clear(deadline)
