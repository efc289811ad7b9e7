"""The dashboard's HTTP and WebSocket surface, in-process (httpx ASGI transport).

asyncio only, like the gateway (the ``anyio_backend`` fixture in conftest.py).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest

from aiotmc.gateway.model import (
    Alert,
    AlertState,
    InstrumentState,
    Quality,
    Reading,
    StatusEvent,
)
from aiotmc.gateway.web.app import COOKIE, WebApp
from aiotmc.gateway.web.settings import User, WebSettings
from tests.gateway.web.conftest import (
    HOST,
    ORIGIN,
    PASSWORDS,
    FakeController,
    FakeHub,
    WebSocketRefused,
    make_app,
    running,
    websocket,
)


def http_client(web: WebApp, address: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=web.asgi, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url=ORIGIN)


@asynccontextmanager
async def client_for(web: WebApp) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's feed and give a client (from 127.0.0.1)."""
    async with running(web), http_client(web) as client:
        yield client


async def login(client: httpx.AsyncClient, name: str = "alice", **headers: str) -> httpx.Response:
    form = {"name": name, "password": PASSWORDS.get(name, "x")}
    return await client.post("/login", data=form, headers={"origin": ORIGIN, **headers})


def reading(value: float, seq: int = 1, channel: str = "voltage") -> Reading:
    return Reading("gw-test", seq, "lab", "bench1", "dmm", channel, value, "V", time.time())


# -- login ---------------------------------------------------------------------------------------


async def test_login_sets_a_strict_httponly_cookie_and_opens_the_dashboard(web: WebApp) -> None:
    async with client_for(web) as client:
        before = await client.get("/")
        response = await login(client)
        page = await client.get("/")
        me = await client.get("/api/me")
    assert (before.status_code, before.headers["location"]) == (303, "/login")
    assert (response.status_code, response.headers["location"]) == (303, "/")
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    for attribute in ("HttpOnly", "SameSite=strict", "Path=/"):
        assert attribute.lower() in cookie.lower()
    assert "secure" not in cookie.lower()  # plain http here; Secure over https
    assert page.status_code == 200 and '<script src="/static/app.js"' in page.text
    assert me.json() == {"user": "alice", "roles": ["operator"]}
    assert web.counters.logins == {"ok": 1}


@pytest.mark.parametrize(
    ("name", "password"), [("alice", "wrong"), ("mallory", "alice-secret"), ("alice", "")]
)
async def test_wrong_credentials_are_refused(web: WebApp, name: str, password: str) -> None:
    async with client_for(web) as client:
        page = await client.post(
            "/login", data={"name": name, "password": password}, headers={"origin": ORIGIN}
        )
        api = await client.post("/api/token", json={"name": name, "password": password})
        me = await client.get("/api/me")
    assert page.status_code == 401
    assert "wrong name or password" in page.text  # shown on the login form
    assert COOKIE not in page.headers.get("set-cookie", "")
    assert (api.status_code, api.json()) == (401, {"error": "wrong name or password"})
    assert me.status_code == 401


async def test_logins_are_rate_limited_per_client_address(
    hub: FakeHub, users: tuple[User, ...]
) -> None:
    web = make_app(hub, users, login_attempts=3, login_window=600)
    async with (
        running(web),
        http_client(web, "10.0.0.7") as attacker,
        http_client(web, "10.0.0.8") as other,
    ):
        wrong = {"name": "alice", "password": "guess"}
        codes = [(await attacker.post("/api/token", json=wrong)).status_code for _ in range(3)]
        # the budget is spent: even the right password is refused now, before any hashing
        limited = await attacker.post("/api/token", json={**wrong, "password": "alice-secret"})
        page = await login(attacker)
        elsewhere = await other.post(
            "/api/token", json={"name": "alice", "password": "alice-secret"}
        )
    assert codes == [401, 401, 401]
    assert limited.status_code == 429
    assert 0 < int(limited.headers["retry-after"]) <= 600
    assert page.status_code == 429 and "too many login attempts" in page.text
    assert elsewhere.status_code == 200  # another address has its own budget
    assert web.counters.logins == {"failed": 3, "limited": 2, "ok": 1}


