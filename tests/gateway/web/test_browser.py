"""End to end: the web component served by uvicorn on loopback, used by a real headless
Chromium (driven over the DevTools pipe, tests/_chromium.py).

One browser session: log in, see live values of a simulated DMM, set a simulated power
supply's voltage through the gateway's real controller (permitted), try a voltage beyond
its limit (refused, and shown so; both in the audit log), and see an alert published to
the hub appear. The same running server also answers a few
real-socket checks (foreign Host, foreign-origin WebSocket, health).

asyncio only, like the gateway; Chromium missing is a skip, or a failure with ``CI=true``.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

import aiotmc
from aiotmc.gateway import control
from aiotmc.gateway.model import Alert, AlertState, InstrumentState, Reading, StatusEvent
from aiotmc.gateway.web.component import WebComponent
from aiotmc.gateway.web.settings import User, WebSettings
from aiotmc.sim.devices import create_device
from tests._chromium import DevTools, headless_chromium, require_chromium
from tests.gateway.web.conftest import PASSWORDS, FakeHub

# The real controller: operators may set the supply's voltage within 0..30 V.
CONTROL = """
[control]
audit_log = "audit.jsonl"

[[control.operations]]
name = "set_voltage"
instruments = ["psu"]
command = "VOLT {value}"
type = "float"
min = 0.0
max = 30.0
unit = "V"
readback = "VOLT?"

[[roles]]
name = "operator"
users = ["alice"]
allow = ["set_voltage"]
"""

# Resolves with CHECK()'s first truthy result; re-checked on every DOM change (no polling).
WAIT = """
new Promise((resolve) => {
  const check = () => {
    const result = (%s)();
    if (result) { observer.disconnect(); resolve(result); }
  };
  const observer = new MutationObserver(check);
  observer.observe(document.body, {subtree: true, childList: true, characterData: true,
                                   attributes: true});
  check();
})
"""

LIVE = (
    WAIT
    % """() => {
  const row = document.getElementById("value-lab/bench1/dmm/voltage");
  const dmm = document.getElementById("instrument-dmm");
  const conn = document.getElementById("conn").textContent;
  if (!row || !dmm || dmm.dataset.state !== "online" || conn !== "live") return null;
  const value = row.children[2].textContent;
  return /^[0-9.]+$/.test(value) ? {value, unit: row.children[3].textContent,
    user: document.getElementById("user").textContent} : null;
}"""
)

COMMAND = """(() => {
  const before = document.querySelectorAll("#results li").length;
  document.getElementById("control-instrument").value = %s;
  document.getElementById("control-operation").value = %s;
  document.getElementById("control-value").value = %s;
  document.getElementById("control-submit").click();
  return %s;
})()"""

NEW_RESULT = (
    WAIT
    % """() => {
  const items = document.querySelectorAll("#results li");
  return items.length > before ? {state: items[0].className, text: items[0].textContent} : null;
}"""
)

ALERT = (
    WAIT
    % """() => {
  const item = document.getElementById("alert-overvoltage/dmm/voltage");
  return item && item.dataset.state === "firing" ? item.textContent : null;
}"""
)


def login_script(name: str, password: str) -> str:
    return f"""(() => {{
      document.getElementById("name").value = {json.dumps(name)};
      document.getElementById("password").value = {json.dumps(password)};
      document.getElementById("login-submit").click();
      return location.pathname;
    }})()"""


def command(instrument: str, operation: str, value: str) -> str:
    quoted = (json.dumps(instrument), json.dumps(operation), json.dumps(value))
    return COMMAND % (*quoted, NEW_RESULT.strip())  # no newline after "return"


async def acquire(hub: FakeHub, dmm: aiotmc.Instrument, period: float) -> None:
    """A stand-in for the gateway's source: read the simulated DMM every ``period``."""
    now = time.time()
    for name in ("dmm", "psu"):
        await hub.publish(StatusEvent(name, InstrumentState.ONLINE, now))
    for seq in range(1, 100_000):
        value = float(await dmm.query("MEAS:VOLT:DC?"))
        reading = Reading(
            "gw-test", seq, "lab", "bench1", "dmm", "voltage", value, "V", time.time()
        )
        await hub.publish(reading)
        await anyio.sleep(period)  # the acquisition period, not synchronisation


def drive(
    chromium: str, workdir: Path, url: str, raise_alert: Callable[[], None]
) -> dict[str, Any]:
    """The browser session (blocking: runs in a worker thread beside the server)."""
    seen: dict[str, Any] = {}
    with headless_chromium(chromium, workdir) as cdp:
        target = cdp.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        attached = cdp.call("Target.attachToTarget", {"targetId": target, "flatten": True})
        session = attached["sessionId"]

        def evaluate(expression: str) -> Any:
            return cdp.evaluate(expression, session=session)

        cdp.call("Page.enable", session=session)
        cdp.call("Page.navigate", {"url": url}, session=session)
        cdp.wait_event("Page.loadEventFired", session=session)
        seen["first_page"] = evaluate("location.pathname")
        evaluate(login_script("alice", PASSWORDS["alice"]))
        cdp.wait_event("Page.loadEventFired", session=session)
        seen["after_login"] = evaluate("location.pathname")
        seen["cookie_visible_to_js"] = evaluate("document.cookie")
        seen["live"] = evaluate(LIVE)
        seen["permitted"] = evaluate(command("psu", "set_voltage", "5"))
        seen["refused"] = evaluate(command("psu", "set_voltage", "50"))
        raise_alert()
        seen["alert"] = evaluate(ALERT)
        _screenshot(cdp, session, workdir)
    return seen


