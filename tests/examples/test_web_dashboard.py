"""The web dashboard example (examples/web_dashboard): ASGI tests on asyncio and trio, and one
end-to-end run in headless Chromium against the app served by uvicorn.

The ASGI tests drive the app in-process: :func:`running` speaks the ASGI lifespan protocol
(startup before, shutdown after, as a server would), HTTP goes through
``httpx.ASGITransport`` and :func:`websocket` is a minimal ASGI WebSocket client. All of it
is anyio, so every async test runs on both backends (``anyio_backend`` in conftest.py).
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

try:  # the "web" extra
    import httpx
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as exc:  # pragma: no cover
    if os.environ.get("CI", "").lower() == "true":
        raise
    pytest.skip(f"{exc.name} is not installed: pip install -e '.[web]'", allow_module_level=True)

from aiotmc.sim import SimServer, create_device
from examples.web_dashboard.app import (
    PROFILES,
    CommandRejected,
    Hub,
    Subscription,
    check_command,
    create_app,
)
from tests._chromium import headless_chromium, require_chromium, stopping

ROOT = Path(__file__).resolve().parents[2]
Message = dict[str, Any]


# -- ASGI plumbing --------------------------------------------------------------------------


@asynccontextmanager
async def running(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan around the block and yield an HTTP client for it."""
    to_app, app_inbox = anyio.create_memory_object_stream[Message](4)
    app_outbox, from_app = anyio.create_memory_object_stream[Message](4)
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
    with to_app, app_inbox, app_outbox, from_app:
        async with anyio.create_task_group() as tg:
            tg.start_soon(app, scope, app_inbox.receive, app_outbox.send)
            with anyio.fail_after(10):
                await to_app.send({"type": "lifespan.startup"})
                started = await from_app.receive()
            assert started["type"] == "lifespan.startup.complete", started
            try:
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(
                    transport=transport, base_url="http://localhost"
                ) as client:
                    yield client
            finally:
                with anyio.fail_after(10, shield=True):
                    await to_app.send({"type": "lifespan.shutdown"})
                    done = await from_app.receive()
                assert done["type"] == "lifespan.shutdown.complete", done


class WebSocketClosed(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(f"closed with code {code}")
        self.code = code


class AsgiWebSocket:
    """The client end of an in-process ASGI WebSocket."""

    def __init__(self, to_app: Any, from_app: Any) -> None:
        self._to_app = to_app
        self._from_app = from_app

    async def receive_json(self) -> Message:
        try:
            message = await self._from_app.receive()
        except anyio.EndOfStream:
            raise WebSocketClosed(1006) from None  # the handler ended without a close frame
        if message["type"] == "websocket.close":
            raise WebSocketClosed(message.get("code", 1000))
        assert message["type"] == "websocket.send", message
        return json.loads(message["text"])  # type: ignore[no-any-return]

    async def receive_until(self, *, readings: int = 0, srq: int = 0) -> list[Message]:
        """Messages until ``readings`` readings and ``srq`` service requests arrived."""
        got: list[Message] = []
        while (
            sum(m["type"] == "reading" for m in got) < readings
            or sum(m["type"] == "srq" for m in got) < srq
        ):
            got.append(await self.receive_json())
        return got


def ws_scope(path: str = "/ws", origin: str = "http://localhost") -> Message:
    """The ASGI scope of a WebSocket connection to ``path`` from a page on ``origin``."""
    return {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "scheme": "ws",
        "server": ("localhost", 80),
        "client": ("127.0.0.1", 50000),
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"localhost"), (b"origin", origin.encode())],
        "subprotocols": [],
        "state": {},
    }


@asynccontextmanager
async def websocket(
    app: Any, path: str = "/ws", *, buffer: int = 64, origin: str = "http://localhost"
) -> AsyncIterator[Any]:
    """Connect to ``path``; the app task must end by itself after the client leaves."""
    to_app, app_inbox = anyio.create_memory_object_stream[Message](16)
    app_outbox, from_app = anyio.create_memory_object_stream[Message](buffer)
    with to_app, app_inbox, from_app:
        scope = ws_scope(path, origin)

        async def run_app() -> None:
            with app_outbox:  # the client sees the end of the stream when the handler returns
                await app(scope, app_inbox.receive, app_outbox.send)

        async with anyio.create_task_group() as tg:
            tg.start_soon(run_app)
            await to_app.send({"type": "websocket.connect"})
            with anyio.fail_after(5):
                accepted = await from_app.receive()
            assert accepted["type"] == "websocket.accept", accepted
            client = AsgiWebSocket(to_app, from_app)
            try:
                yield client
            finally:
                to_app.send_nowait({"type": "websocket.disconnect", "code": 1000})
                with anyio.fail_after(5, shield=True):
                    # the handler must notice the disconnect and return, not linger
                    async for _ in from_app:
                        pass