async def test_malformed_login_bodies(web: WebApp) -> None:
    async with client_for(web) as client:
        text = await client.post("/api/token", content=b"x", headers={"content-type": "text/plain"})
        junk = await client.post(
            "/api/token", content=b"{", headers={"content-type": "application/json"}
        )
        huge = await client.post("/api/token", json={"name": "a", "password": "p" * 10000})
    assert (text.status_code, junk.status_code, huge.status_code) == (415, 400, 413)


async def test_logout_ends_the_session_even_for_a_replayed_cookie(web: WebApp) -> None:
    async with client_for(web) as client:
        await login(client)
        token = client.cookies[COOKIE]
        out = await client.post("/logout", headers={"origin": ORIGIN})
        client.cookies.set(COOKIE, token)  # an attacker kept a copy
        me = await client.get("/api/me")
    assert (out.status_code, out.headers["location"]) == (303, "/login")
    assert me.status_code == 401
    assert len(web.sessions) == 0


async def test_forged_session_cookies_are_refused(web: WebApp) -> None:
    async with client_for(web) as client:
        await login(client)
        session_id, _, signature = client.cookies[COOKIE].partition(".")
        client.cookies.set(COOKIE, f"{session_id}.{signature[:-2]}AA")
        forged = await client.get("/api/me")
        client.cookies.set(COOKIE, session_id)
        unsigned = await client.get("/api/me")
    assert (forged.status_code, unsigned.status_code) == (401, 401)


async def test_bearer_tokens_for_api_clients(web: WebApp, hub: FakeHub) -> None:
    async with client_for(web) as client:
        # a script: no browser, no Origin, no cookie
        token = (
            await client.post("/api/token", json={"name": "alice", "password": "alice-secret"})
        ).json()["token"]
        auth = {"authorization": f"Bearer {token}"}
        me = await client.get("/api/me", headers=auth)
        command = await client.post(
            "/api/command",
            json={"instrument": "psu", "operation": "set_voltage", "value": 5},
            headers=auth,
        )
    assert me.json()["user"] == "alice"
    assert command.json() == {"ok": True, "detail": "executed", "answer": "5"}


# -- the guard: Host allow-list and Origin checks ------------------------------------------------


async def test_a_foreign_host_is_refused(web: WebApp) -> None:
    """DNS rebinding: evil.example resolves to us, but its requests say so in Host."""
    async with client_for(web) as client:
        page = await client.get("/login", headers={"host": "evil.example"})
        with_port = await client.get("/login", headers={"host": f"{HOST}:8080"})
        login_there = await client.post(
            "/login",
            data={"name": "alice", "password": "alice-secret"},
            headers={"host": "evil.example", "origin": "http://evil.example"},
        )
    assert page.status_code == 400 and "not allowed" in page.text
    assert with_port.status_code == 200
    assert login_there.status_code == 400
    assert web.counters.refused == {"host": 2}


async def test_cross_site_requests_are_refused(web: WebApp, hub: FakeHub) -> None:
    command = {"instrument": "psu", "operation": "set_voltage", "value": 1}
    async with client_for(web) as client:
        await login(client)
        foreign = await client.post(
            "/api/command", json=command, headers={"origin": "http://evil.example"}
        )
        null = await client.post("/api/command", json=command, headers={"origin": "null"})
        referer = await client.post(
            "/api/command", json=command, headers={"referer": "http://evil.example/page"}
        )
        # the cookie without Origin or Referer: a browser whose headers were stripped
        bare = await client.post("/api/command", json=command)
        fetch_site = await client.post(
            "/api/token",
            json={"name": "alice", "password": "alice-secret"},
            headers={"sec-fetch-site": "cross-site"},
        )
        login_csrf = await login(client, origin="http://evil.example")
        logout_csrf = await client.post("/logout", headers={"origin": "http://evil.example"})
        same_origin = await client.post("/api/command", json=command, headers={"origin": ORIGIN})
        same_referer = await client.post(
            "/api/command", json=command, headers={"referer": f"{ORIGIN}/"}
        )
    for response in (foreign, null, referer, bare, fetch_site, login_csrf, logout_csrf):
        assert response.status_code == 403, response.text
    assert same_origin.json()["ok"] and same_referer.json()["ok"]
    # only the two same-origin commands reached the controller
    assert len(hub.controller.requests) == 2


