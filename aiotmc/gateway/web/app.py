"""The dashboard's ASGI application: login, live view, control API, metrics, health.

:class:`WebApp` holds what the handlers share (the hub, users, sessions, the live state)
and builds the Starlette app behind the :class:`~aiotmc.gateway.web.guard.Guard`.
:meth:`WebApp.feed` folds the hub's events into the live state; the component runs it
beside the server, tests run it beside ``httpx.ASGITransport``.

Endpoints (all behind the Host and Origin checks):

=========================  ==================================================================
``GET /``                   the dashboard (login required: redirects to ``/login``)
``GET/POST /login``         the login form; success sets the session cookie
``POST /logout``            ends the session
``POST /api/token``         ``{"name", "password"}`` -> ``{"token"}`` for ``Authorization: Bearer``
``GET /api/me``             who is logged in, with which roles
``GET /api/state``          instruments, latest values, open alerts
``POST /api/command``       ``{"instrument", "operation", "value"}`` -> the controller's result
``WS /ws``                  a ``hello`` snapshot, then ``batch`` messages of live events
``GET /metrics``            Prometheus text (public unless ``public_metrics = false``)
``GET /healthz``            ``{"status": "ok"}`` while the dashboard runs
=========================  ==================================================================
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache, partial
from html import escape
from importlib import resources
from typing import Any, Final
from urllib.parse import parse_qs

import anyio
from anyio.abc import ObjectReceiveStream, TaskStatus
from argon2 import PasswordHasher, extract_parameters
from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from aiotmc.gateway.model import CommandRequest, Event, Hub, Reading
from aiotmc.gateway.web import metrics
from aiotmc.gateway.web.guard import Guard
from aiotmc.gateway.web.passwords import hash_password, verify_password
from aiotmc.gateway.web.ratelimit import LoginLimiter
from aiotmc.gateway.web.sessions import SessionStore
from aiotmc.gateway.web.settings import User, WebSettings
from aiotmc.gateway.web.state import LiveState, event_json

__all__ = ["COOKIE", "WebApp"]

log = logging.getLogger("aiotmc.gateway.web")

#: The session cookie: HttpOnly, SameSite=Strict, Secure over HTTPS, value signed.
COOKIE: Final = "aiotmc_session"
#: The hub subscription that feeds the live state (its drops show in /metrics).
SUBSCRIBER: Final = "web"
MAX_BODY: Final = 8192
MAX_TEXT: Final = 1024
#: The browser gets at most one batch per this many seconds (readings conflated by channel).
BATCH_INTERVAL: Final = 0.05
MAX_BATCH: Final = 2000

#: The HTTP status of a refused command, by the controller's ``reason``
#: (:class:`aiotmc.gateway.control.Refusal`); a refusal without a reason is 403.
REFUSAL_STATUS: Final = {
    "not_allowed": 403,
    "unknown_operation": 404,
    "bad_value": 400,
    "out_of_limits": 422,
    "unavailable": 503,
    "failed": 502,
}

CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

_STATIC_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}


@cache
def _asset(name: str) -> bytes:
    return resources.files("aiotmc.gateway.web").joinpath("static", name).read_bytes()


@cache
def _dummy_hash(like: str | None) -> str:
    """Checked for unknown users, so that a wrong name costs what a wrong password costs:
    a hash of a random password with the parameters of ``like`` (a user's hash)."""
    if like is None:
        return hash_password(secrets.token_urlsafe(16))
    hasher = PasswordHasher.from_parameters(extract_parameters(like))
    return hasher.hash(secrets.token_urlsafe(16))


class BadRequest(Exception):
    """A malformed request body (becomes 400, 413 or 415)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _error(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


@dataclass(frozen=True, slots=True)
class _Refusal:
    """A login that did not happen: status, message, extra headers."""

    status: int
    message: str
    headers: Mapping[str, str] = field(default_factory=dict)

    def response(self) -> JSONResponse:
        return _error(self.status, self.message, **self.headers)


class WebApp:
    """The dashboard of one gateway: build it, run :meth:`feed`, serve :attr:`asgi`."""

    def __init__(
        self,
        hub: Hub,
        settings: WebSettings,
        users: Iterable[User],
        *,
        metrics_source: object | None = None,
        send_timeout: float = 10.0,
        command_timeout: float = 30.0,
        client_queue: int = 1000,
    ) -> None:
        self.hub = hub
        self.settings = settings
        self.users = {user.name: user for user in users}
        self.sessions = SessionStore(ttl=settings.session_ttl)
        self.limiter = LoginLimiter(attempts=settings.login_attempts, window=settings.login_window)
        self.state = LiveState()
        self.counters = metrics.WebCounters()
        self.registry = metrics.build_registry(
            hub,
            self.state,
            self.counters,
            sessions=lambda: len(self.sessions),
            subscriber=SUBSCRIBER,
            source=metrics_source,
        )
        self.send_timeout = send_timeout
        self.command_timeout = command_timeout
        self.client_queue = client_queue
        self._clients: set[anyio.CancelScope] = set()
        self._drained = anyio.Event()
        self._slots: set[int] = set()  # hub names web:1, web:2... reused: bounded labels
        self._verify_limiter = anyio.CapacityLimiter(2)  # argon2 is CPU and memory heavy
        self.starlette = Starlette(
            routes=[
                Route("/", self.index),
                Route("/login", self.login_page, methods=["GET"]),
                Route("/login", self.login, methods=["POST"]),
                Route("/logout", self.logout, methods=["POST"]),
                Route("/api/token", self.token, methods=["POST"]),
                Route("/api/me", self.me),
                Route("/api/state", self.api_state),
                Route("/api/command", self.command, methods=["POST"]),
                Route("/metrics", self.metrics),
                Route("/healthz", self.healthz),
                Route("/static/{name}", self.static),
                WebSocketRoute("/ws", self.live),
            ]
        )
        self.asgi = Guard(
            self.starlette,
            allowed_hosts=settings.allowed_hosts,
            allowed_origins=settings.allowed_origins,
            session_cookie=COOKIE,
            headers=[("content-security-policy", CSP), ("referrer-policy", "same-origin")],
            on_refused=partial(metrics.WebCounters.bump, self.counters.refused),
        )

    # -- live state ------------------------------------------------------------------------

    async def feed(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Fold every hub event into the live state until cancelled."""
        async with self.hub.subscribe(SUBSCRIBER, maxsize=10_000) as events:
            task_status.started()
            async for event in events:
                self.state.apply(event)

    async def close_clients(self) -> None:
        """End every live WebSocket stream with 1001 (going away) and wait until they have
        (bound it with a cancel scope: a client may be slow to take the close frame)."""
        for scope in list(self._clients):
            scope.cancel()
        while self._clients:
            self._drained = anyio.Event()
            await self._drained.wait()

    # -- authentication --------------------------------------------------------------------

    def _token(self, connection: HTTPConnection) -> str | None:
        authorization = connection.headers.get("authorization", "")
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
        return connection.cookies.get(COOKIE)

    def user(self, connection: HTTPConnection) -> User | None:
        """The logged-in user of a request or WebSocket (session cookie or bearer token)."""
        session = self.sessions.get(self._token(connection))
        return None if session is None else self.users.get(session.user)

    def roles(self, user: User) -> tuple[str, ...]:
        """``user``'s roles: from ``[[users]]``, plus those the controller's config gives
        the name (``roles_of``, when the controller has it)."""
        roles_of = getattr(self.hub.controller, "roles_of", None)
        extra = tuple(roles_of(user.name)) if callable(roles_of) else ()
        return tuple(dict.fromkeys((*user.roles, *extra)))

    async def _check_password(self, name: str, password: str) -> User | None:
        user = self.users.get(name)
        if user is None:
            like = next(iter(self.users.values())).password_hash if self.users else None
            password_hash = _dummy_hash(like)
        else:
            password_hash = user.password_hash
        ok = await anyio.to_thread.run_sync(
            verify_password, password_hash, password, limiter=self._verify_limiter
        )
        return user if ok and user is not None else None

    async def _credentials(self, request: Request) -> tuple[str, str]:
        body = await _read_body(request)
        content_type = request.headers.get("content-type", "").partition(";")[0].strip()
        if content_type == "application/json":
            try:
                data = json.loads(body)
            except ValueError:
                raise BadRequest("the body is not JSON") from None
            if not isinstance(data, dict):
                raise BadRequest('expected {"name": ..., "password": ...}')
        elif content_type == "application/x-www-form-urlencoded":
            try:
                fields = parse_qs(body.decode("utf-8"), max_num_fields=10, keep_blank_values=True)
            except (UnicodeDecodeError, ValueError):
                raise BadRequest("unreadable form") from None
            data = {k: v[0] for k, v in fields.items()}
        else:
            raise BadRequest("send JSON or a form", 415)
        name, password = data.get("name"), data.get("password")
        if not isinstance(name, str) or not isinstance(password, str):
            raise BadRequest("name and password are required")
        if len(name) > MAX_TEXT or len(password) > MAX_TEXT:
            raise BadRequest("name or password too long")
        return name, password

    async def _login(self, request: Request) -> User | _Refusal:
        """Rate limit, parse, verify: the user, or why not."""
        address = request.client.host if request.client else None
        if not self.limiter.allow(address):
            self.counters.bump(self.counters.logins, "limited")
            wait = math.ceil(self.limiter.retry_after(address)) or 1
            log.warning("login rate limit reached for %s", address)
            return _Refusal(429, "too many login attempts", {"retry-after": str(wait)})
        try:
            name, password = await self._credentials(request)
        except BadRequest as exc:
            return _Refusal(exc.status, str(exc))
        user = await self._check_password(name, password)
        if user is None:
            self.counters.bump(self.counters.logins, "failed")
            log.warning("failed login for %r from %s", name, address)
            return _Refusal(401, "wrong name or password")
        self.counters.bump(self.counters.logins, "ok")
        log.info("%s logged in from %s", user.name, address)
        return user

    # -- pages -------------------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        if self.user(request) is None:
            return RedirectResponse("/login", status_code=303)
        return _page("index.html")

    async def login_page(self, request: Request) -> Response:
        if self.user(request) is not None:
            return RedirectResponse("/", status_code=303)
        return _page("login.html")

    async def login(self, request: Request) -> Response:
        user = await self._login(request)
        if isinstance(user, _Refusal):
            if "application/json" in request.headers.get("accept", ""):
                return user.response()
            return _page("login.html", status=user.status, error=user.message, **user.headers)
        token = self.sessions.create(user.name)
        if "application/json" in request.headers.get("accept", ""):
            body = {"user": user.name, "roles": list(self.roles(user))}
            response: Response = JSONResponse(body)
        else:
            response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            COOKIE,
            token,
            max_age=int(self.settings.session_ttl),
            path="/",
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
        return response

    async def logout(self, request: Request) -> Response:
        self.sessions.end(self._token(request))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        suffix = name[name.rfind(".") :] if "." in name else ""
        if name not in ("app.js", "style.css") or suffix not in _STATIC_TYPES:
            return _error(404, "not found")
        return Response(_asset(name), media_type=_STATIC_TYPES[suffix])

    # -- API ---------------------------------------------------------------------------------

    async def token(self, request: Request) -> Response:
        user = await self._login(request)
        if isinstance(user, _Refusal):
            return user.response()
        token = self.sessions.create(user.name)
        body = {"token": token, "expires_in": self.settings.session_ttl, "user": user.name}
        return JSONResponse(body, headers={"cache-control": "no-store"})

    async def me(self, request: Request) -> Response:
        user = self.user(request)
        if user is None:
            return _error(401, "login required")
        return JSONResponse({"user": user.name, "roles": list(self.roles(user))})

    def _hello(self, user: User) -> dict[str, Any]:
        hub = self.hub
        return {
            "gateway": {"id": hub.gateway_id, "site": hub.site, "host": hub.host},
            "user": user.name,
            "roles": list(self.roles(user)),
            **self.state.snapshot(),
        }

    async def api_state(self, request: Request) -> Response:
        user = self.user(request)
        if user is None:
            return _error(401, "login required")
        return JSONResponse(self._hello(user), headers={"cache-control": "no-store"})

    async def command(self, request: Request) -> Response:
        user = self.user(request)
        if user is None:
            return _error(401, "login required")
        try:
            data = json.loads(await _read_body(request))
        except BadRequest as exc:
            return _error(exc.status, str(exc))
        except ValueError:
            return _error(400, "the body is not JSON")
        if not isinstance(data, dict):
            return _error(400, 'expected {"instrument": ..., "operation": ..., "value": ...}')
        instrument, operation = data.get("instrument"), data.get("operation")
        value = data.get("value")
        for label, text in (("instrument", instrument), ("operation", operation)):
            if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
                return _error(400, f"{label} must be a non-empty string")
        if not _valid_value(value):
            return _error(400, "value must be a number, a short string, true/false or null")
        assert isinstance(instrument, str) and isinstance(operation, str)
        request_ = CommandRequest(
            user=user.name,
            instrument=instrument.strip(),
            operation=operation.strip(),
            value=value,
            source="web",
            roles=self.roles(user),
        )
        try:
            with anyio.fail_after(self.command_timeout):
                result = await self.hub.controller.execute(request_)
        except TimeoutError:
            self.counters.bump(self.counters.commands, "timeout")
            return _error(504, f"no result within {self.command_timeout:g} s")
        except Exception:
            log.exception("the controller failed on %r", request_)
            self.counters.bump(self.counters.commands, "error")
            return _error(500, "the controller failed (see the gateway log)")
        reason = getattr(result, "reason", None)
        reason = None if result.ok or reason is None else str(reason)
        self.counters.bump(self.counters.commands, "ok" if result.ok else reason or "refused")
        status = 200 if result.ok else REFUSAL_STATUS.get(reason or "", 403)
        body = {"ok": result.ok, "detail": result.detail, "answer": result.answer}
        if not result.ok:
            body["reason"] = reason or "refused"
        return JSONResponse(body, status_code=status, headers={"cache-control": "no-store"})

    async def metrics(self, request: Request) -> Response:
        if not self.settings.public_metrics and self.user(request) is None:
            return _error(401, "login required")
        return Response(metrics.render(self.registry), media_type=metrics.CONTENT_TYPE)

    async def healthz(self, request: Request) -> Response:
        states = [e.state.value for e in self.state.instruments.values()]
        body = {
            "status": "ok",
            "instruments": {"online": states.count("online"), "offline": states.count("offline")},
        }
        return JSONResponse(body, headers={"cache-control": "no-store"})

    # -- live stream -------------------------------------------------------------------------

    async def live(self, websocket: WebSocket) -> None:
        """Authenticate, send the hello, then batches of events until either side leaves."""
        user = self.user(websocket)
        if user is None:
            await websocket.close(code=1008)  # before accept: the upgrade gets 403
            return
        token = self._token(websocket)
        await websocket.accept()
        slot = next(i for i in itertools.count(1) if i not in self._slots)
        self._slots.add(slot)
        name = f"{SUBSCRIBER}:{slot}"
        code: int | None = None
        scope = anyio.CancelScope()
        self._clients.add(scope)
        self.counters.clients += 1
        try:
            with scope:
                code = 1001  # cancelled by close_clients: the server is going away
                async with (
                    self.hub.subscribe(name, maxsize=self.client_queue) as events,
                    anyio.create_task_group() as tg,
                ):
                    tg.start_soon(_watch_client, websocket, tg.cancel_scope)
                    code = await self._stream(websocket, user, token, name, events)
                    tg.cancel_scope.cancel()
            if code is not None and websocket.client_state == WebSocketState.CONNECTED:
                with anyio.move_on_after(self.send_timeout, shield=True):
                    try:
                        await websocket.close(code)
                    except (WebSocketDisconnect, OSError, RuntimeError):
                        pass
        finally:
            self._clients.discard(scope)
            self._slots.discard(slot)
            self.counters.clients -= 1
            self._drained.set()

    async def _stream(
        self,
        websocket: WebSocket,
        user: User,
        token: str | None,
        name: str,
        events: ObjectReceiveStream[Event],
    ) -> int | None:
        """Send until the session ends (4401), the client stalls (1008) or leaves (None)."""
        try:
            with anyio.fail_after(self.send_timeout):
                await websocket.send_text(json.dumps({"type": "hello", **self._hello(user)}))
            async for first in events:
                batch = _drain(first, events)
                if self.sessions.get(token) is None:
                    return 4401  # logged out or expired meanwhile
                message = {
                    "type": "batch",
                    "events": [event_json(e) for e in batch],
                    "dropped": _dropped(self.hub, name),
                }
                with anyio.fail_after(self.send_timeout):
                    await websocket.send_text(json.dumps(message))
                await anyio.sleep(BATCH_INTERVAL)  # pacing: later readings conflate
        except TimeoutError:
            log.warning("closing a WebSocket client of %s that stopped reading", user.name)
            return 1008
        except (WebSocketDisconnect, OSError, RuntimeError):
            return None
        return 1001


def _drain(first: Event, events: ObjectReceiveStream[Event]) -> list[Event]:
    """``first`` and whatever else is queued, readings conflated to the newest per channel."""
    batch: list[Event] = [first]
    receive_nowait = getattr(events, "receive_nowait", None)  # memory object streams have it
    while receive_nowait is not None and len(batch) < MAX_BATCH:
        try:
            batch.append(receive_nowait())
        except anyio.WouldBlock:
            break
    latest: dict[str, int] = {}
    for index, event in enumerate(batch):
        if isinstance(event, Reading):
            latest[event.path] = index
    return [e for i, e in enumerate(batch) if not isinstance(e, Reading) or latest[e.path] == i]


def _dropped(hub: Hub, name: str) -> int:
    try:
        return hub.dropped(name)
    except KeyError:
        return 0


async def _watch_client(websocket: WebSocket, scope: anyio.CancelScope) -> None:
    """The client sends nothing we need; this notices when it leaves and stops the stream."""
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
    except (WebSocketDisconnect, OSError, RuntimeError):
        pass
    finally:
        scope.cancel()


def _valid_value(value: Any) -> bool:
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, int):
        return abs(value) < 1 << 63
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str) and len(value) <= MAX_TEXT


async def _read_body(request: Request) -> bytes:
    """The request body, refused (413) beyond :data:`MAX_BODY` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        raise BadRequest(f"body larger than {MAX_BODY} bytes", 413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise BadRequest(f"body larger than {MAX_BODY} bytes", 413)
    return bytes(body)


def _page(name: str, *, status: int = 200, error: str = "", **headers: str) -> Response:
    html = _asset(name).decode("utf-8")
    html = html.replace("<!--error-->", escape(error))
    headers = {"cache-control": "no-store", **headers}
    return Response(html, status_code=status, media_type="text/html", headers=headers)