# -- unit: allow-list and backpressure --------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    ["MEAS:VOLT?", "meas:volt?", "  MEAS:VOLT? ", ":MEAS:VOLT?", "*IDN?", "*idn?"],
)
def test_allowed_commands_pass(command: str) -> None:
    assert check_command(command, PROFILES["dmm"].allow) == command.strip()


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        ("*RST", "does not end in '?'"),
        ("CONF:VOLT 10", "does not end in '?'"),
        ("*IDN?;*RST", "compound"),
        ("*RST;*IDN?", "compound"),
        ("MEAS:VOLT?\n*RST", "printable ASCII"),
        ("SYST:ERR?", "allow-list"),
        ("*ESR?", "allow-list"),
        ("MEASure:VOLTage:DC?", "allow-list"),  # a legal spelling, but not the listed one
        ("MEAS:VOLT? 1000", "without parameters"),
        ("", "empty"),
        ("M" * 200 + "?", "longer than"),
        ("MEAS:VOLT\u00b5?", "printable ASCII"),
    ],
)
def test_rejected_commands(command: str, reason: str) -> None:
    with pytest.raises(CommandRejected, match=re.escape(reason)):
        check_command(command, PROFILES["dmm"].allow)


def test_every_listed_command_is_a_single_query() -> None:
    for profile in PROFILES.values():
        for command in profile.allow:
            assert check_command(command, profile.allow) == command


async def test_subscription_conflates_readings_and_bounds_events() -> None:
    hub = Hub(max_events=3)
    async with hub.subscribe() as fast, hub.subscribe() as slow:
        for seq in range(10):
            hub.publish({"type": "reading", "seq": seq}, conflate=True)
        for n in range(5):
            hub.publish({"type": "srq", "n": n})
        batch = await slow.next_batch()
        # events first, in order, up to the bound; then only the newest reading
        assert batch == [
            {"type": "srq", "n": 0},
            {"type": "srq", "n": 1},
            {"type": "srq", "n": 2},
            {"type": "reading", "seq": 9},
        ]
        assert (slow.skipped, slow.dropped) == (9, 2)
        assert len(await fast.next_batch()) == 4  # each subscriber has its own queue
        hub.close()
        assert await slow.next_batch() == []
    assert hub.subscribers == 0


async def test_wait_for_subscribers() -> None:
    hub = Hub()
    woke = anyio.Event()

    async def producer() -> None:
        await hub.wait_for_subscribers()
        woke.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(producer)
        await anyio.wait_all_tasks_blocked()
        assert not woke.is_set()
        async with hub.subscribe():
            with anyio.fail_after(5):
                await woke.wait()


async def test_closed_subscription_ends_empty() -> None:
    subscription = Subscription()
    subscription.offer({"type": "srq"}, conflate=False)
    subscription.close()
    subscription.offer({"type": "srq"}, conflate=False)  # ignored after close
    assert await subscription.next_batch() == [{"type": "srq"}]
    assert await subscription.next_batch() == []


# -- REST -------------------------------------------------------------------------------------


async def test_instruments_with_identity() -> None:
    async with running(create_app()) as client:
        response = await client.get("/api/instruments")
    assert response.status_code == 200
    body = response.json()
    by_name = {i["name"]: i for i in body["instruments"]}
    assert list(by_name) == ["dmm", "psu", "scope"]
    for name in by_name:
        info = by_name[name]
        assert info["online"] is True
        assert info["identity"]["manufacturer"] == "aiotmc"
        assert info["identity"]["model"] == f"SIM-{name.upper()}"
    assert by_name["scope"]["srq"] is True
    assert body["period"] == 0.2


async def test_homepage_is_self_contained() -> None:
    async with running(create_app()) as client:
        response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert "<canvas" in html and "new WebSocket" in html
    # no CDN or any other off-host resource: the bench PC may have no internet
    assert not re.search(r"""(src|href)=["']https?://""", html)