async def test_extra_allowed_origins(hub: FakeHub, users: tuple[User, ...]) -> None:
    web = make_app(hub, users, allowed_origins=("https://dash.example.org",))
    async with client_for(web) as client:
        await login(client)
        listed = await client.post("/logout", headers={"origin": "https://dash.example.org:443"})
        other = await client.post("/logout", headers={"origin": "https://other.example.org"})
    assert (listed.status_code, other.status_code) == (303, 403)


async def test_security_headers(web: WebApp) -> None:
    async with client_for(web) as client:
        page = await client.get("/login")
        script = await client.get("/static/app.js")
        missing = await client.get("/static/..%2fapp.py")
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert script.headers["content-type"].startswith("text/javascript")
    assert "new WebSocket" in script.text
    assert missing.status_code == 404


# -- control -------------------------------------------------------------------------------------


async def test_commands_go_to_the_controller_with_user_and_roles(web: WebApp, hub: FakeHub) -> None:
    async with client_for(web) as client:
        await login(client)
        headers = {"origin": ORIGIN}
        permitted = await client.post(
            "/api/command",
            json={"instrument": "psu", "operation": "set_voltage", "value": 12.5},
            headers=headers,
        )
        too_high = await client.post(
            "/api/command",
            json={"instrument": "psu", "operation": "set_voltage", "value": 50},
            headers=headers,
        )
        raw = await client.post(
            "/api/command",
            json={"instrument": "psu", "operation": "scpi", "value": "*RST"},
            headers=headers,
        )
        malformed = await client.post(
            "/api/command", json={"instrument": "", "operation": "x"}, headers=headers
        )
        bad_value = await client.post(
            "/api/command",
            json={"instrument": "psu", "operation": "set_voltage", "value": [1]},
            headers=headers,
        )
    assert permitted.json() == {"ok": True, "detail": "executed", "answer": "12.5"}
    assert too_high.status_code == 422  # the controller's reason decides the status
    assert too_high.json() == {
        "ok": False,
        "detail": "set_voltage 50: outside 0..30 V",
        "answer": None,
        "reason": "out_of_limits",
    }
    assert (raw.status_code, raw.json()["reason"]) == (403, "not_allowed")
    assert (malformed.status_code, bad_value.status_code) == (400, 400)
    first = hub.controller.requests[0]
    assert (first.user, first.roles, first.source) == ("alice", ("operator",), "web")
    assert (first.instrument, first.operation, first.value) == ("psu", "set_voltage", 12.5)
    assert web.counters.commands == {"ok": 1, "out_of_limits": 1, "not_allowed": 1}


async def test_a_viewer_is_refused_and_anonymous_gets_401(web: WebApp, hub: FakeHub) -> None:
    command = {"instrument": "psu", "operation": "set_voltage", "value": 1}
    async with client_for(web) as client:
        anonymous = await client.post("/api/command", json=command, headers={"origin": ORIGIN})
        await login(client, "bob")
        viewer = await client.post("/api/command", json=command, headers={"origin": ORIGIN})
    assert anonymous.status_code == 401
    assert viewer.status_code == 403 and "may not control" in viewer.json()["detail"]
    assert [r.user for r in hub.controller.requests] == ["bob"]


