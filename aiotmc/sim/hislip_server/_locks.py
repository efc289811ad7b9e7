"""Locks between sessions (AsyncLock): grant, wait for the requested timeout, release.

Locks are bookkeeping only: a session without the lock is not held back.
"""

from __future__ import annotations

import anyio

from ...protocol import hislip as hs
from ._session import ServerState, Session


async def lock(server: ServerState, session: Session, message: hs.Message) -> int:
    """Grant, wait for, or release a lock; the AsyncLockResponse control code."""
    if message.control == 0:  # release
        if session.exclusive:
            session.exclusive = False
            result = hs.LockResult.SUCCESS
        elif session.shared is not None:
            session.shared = None
            result = hs.LockResult.SUCCESS_SHARED
        else:
            return hs.LockResult.ERROR
        locks_changed(server)
        return result
    if message.control != 1 or len(message.payload) > hs.MAX_SUB_ADDRESS:
        return hs.LockResult.ERROR
    name = message.payload.decode("ascii", "replace") or None
    with anyio.move_on_after(message.param / 1000):
        while not _grantable(server, session, name):
            if server._lock_event is None:
                server._lock_event = anyio.Event()
            server.lock_waiters += 1
            server._changed()
            try:
                await server._lock_event.wait()
            finally:
                server.lock_waiters -= 1
        if name is None:
            session.exclusive = True
        else:
            session.shared = name
        return hs.LockResult.SUCCESS
    return hs.LockResult.FAILURE


def _grantable(server: ServerState, session: Session, name: str | None) -> bool:
    others = [s for s in server._sessions.values() if s is not session]
    if any(s.exclusive for s in others):
        return False
    if name is None:
        return not any(s.shared is not None for s in others)
    return all(s.shared in (None, name) for s in others)


def locks_changed(server: ServerState) -> None:
    """A lock was released (or its session ended): the waiting requests look again."""
    event, server._lock_event = server._lock_event, None
    if event is not None:
        event.set()


def lock_info(server: ServerState) -> tuple[int, int]:
    """AsyncLockInfoResponse: (an exclusive lock is held, sessions holding a lock)."""
    holders = sum(1 for s in server._sessions.values() if s.exclusive or s.shared)
    exclusive = any(s.exclusive for s in server._sessions.values())
    return int(exclusive), holders