async def test_measurements() -> None:
    async with running(create_app()) as client:
        dmm = (await client.get("/api/instruments/dmm/measurement")).json()
        psu = (await client.get("/api/instruments/psu/measurement")).json()
        scope = (await client.get("/api/instruments/scope/measurement")).json()
        missing = await client.get("/api/instruments/nope/measurement")
    assert 3.7 < dmm["values"]["voltage"] < 6.3
    assert dmm["units"] == {"voltage": "V"}
    assert psu["values"] == {"voltage": 5.0, "current": 0.5}
    assert psu["units"] == {"voltage": "V", "current": "A"}
    assert scope["values"]["acquisitions"] >= 0
    assert missing.status_code == 404
    assert "known: dmm, psu, scope" in missing.json()["error"]


async def test_every_allowed_query_answers() -> None:
    """Each allow-listed command is real SCPI for the simulated model (no timeouts)."""
    async with running(create_app(timeout=1.0)) as client:
        for name in ("dmm", "psu", "scope"):
            for command in PROFILES[name].allow:
                response = await client.post(
                    f"/api/instruments/{name}/query", json={"command": command}
                )
                assert response.status_code == 200, (name, command, response.text)
                assert response.json()["response"] != ""


async def test_query_rules() -> None:
    async with running(create_app()) as client:

        async def ask(name: str, body: Any) -> httpx.Response:
            return await client.post(f"/api/instruments/{name}/query", json=body)

        ok = await ask("psu", {"command": "*IDN?"})
        assert ok.status_code == 200
        assert ok.json()["response"] == "aiotmc,SIM-PSU,0001,0.1"
        assert ok.json()["command"] == "*IDN?"

        write = await ask("psu", {"command": "OUTP1 OFF"})
        assert write.status_code == 403
        assert "does not end in '?': only queries" in write.json()["error"]

        sneaky = await ask("psu", {"command": "*IDN?;:OUTP1 OFF"})
        assert sneaky.status_code == 403
        assert "compound" in sneaky.json()["error"]

        unlisted = await ask("dmm", {"command": "SYST:ERR?"})
        assert unlisted.status_code == 403
        assert "not on this instrument's allow-list" in unlisted.json()["error"]
        assert "MEAS:VOLT?" in unlisted.json()["error"]  # tells what is allowed

        assert (await ask("ghost", {"command": "*IDN?"})).status_code == 404
        assert (await ask("psu", {"cmd": "*IDN?"})).status_code == 400
        assert (await ask("psu", ["*IDN?"])).status_code == 400
        raw = await client.post("/api/instruments/psu/query", content=b"*IDN?")
        assert raw.status_code == 400
        assert (await client.get("/api/instruments/psu/query")).status_code == 405

        # nothing rejected ever reached the instrument: its output is still on
        state = await ask("psu", {"command": "OUTP?"})
        assert state.json()["response"] == "1"


@pytest.mark.parametrize("attachment", ["sim", "tcp"])
async def test_concurrent_requests_to_one_instrument_are_serialized(attachment: str) -> None:
    """50 concurrent HTTP queries to one instrument, while the WebSocket stream also reads it:
    every response is the answer to its own request, and the instrument saw no interrupted
    query (IEEE 488.2 -410) or any other error."""
    psu = create_device("psu", latency=0.001)
    psu.write(b"APPL CH1,5.0,1.0;:OUTP1 ON\n")
    commands = ["*IDN?", "MEAS:VOLT?", "MEAS:CURR?", "CURR?", "INST?", "OUTP:MODE?", "APPL?"]
    async with SimServer(psu) as server:
        if attachment == "tcp":
            app = create_app({"psu": server.resource}, period=0.01)
        else:
            options = {"psu": {"device": psu}}
            app = create_app({"psu": "SIM::psu::concurrency"}, options=options, period=0.01)
        async with running(app) as client, websocket(app) as ws:

            async def ask(command: str) -> str:
                response = await client.post(
                    "/api/instruments/psu/query", json={"command": command}
                )
                assert response.status_code == 200, response.text
                return str(response.json()["response"])

            expected = {command: await ask(command) for command in commands}
            assert len(set(expected.values())) == len(commands), expected  # all distinct

            await ws.receive_until(readings=1)  # the stream is reading the PSU too
            order = [commands[i % len(commands)] for i in range(50)]
            random.Random(4).shuffle(order)
            answers: dict[int, str] = {}

            async def one(index: int, command: str) -> None:
                answers[index] = await ask(command)

            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:
                    for index, command in enumerate(order):
                        tg.start_soon(one, index, command)
            assert [answers[i] for i in range(50)] == [expected[c] for c in order]

            instrument = app.state.bench.group["psu"]
            assert await instrument.query("SYST:ERR?") == '+0,"No error"'