async def test_roles_from_the_controllers_config_count_too(web: WebApp, hub: FakeHub) -> None:
    """The controller's [[roles]] may name users (``roles_of``): the web sends both."""

    class NamingController(FakeController):
        def roles_of(self, user: str) -> tuple[str, ...]:
            return ("operator", "auditor") if user == "bob" else ()

    hub.controller = NamingController()
    async with client_for(web) as client:
        await login(client, "bob")
        me = (await client.get("/api/me")).json()
        result = await client.post(
            "/api/command",
            json={"instrument": "psu", "operation": "set_voltage", "value": 3},
            headers={"origin": ORIGIN},
        )
    assert me["roles"] == ["viewer", "operator", "auditor"]
    assert result.json()["ok"] is True
    assert hub.controller.requests[0].roles == ("viewer", "operator", "auditor")


async def test_a_failing_controller_is_a_500_not_a_crash(web: WebApp, hub: FakeHub) -> None:
    class Broken:
        async def execute(self, request: Any) -> Any:
            raise RuntimeError("boom")

    hub.controller = Broken()
    async with client_for(web) as client:
        await login(client)
        response = await client.post(
            "/api/command",
            json={"instrument": "psu", "operation": "set_voltage", "value": 1},
            headers={"origin": ORIGIN},
        )
        alive = await client.get("/healthz")
    assert response.status_code == 500
    assert "boom" not in response.text  # details go to the log, not to the browser
    assert alive.status_code == 200


# -- live view -----------------------------------------------------------------------------------


async def _cookie_headers(client: httpx.AsyncClient) -> dict[str, str]:
    await login(client)
    return {"host": HOST, "origin": ORIGIN, "cookie": f"{COOKIE}={client.cookies[COOKIE]}"}


async def test_websocket_sends_a_snapshot_then_live_events(web: WebApp, hub: FakeHub) -> None:
    async with client_for(web) as client:
        headers = await _cookie_headers(client)
        await hub.publish(StatusEvent("dmm", InstrumentState.ONLINE, time.time()))
        await hub.publish(reading(4.5))
        with anyio.fail_after(5):
            while "lab/bench1/dmm/voltage" not in web.state.values:  # the feed caught up
                await anyio.wait_all_tasks_blocked()
            async with websocket(web.asgi, headers) as ws:
                hello = await ws.receive_json()
                await hub.wait_subscribers(2)
                for seq in range(2, 7):  # five readings of one channel: conflated
                    await hub.publish(reading(5.0 + seq, seq))
                alert = Alert(
                    "overvoltage", "dmm", "voltage", AlertState.FIRING, "critical",
                    "dmm voltage above 10 V", time.time(), 11.0, {"site": "lab"},
                )  # fmt: skip
                await hub.publish(alert)
                events: list[dict[str, Any]] = []
                while not any(e["type"] == "alert" for e in events):
                    batch = await ws.receive_json()
                    assert batch["type"] == "batch"
                    events += batch["events"]
    assert hello["type"] == "hello" and hello["user"] == "alice"
    assert hello["gateway"] == {"id": "gw-test", "site": "lab", "host": "bench1"}
    assert hello["instruments"]["dmm"]["state"] == "online"
    assert [v["value"] for v in hello["values"]] == [4.5]
    # the five readings were queued before the stream woke: one batch, the newest only
    readings = [e for e in events if e["type"] == "reading"]
    assert [(r["seq"], r["value"]) for r in readings] == [(6, 11.0)]
    assert events[-1] == {
        "type": "alert",
        "rule": "overvoltage",
        "instrument": "dmm",
        "channel": "voltage",
        "state": "firing",
        "severity": "critical",
        "summary": "dmm voltage above 10 V",
        "timestamp": alert.timestamp,
        "value": 11.0,
        "labels": {"site": "lab"},
    }