def _screenshot(cdp: DevTools, session: str, workdir: Path) -> None:
    shot = cdp.call("Page.captureScreenshot", {"format": "png"}, session=session)
    png = base64.b64decode(shot["data"])
    assert png.startswith(b"\x89PNG")
    (workdir / "gateway-dashboard.png").write_bytes(png)
    if keep := os.environ.get("AIOTMC_GATEWAY_SCREENSHOT"):
        Path(keep).write_bytes(png)


async def test_dashboard_in_headless_chromium(
    tmp_path: Path, users: tuple[User, ...], caplog: pytest.LogCaptureFixture
) -> None:
    chromium = require_chromium()
    caplog.set_level(logging.INFO, logger="aiotmc.gateway.web")
    dmm_device = create_device("dmm")
    async with (
        aiotmc.open("SIM::dmm::web-e2e", device=dmm_device) as dmm,
        aiotmc.open("SIM::psu::web-e2e", device=create_device("psu")) as psu,
    ):
        controller = control.from_config(
            tomllib.loads(CONTROL),
            instrument_for=lambda name: psu if name == "psu" else None,
            data_dir=tmp_path,
        )
        hub = FakeHub(controller=controller)
        component = WebComponent(WebSettings(port=0), users)
        alert = Alert(
            "overvoltage", "dmm", "voltage", AlertState.FIRING, "critical",
            "dmm voltage above 4 V", time.time(), 5.0, {"site": "lab"},
        )  # fmt: skip

        def raise_alert() -> None:
            anyio.from_thread.run(hub.publish, alert)

        stop = anyio.Event()

        async def serve(*, task_status: Any) -> None:
            async with anyio.create_task_group() as server:
                await server.start(component.run, hub)
                task_status.started()
                await stop.wait()
                server.cancel_scope.cancel()  # what the gateway does on shutdown

        async with anyio.create_task_group() as tg:
            with anyio.fail_after(20):
                await tg.start(serve)
            url = component.url
            tg.start_soon(acquire, hub, dmm, 0.1)
            with anyio.fail_after(120):
                seen = await anyio.to_thread.run_sync(drive, chromium, tmp_path, url, raise_alert)
                checks = await real_socket_checks(url)
                checks["shutdown_close"] = await shutdown_with_a_live_client(url, stop)
            tg.cancel_scope.cancel()
        assert component.bound is None  # stopped and unbound
        voltage = float(await psu.query("VOLT?"))

    assert url.startswith("http://127.0.0.1:")
    assert any("loopback only" in r.getMessage() for r in caplog.records)
    assert (seen["first_page"], seen["after_login"]) == ("/login", "/")
    assert seen["cookie_visible_to_js"] == ""  # HttpOnly
    assert seen["live"]["unit"] == "V" and seen["live"]["user"] == "alice"
    assert seen["permitted"]["state"] == "ok"
    assert "done: psu set_voltage 5" in seen["permitted"]["text"]
    assert seen["refused"]["state"] == "refused"
    assert seen["refused"]["text"].startswith("refused: psu set_voltage 50: ")
    assert "critical" in seen["alert"] and "dmm voltage above 4 V" in seen["alert"]
    assert voltage == 5.0  # the permitted command reached the instrument, the refused did not
    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [(a["user"], a["source"], a["value"], a["ok"], a["reason"]) for a in audit] == [
        ("alice", "web", 5, True, None),
        ("alice", "web", 50, False, "out_of_limits"),
    ]
    assert checks == {
        "healthz": 200,
        "foreign_host": 400,
        "foreign_ws": 403,
        "anonymous_ws": 403,
        "shutdown_close": 1001,  # a live stream is told "going away" when the gateway stops
    }


async def real_socket_checks(url: str) -> dict[str, int]:
    """What a real socket gets: health, a rebinding Host, foreign and anonymous WebSockets."""
    results = {}
    async with httpx.AsyncClient(base_url=url) as client:
        results["healthz"] = (await client.get("/healthz")).status_code
        rebound = await client.get("/", headers={"host": "evil.example"})
        results["foreign_host"] = rebound.status_code
    ws_url = url.replace("http://", "ws://") + "ws"
    for name, origin in (("foreign_ws", "http://evil.example"), ("anonymous_ws", url[:-1])):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url, origin=origin):  # type: ignore[arg-type]
                pass  # pragma: no cover
        results[name] = refused.value.response.status_code
    return results


async def shutdown_with_a_live_client(url: str, stop: anyio.Event) -> int:
    """A script holding the live stream (bearer token, no Origin) while the server stops:
    the close code it gets."""
    async with httpx.AsyncClient(base_url=url) as client:
        credentials = {"name": "alice", "password": PASSWORDS["alice"]}
        token = (await client.post("/api/token", json=credentials)).json()["token"]
    ws_url = url.replace("http://", "ws://") + "ws"
    async with connect(ws_url, additional_headers={"authorization": f"Bearer {token}"}) as ws:
        hello = json.loads(await ws.recv())
        assert hello["type"] == "hello" and hello["user"] == "alice"
        stop.set()
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await ws.recv()
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code