async def test_request_timeout_covers_waiting_in_line() -> None:
    """A request stuck behind a held instrument lock gets 504, not a hanging connection."""
    app = create_app(request_timeout=0.2)
    async with running(app) as client, anyio.create_task_group() as tg:
        instrument = app.state.bench.group["dmm"]
        held, release = anyio.Event(), anyio.Event()

        async def long_transaction() -> None:  # e.g. a calibration routine elsewhere
            async with instrument.lock():
                held.set()
                await release.wait()

        tg.start_soon(long_transaction)
        await held.wait()
        response = await client.post("/api/instruments/dmm/query", json={"command": "*IDN?"})
        assert response.status_code == 504
        assert "busy" in response.json()["error"]
        release.set()
        after = await client.post("/api/instruments/dmm/query", json={"command": "*IDN?"})
        assert after.status_code == 200  # the link is still in step
        assert after.json()["response"] == "aiotmc,SIM-DMM,0001,0.1"


async def test_offline_instrument_is_reported_not_fatal() -> None:
    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        port = reserved.getsockname()[1]
        app = create_app(
            {"dmm": "SIM::dmm::offline-test", "ghost": f"TCPIP0::127.0.0.1::{port}::SOCKET"}
        )
        async with running(app) as client:
            listed = (await client.get("/api/instruments")).json()["instruments"]
            ghost = await client.get("/api/instruments/ghost/measurement")
            dmm = await client.get("/api/instruments/dmm/measurement")
    by_name = {i["name"]: i for i in listed}
    assert by_name["dmm"]["online"] is True
    assert by_name["ghost"]["online"] is False
    assert "Connect" in by_name["ghost"]["error"]
    assert by_name["ghost"]["identity"] is None
    assert ghost.status_code == 503
    assert "offline" in ghost.json()["error"]
    assert dmm.status_code == 200


async def test_foreign_hosts_and_cross_site_posts_are_refused() -> None:
    """DNS rebinding (a foreign Host) gets 400, a POST from another origin 403."""
    query = {"command": "*IDN?"}
    async with running(create_app()) as client:
        rebound = await client.get("/api/instruments", headers={"host": "evil.example:8000"})
        cross_site = await client.post(
            "/api/instruments/dmm/query", json=query, headers={"origin": "http://evil.example"}
        )
        by_referer = await client.post(
            "/api/instruments/dmm/query", json=query, headers={"referer": "http://evil.example/"}
        )
        same_origin = await client.post(
            "/api/instruments/dmm/query", json=query, headers={"origin": "http://localhost"}
        )
    assert rebound.status_code == 400
    assert "not allowed" in rebound.text
    assert (cross_site.status_code, by_referer.status_code) == (403, 403)
    assert same_origin.status_code == 200
    assert same_origin.json()["response"].startswith("aiotmc,SIM-DMM")
    assert rebound.headers["x-frame-options"] == "DENY"


async def test_websocket_from_a_foreign_origin_is_refused() -> None:
    """Cross-site WebSocket hijacking: the upgrade is closed before it is accepted (403)."""
    app = create_app(period=0.05)
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    async with running(app):
        with anyio.fail_after(5):
            await app(ws_scope(origin="http://evil.example"), receive, send)
    assert [m["type"] for m in sent] == ["websocket.close"]


# -- WebSocket ------------------------------------------------------------------------------


async def test_websocket_streams_readings_and_service_requests() -> None:
    app = create_app(period=0.05, srq_interval=0.05)
    async with running(app), websocket(app) as ws:
        with anyio.fail_after(10):
            hello = await ws.receive_json()
            messages = await ws.receive_until(readings=3, srq=2)
        bench = app.state.bench
        assert bench.srq_events >= 2
        assert int(await bench.group["scope"].query(":ACQ:NUM?")) >= 2
    assert hello["type"] == "hello"
    assert [i["name"] for i in hello["instruments"]] == ["dmm", "psu", "scope"]
    readings = [m for m in messages if m["type"] == "reading"]
    for reading in readings:
        assert reading["errors"] == {}
        assert 3.7 < reading["values"]["dmm"]["voltage"] < 6.3
        assert reading["values"]["psu"] == {"voltage": 5.0, "current": 0.5}
        assert {"seq", "t", "missed", "skipped", "dropped"} <= set(reading)
    seqs = [r["seq"] for r in readings]
    assert seqs == sorted(seqs)
    srqs = [m for m in messages if m["type"] == "srq"]
    for srq in srqs:
        assert srq["instrument"] == "scope"
        # operation complete (ESB) requested service (RQS), with no error queued (EAV); MAV
        # too if the stream's query to the scope happened to have its answer waiting
        assert {"ESB", "RQS"} <= set(srq["flags"]) <= {"ESB", "RQS", "MAV"}
        assert srq["status"] & 0x60 == 0x60
        assert srq["delay_ms"] >= 0
    assert not [m for m in messages if m["type"] == "notice"]