async def test_websocket_needs_a_session_and_the_own_origin(web: WebApp) -> None:
    async with client_for(web) as client:
        headers = await _cookie_headers(client)
        refused = []
        for changed in (
            {"origin": "http://evil.example"},  # cross-site WebSocket hijacking
            {"origin": "null"},
            {"host": "evil.example", "origin": "http://evil.example"},  # rebinding
            {"cookie": f"{COOKIE}=forged.value"},
        ):
            with pytest.raises(WebSocketRefused):
                async with websocket(web.asgi, {**headers, **changed}):
                    pass  # pragma: no cover
            refused.append(changed)
        without_origin = {k: v for k, v in headers.items() if k != "origin"}
        with pytest.raises(WebSocketRefused):  # the cookie, but no Origin: not a browser page
            async with websocket(web.asgi, without_origin):
                pass  # pragma: no cover
    assert len(refused) == 4
    assert web.counters.refused == {"origin": 3, "host": 1}


async def test_websocket_closes_when_the_session_ends(web: WebApp, hub: FakeHub) -> None:
    async with client_for(web) as client:
        headers = await _cookie_headers(client)
        with anyio.fail_after(5):
            async with websocket(web.asgi, headers) as ws:
                await ws.receive_json()
                await client.post("/logout", headers={"origin": ORIGIN})
                await hub.publish(reading(1.0))
                with pytest.raises(ConnectionError, match="4401"):
                    await ws.receive_json()


async def test_a_client_that_stops_reading_is_dropped(
    hub: FakeHub, users: tuple[User, ...], caplog: pytest.LogCaptureFixture
) -> None:
    web = WebApp(hub, WebSettings(allowed_hosts=(HOST,)), users, send_timeout=0.2)
    async with client_for(web) as client:
        headers = await _cookie_headers(client)
        async with websocket(web.asgi, headers, buffer=0) as ws:
            with anyio.fail_after(10):
                await hub.wait_subscribers(2)  # the feed and this client
                # it reads nothing: the hello cannot be sent; after send_timeout the
                # handler gives up, unsubscribes and ends
                await hub.wait_subscribers(1)
                # all it may still get is a close frame (1008), if it takes it in time
                late = [message async for message in ws.from_app]
        assert late in ([], [{"type": "websocket.close", "code": 1008, "reason": ""}])
        assert web.counters.clients == 0
    assert "stopped reading" in caplog.text


async def test_login_page_when_logged_in_goes_to_the_dashboard(web: WebApp) -> None:
    async with client_for(web) as client:
        await login(client)
        response = await client.get("/login")
    assert (response.status_code, response.headers["location"]) == (303, "/")


async def test_api_state_snapshot(web: WebApp, hub: FakeHub) -> None:
    async with client_for(web) as client:
        await login(client)
        await hub.publish(reading(float("nan"), 1, "bad"))
        with anyio.fail_after(5):
            while not web.state.values:
                await anyio.wait_all_tasks_blocked()
        state = (await client.get("/api/state")).json()
    # JSON has no NaN: it travels as a string
    assert [(v["channel"], v["value"]) for v in state["values"]] == [("bad", "nan")]


# -- health and metrics --------------------------------------------------------------------------


async def test_healthz_is_public(web: WebApp, hub: FakeHub) -> None:
    async with client_for(web) as client:
        await hub.publish(StatusEvent("dmm", InstrumentState.ONLINE, time.time()))
        await hub.publish(StatusEvent("psu", InstrumentState.OFFLINE, time.time(), "timeout"))
        with anyio.fail_after(5):
            while len(web.state.instruments) < 2:
                await anyio.wait_all_tasks_blocked()
        response = await client.get("/healthz")
    assert response.json() == {"status": "ok", "instruments": {"online": 1, "offline": 1}}


async def test_private_metrics_need_a_login(hub: FakeHub, users: tuple[User, ...]) -> None:
    web = make_app(hub, users, public_metrics=False)
    async with client_for(web) as client:
        anonymous = await client.get("/metrics")
        await login(client)
        logged_in = await client.get("/metrics")
    assert (anonymous.status_code, logged_in.status_code) == (401, 200)


def test_quality_is_carried(web: WebApp) -> None:
    r = Reading("g", 1, "s", "h", "i", "c", "x", "", 0.0, Quality.BAD)
    web.state.apply(r)
    assert web.state.readings == {("i", "c", "bad"): 1}
