"""Logged-in sessions: random ids, signed, kept in memory with an expiry and a bound.

A session id is 32 random bytes; the cookie (or bearer token) carries it with an HMAC
signature under a per-process key, so a forged or truncated value is refused before any
lookup. Sessions live in memory: a restart of the gateway logs everybody out, and logout
really ends a session (it is deleted, not just forgotten by the browser).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Session", "SessionStore"]


@dataclass(frozen=True, slots=True)
class Session:
    """Who is logged in, until when (``expires``: the store's clock)."""

    user: str
    expires: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class SessionStore:
    """Bounded, expiring sessions: the oldest is evicted when ``max_sessions`` is reached."""

    def __init__(
        self,
        *,
        ttl: float,
        max_sessions: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_sessions = max_sessions
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def _sign(self, session_id: str) -> str:
        digest = hmac.new(self._key, session_id.encode("ascii"), hashlib.sha256).digest()
        return _b64(digest)

    def create(self, user: str) -> str:
        """Open a session for ``user``; returns the signed token for cookie or header."""
        self._purge()
        while len(self._sessions) >= self.max_sessions:
            self._sessions.popitem(last=False)
        session_id = _b64(secrets.token_bytes(32))
        self._sessions[session_id] = Session(user, self._clock() + self.ttl)
        return f"{session_id}.{self._sign(session_id)}"

    def get(self, token: str | None) -> Session | None:
        """The live session ``token`` names, or None (absent, forged, expired, ended)."""
        if not token or len(token) > 200:
            return None
        session_id, dot, signature = token.partition(".")
        if not dot or not session_id.isascii() or not signature.isascii():
            return None
        if not hmac.compare_digest(signature, self._sign(session_id)):
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if session.expires <= self._clock():
            del self._sessions[session_id]
            return None
        return session

    def end(self, token: str | None) -> None:
        """Log out: forget the session (unknown or forged tokens are ignored)."""
        if self.get(token) is not None:
            assert token is not None
            del self._sessions[token.partition(".")[0]]

    def end_user(self, user: str) -> None:
        """End every session of ``user``."""
        for session_id in [k for k, s in self._sessions.items() if s.user == user]:
            del self._sessions[session_id]

    def _purge(self) -> None:
        """Drop expired sessions from the oldest end (they were created in ttl order)."""
        now = self._clock()
        while self._sessions:
            session_id, session = next(iter(self._sessions.items()))
            if session.expires > now:
                break
            del self._sessions[session_id]