async def test_hello_replays_recent_service_requests() -> None:
    app = create_app(period=0.05, srq_interval=0.05)
    async with running(app):
        async with websocket(app) as first:
            with anyio.fail_after(10):
                await first.receive_until(srq=1)
        async with websocket(app) as second:
            with anyio.fail_after(10):
                hello = await second.receive_json()
    assert [e["type"] for e in hello["history"]][:1] == ["srq"]


async def test_no_instrument_traffic_without_viewers() -> None:
    app = create_app(period=0.01, srq_interval=0.01)
    async with running(app):
        bench = app.state.bench
        await anyio.sleep(0.1)  # not synchronisation: ten periods in which nothing may happen
        assert (bench.readings, bench.srq_events) == (0, 0)
        async with websocket(app) as ws:
            with anyio.fail_after(10):
                await ws.receive_until(readings=2, srq=1)
        seen = bench.readings
        await anyio.sleep(0.1)
        assert bench.readings <= seen + 1  # at most the row that was in flight


async def test_stalled_client_is_disconnected_without_slowing_the_stream() -> None:
    """A client that stops reading is cut off after send_timeout; others keep streaming."""
    app = create_app(period=0.02, send_timeout=0.2)
    async with running(app), websocket(app, buffer=0) as stalled, websocket(app) as healthy:
        with anyio.fail_after(10):
            # the stalled client reads nothing (its buffer is 0: every send blocks) ...
            await healthy.receive_until(readings=20)  # ... and holds up nobody
            # its handler gave up on the blocked send and ended: a close frame (1008) if
            # we happen to read while it tries to send one, else just the end (1006)
            with pytest.raises(WebSocketClosed) as closed:
                while True:
                    await stalled.receive_json()
    assert closed.value.code in (1006, 1008)


async def test_shutdown_closes_instruments_and_ends_streams() -> None:
    app = create_app(period=0.05)
    async with anyio.create_task_group() as tg:
        stopped = anyio.Event()
        ready = anyio.Event()
        holder: dict[str, Any] = {}

        async def serve() -> None:
            async with running(app):
                holder["bench"] = app.state.bench
                ready.set()
                await stopped.wait()

        tg.start_soon(serve)
        await ready.wait()
        async with websocket(app) as ws:
            with anyio.fail_after(10):
                await ws.receive_until(readings=1)
                stopped.set()  # the server shuts down while the client is connected
                with pytest.raises(WebSocketClosed) as closed:
                    while True:
                        await ws.receive_json()
        assert closed.value.code == 1001  # going away
    bench = holder["bench"]
    assert all(member.instrument is not None for member in bench.members.values())
    assert all(member.instrument.closed for member in bench.members.values())
    assert bench.group.closed


# -- the real thing: uvicorn + headless Chromium -------------------------------------------------


def _read_line(stream: Any, deadline: float) -> str:
    """One line from a subprocess pipe, waiting at most until ``deadline`` (no sleeps)."""
    data = b""
    fd = stream.fileno()
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        ready, _, _ = select.select([fd], [], [], max(0.0, left))
        if not ready:
            raise TimeoutError(f"no complete line before the deadline; got {data!r}")
        chunk = os.read(fd, 1)
        if not chunk:
            raise EOFError(f"the process closed its output; got {data!r}")
        data += chunk
    return data.decode()


_LIVE = """
new Promise((resolve) => {
  const check = () => {
    const count = Number(document.getElementById("reading-count").textContent);
    const srq = document.querySelectorAll("#srq-log li.srq").length;
    const value = document.getElementById("value-dmm-voltage");
    if (count >= %d && srq >= 1 && value && /^[0-9.]+$/.test(value.textContent)) {
      observer.disconnect();
      resolve(document.documentElement.outerHTML);
    }
  };
  const observer = new MutationObserver(check);
  observer.observe(document.body, {subtree: true, childList: true, characterData: true});
  check();
})
"""

