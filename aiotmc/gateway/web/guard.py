"""An ASGI middleware that refuses requests a browser was tricked into sending.

Two checks, before the application sees anything (plain ASGI, stdlib only, so that any
Starlette app can use it; ``examples/web_dashboard`` does):

* **Host allow-list** (DNS rebinding): a page on ``evil.example`` whose name is made to
  resolve to 127.0.0.1 reaches a loopback server, but its requests say
  ``Host: evil.example``. Any Host whose name is not listed gets 400.
* **Origin check** (CSRF, cross-site WebSocket hijacking) on every state-changing request
  (anything but GET, HEAD, OPTIONS) and on every WebSocket upgrade: the ``Origin`` header
  (else the ``Referer``'s origin) must be the server's own (scheme and Host of the request)
  or one of ``allowed_origins``. ``Origin: null`` is refused. With neither header the
  request is refused when it carries the session cookie ``session_cookie`` (a browser with
  ambient credentials whose headers were stripped) and when ``Sec-Fetch-Site`` says
  ``cross-site``; otherwise it comes from a non-browser client (curl, a script with a
  bearer token), for which CSRF does not exist.

Every HTTP response also gets ``X-Content-Type-Options: nosniff``,
``X-Frame-Options: DENY`` (no clickjacking) and whatever ``headers`` adds.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

__all__ = ["Guard", "host_name"]

log = logging.getLogger("aiotmc.gateway.web")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_DEFAULT_PORTS = {"http": "80", "https": "443"}
_BASE_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY")]


def host_name(host: str) -> str:
    """The name part of a Host header value: no port, no brackets, lower case, no final dot."""
    host = host.strip().lower()
    if host.startswith("["):
        name, _, _ = host[1:].partition("]")
    elif host.count(":") == 1:
        name = host.partition(":")[0]
    else:
        name = host
    return name.rstrip(".")


def _origin(scheme: str, netloc: str) -> str:
    """``scheme://netloc`` with the default port dropped, lower case."""
    scheme, netloc = scheme.lower(), netloc.lower()
    default = _DEFAULT_PORTS.get(scheme)
    if default and netloc.endswith(f":{default}") and not netloc.endswith("]"):
        netloc = netloc[: -len(default) - 1]
    return f"{scheme}://{netloc}"


class Guard:
    """Wrap ``app``: Host allow-list, Origin check, and a few safe response headers."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        allowed_hosts: Iterable[str],
        allowed_origins: Iterable[str] = (),
        session_cookie: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self.app = app
        self.allowed_hosts = frozenset(host_name(h) for h in allowed_hosts)
        self.allowed_origins = frozenset(
            _origin(*o.rstrip("/").split("://", 1)) for o in allowed_origins
        )
        self.session_cookie = session_cookie
        self.headers = [*_BASE_HEADERS, *((k.lower().encode(), v.encode()) for k, v in headers)]
        self.on_refused = on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = {}
        for name, value in scope.get("headers", ()):
            headers.setdefault(bytes(name).lower(), bytes(value))
        host = headers.get(b"host", b"").decode("latin-1")
        if not host or host_name(host) not in self.allowed_hosts:
            await self._refuse(scope, receive, send, 400, "host", f"Host {host!r} is not allowed")
            return
        if kind == "websocket" or scope.get("method", "GET") not in _SAFE_METHODS:
            problem = self._origin_problem(scope, headers, host)
            if problem is not None:
                await self._refuse(scope, receive, send, 403, "origin", problem)
                return
        if kind == "websocket":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *self.headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _origin_problem(self, scope: Scope, headers: dict[bytes, bytes], host: str) -> str | None:
        """None if the request may change state, else why not."""
        scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
        own = _origin(scheme, host)
        origin = headers.get(b"origin")
        if origin is not None:
            text = origin.decode("latin-1").strip()
            if text == "null":
                return "Origin null (an opaque origin) may not change state"
            parts = urlsplit(text)
            if (
                parts.scheme
                and parts.netloc
                and _origin(parts.scheme, parts.netloc)
                in (
                    own,
                    *self.allowed_origins,
                )
            ):
                return None
            return f"cross-origin request from {text!r} refused (this is {own})"
        referer = headers.get(b"referer")
        if referer is not None:
            parts = urlsplit(referer.decode("latin-1").strip())
            if parts.scheme and parts.netloc:
                source = _origin(parts.scheme, parts.netloc)
                if source in (own, *self.allowed_origins):
                    return None
                return f"cross-origin request from {source!r} refused (this is {own})"
            return "unreadable Referer"
        if headers.get(b"sec-fetch-site", b"").strip().lower() == b"cross-site":
            return "cross-site request refused"
        if self.session_cookie and self._has_cookie(headers.get(b"cookie", b"")):
            return "a request with the session cookie must carry Origin or Referer"
        return None

    def _has_cookie(self, cookie: bytes) -> bool:
        assert self.session_cookie is not None
        wanted = self.session_cookie.encode()
        return any(part.strip().partition(b"=")[0] == wanted for part in cookie.split(b";"))

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, status: int, kind: str, reason: str
    ) -> None:
        client = scope.get("client") or ("?", 0)
        path = scope.get("path")
        log.warning("refused %s %s from %s: %s", scope["type"], path, client[0], reason)
        if self.on_refused is not None:
            self.on_refused(kind)
        if scope["type"] == "websocket":
            # Before accept, a close makes the server answer the upgrade with 403.
            await send({"type": "websocket.close", "code": 1008, "reason": ""})
            return
        body = f"{reason}\n".encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                    *self.headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