_CHART_PIXELS = """
(() => {
  const c = document.getElementById("chart");
  const data = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let lit = 0;
  for (let i = 3; i < data.length; i += 4) if (data[i] > 0) lit++;
  return lit;
})()
"""


@contextmanager
def _dashboard_server(args: list[str], *, cwd: Path, log: Path) -> Iterator[tuple[Any, str]]:
    """Start the example server (port 0), yield it and its URL; Ctrl-C it on the way out.

    The URL line is printed once the socket listens, so requests made right after it wait
    in the backlog until the lifespan has opened the instruments: no polling needed.
    """
    with (
        log.open("wb") as log_file,
        subprocess.Popen(
            [sys.executable, *args, "--port", "0"],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=log_file,
        ) as server,
        stopping(server, signal.SIGINT),
    ):
        banner = _read_line(server.stdout, time.monotonic() + 30)
        match = re.search(r"(http://127\.0\.0\.1:\d+/)", banner)
        assert match, banner
        yield server, match.group(1)


def test_dashboard_in_headless_chromium(tmp_path: Path) -> None:
    """Serve the app with uvicorn (``python -m examples.web_dashboard``), load the page in
    headless Chromium, wait until the WebSocket has filled in live values, check the DOM
    and the chart, and save a screenshot (``AIOTMC_SCREENSHOT=path`` keeps a copy)."""
    chromium = require_chromium()

    server_log = tmp_path / "server.log"
    args = ["-m", "examples.web_dashboard", "--period", "0.1"]
    with (
        _dashboard_server(args, cwd=ROOT, log=server_log) as (server, url),
        headless_chromium(chromium, tmp_path) as cdp,
    ):
        target = cdp.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        attached = cdp.call("Target.attachToTarget", {"targetId": target, "flatten": True})
        session = attached["sessionId"]
        cdp.call("Page.enable", session=session)
        cdp.call("Page.navigate", {"url": url}, session=session)
        cdp.wait_event("Page.loadEventFired", session=session)
        dom = cdp.evaluate(
            _LIVE % int(os.environ.get("AIOTMC_SCREENSHOT_READINGS", 5)), session=session
        )
        lit = cdp.evaluate(_CHART_PIXELS, session=session)
        shot = cdp.call("Page.captureScreenshot", {"format": "png"}, session=session)
        png = base64.b64decode(shot["data"])
        (tmp_path / "dashboard.png").write_bytes(png)
        if keep := os.environ.get("AIOTMC_SCREENSHOT"):
            Path(keep).write_bytes(png)

    # identities from /api/instruments, values and log from the WebSocket
    for model in ("SIM-DMM", "SIM-PSU", "SIM-SCOPE"):
        assert f"aiotmc {model}" in dom
    values = dict(re.findall(r'id="value-([\w-]+)">([^<]*)<', dom))
    assert set(values) == {"dmm-voltage", "psu-voltage", "psu-current", "scope-acquisitions"}
    assert 3.7 < float(values["dmm-voltage"]) < 6.3
    assert float(values["psu-voltage"]) == 5.0
    assert float(values["psu-current"]) == 0.5
    assert re.search(r'id="conn" class="pill live">live<', dom)
    assert re.search(r"scope</span> SRQ status 0x[0-9a-f]{2} \[[A-Z|]*ESB\|RQS\]", dom)
    assert lit > 1000, "the chart canvas is (nearly) empty"
    assert png.startswith(b"\x89PNG")

    # Ctrl-C: uvicorn shuts down gracefully, the lifespan closes the instruments
    log = server_log.read_text()
    assert server.returncode == 0, log
    assert "Application shutdown complete" in log, log


def test_runs_as_a_directory(tmp_path: Path) -> None:
    """``python examples/web_dashboard`` (no ``-m``, from another directory) serves too."""
    args = [str(ROOT / "examples" / "web_dashboard")]
    with _dashboard_server(args, cwd=tmp_path, log=tmp_path / "server.log") as (server, url):
        response = httpx.get(url + "api/instruments", timeout=30)
    assert response.status_code == 200
    assert [i["name"] for i in response.json()["instruments"]] == ["dmm", "psu", "scope"]
    assert server.returncode == 0, (tmp_path / "server.log").read_text()
