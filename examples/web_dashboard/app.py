"""The dashboard as an ASGI app: ``create_app()`` returns a Starlette application.

What it shows (docs/web.md explains each point):

* **Lifespan ownership.** The instruments are opened when the server starts and closed when
  it stops, by the lifespan. Request handlers only *use* them; none opens or closes one.
* **Per-instrument locking.** Every :class:`aiotmc.Instrument` call holds the instrument's
  lock for the whole write+read exchange, so any number of concurrent HTTP requests (and the
  streaming task) can share one instrument without getting each other's answers.
* **Allow-listed queries.** ``POST /api/instruments/{name}/query`` forwards only exact,
  single queries from a per-instrument list: the web is not a SCPI console.
* **Streaming with backpressure.** One background task reads the whole group every
  ``period`` seconds and one forwards the scope's service requests; both publish to a
  :class:`Hub`. Each WebSocket client has its own :class:`Subscription`: readings are
  *conflated* (a slow client gets the newest reading, never a growing backlog) and events are
  queued up to a bound (overflow is counted, not buffered). Instrument load is the same for
  one viewer or a hundred, and a stalled browser never slows the instruments down.

* **Same-origin only.** :class:`aiotmc.gateway.web.guard.Guard` answers only to the Host
  names in ``allowed_hosts`` (loopback by default: DNS rebinding gets 400) and refuses a
  POST or a WebSocket from another origin (403): a web page you visit cannot drive the
  bench through your browser.

Endpoints: ``GET /`` (the page), ``GET /api/instruments``,
``GET /api/instruments/{name}/measurement``, ``POST /api/instruments/{name}/query``
(``{"command": "MEAS:VOLT?"}``), WebSocket ``/ws``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Final

import anyio
from anyio.abc import TaskStatus
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

import aiotmc
from aiotmc import AiotmcError, AiotmcTimeout, Instrument, ServiceRequest, UnsupportedOperation
from aiotmc.acquisition import Measurement
from aiotmc.gateway.web.guard import Guard
from aiotmc.group import InstrumentGroup
from aiotmc.protocol import Identity
from aiotmc.sim.devices import SimDmm, create_device

__all__ = [
    "DEFAULT_RESOURCES",
    "PROFILES",
    "Bench",
    "Hub",
    "Profile",
    "Quantity",
    "Subscription",
    "check_command",
    "create_app",
]

log = logging.getLogger("aiotmc.examples.web_dashboard")

STATIC: Final = Path(__file__).resolve().parent / "static"

#: The simulated bench opened when ``create_app()`` gets no resources: in-process
#: simulated instruments (``SIM::``), which have a native service-request channel.
DEFAULT_RESOURCES: Final[Mapping[str, str]] = {
    "dmm": "SIM::dmm::dashboard",
    "psu": "SIM::psu::dashboard",
    "scope": "SIM::scope::dashboard",
}

MAX_COMMAND_LENGTH: Final = 128

#: The Host names the dashboard answers to by default (it listens on loopback).
LOOPBACK_HOSTS: Final = ("localhost", "127.0.0.1", "::1")


# -- what each instrument is asked, and what the web may ask it ------------------------------


@dataclass(frozen=True, slots=True)
class Quantity:
    """One streamed value: a label, the query that reads it, its unit."""

    label: str
    command: str
    unit: str = ""


@dataclass(frozen=True, slots=True)
class Profile:
    """How the dashboard uses one kind of instrument.

    ``quantities`` are read for ``/measurement`` and for every streamed row (one compound
    query when there are several). ``allow`` is the exact list of queries that
    ``POST .../query`` forwards. ``srq_demo`` arms a single acquisition every few seconds
    (``*ESE 1;*SRE 32``, ``:SINGle;*OPC``) so that the page gets service requests.
    """

    quantities: tuple[Quantity, ...] = ()
    allow: tuple[str, ...] = ("*IDN?",)
    srq_demo: bool = False


# Queries only, and only side-effect-free ones: *ESR? clears the event register (the SRQ
# loop depends on it), SYST:ERR? pops the error queue, *OPC? can stall the instrument's
# queue, READ?/INIT start measurements. None of those belongs on a public list.
PROFILES: Final[Mapping[str, Profile]] = {
    "dmm": Profile(
        quantities=(Quantity("voltage", "MEAS:VOLT:DC?", "V"),),
        allow=(
            "*IDN?",
            "MEAS:VOLT?",
            "MEAS:VOLT:DC?",
            "CONF?",
            "VOLT:RANG?",
            "VOLT:RANG:AUTO?",
            "SAMP:COUN?",
            "TRIG:SOUR?",
        ),
    ),
    "psu": Profile(
        quantities=(
            Quantity("voltage", "MEAS:VOLT?", "V"),
            Quantity("current", "MEAS:CURR?", "A"),
        ),
        allow=(
            "*IDN?",
            "MEAS:VOLT?",
            "MEAS:CURR?",
            "VOLT?",
            "CURR?",
            "APPL?",
            "INST?",
            "INST:NSEL?",
            "OUTP?",
            "OUTP:MODE?",
        ),
    ),
    "scope": Profile(
        quantities=(Quantity("acquisitions", ":ACQ:NUM?"),),
        allow=(
            "*IDN?",
            ":ACQ:NUM?",
            ":ACQ:POIN?",
            ":TRIG:SOUR?",
            ":TIM:SCAL?",
            ":WAV:PRE?",
            ":WAV:FORM?",
            ":WAV:SOUR?",
        ),
        srq_demo=True,
    ),
}

GENERIC_PROFILE: Final = Profile()


def profile_for(name: str, resource: str) -> Profile:
    """The profile of the instrument called ``name``: by name, else by ``SIM::<model>``."""
    if name.lower() in PROFILES:
        return PROFILES[name.lower()]
    parts = resource.split("::")
    if parts[0].upper() == "SIM" and len(parts) > 1 and parts[1].lower() in PROFILES:
        return PROFILES[parts[1].lower()]
    return GENERIC_PROFILE


def _normalize(command: str) -> str:
    return " ".join(command.split()).upper().lstrip(":")


class CommandRejected(Exception):
    """A command the web may not send (becomes 403)."""


def check_command(command: str, allow: tuple[str, ...]) -> str:
    """Return ``command`` stripped if it may be sent, else raise :class:`CommandRejected`.

    The rules, strictest first: printable ASCII, at most 128 characters, one program
    message unit (no ``;`` or newline: nothing can ride along behind an allowed query), a
    query (ends in ``?``), and *exactly* one of ``allow`` (case, surrounding blanks and a
    leading ``:`` aside). Exact matching is deliberate: instrument parsers accept more
    spellings than any pattern you would write.
    """
    text = command.strip()
    if not text:
        raise CommandRejected("empty command")
    if len(text) > MAX_COMMAND_LENGTH:
        raise CommandRejected(f"command longer than {MAX_COMMAND_LENGTH} characters")
    if not text.isascii() or not text.isprintable():
        raise CommandRejected("only printable ASCII is allowed")
    if ";" in text:
        raise CommandRejected("one query per request: compound commands (';') are not allowed")
    if not text.endswith("?"):
        raise CommandRejected(
            f"{text!r} does not end in '?': only queries, without parameters, are allowed"
        )
    allowed = {_normalize(c) for c in allow}
    if _normalize(text) not in allowed:
        listed = ", ".join(allow)
        raise CommandRejected(f"{text!r} is not on this instrument's allow-list: {listed}")
    return text


# -- streaming: hub and per-client subscriptions ----------------------------------------------


class Subscription:
    """One client's view of the stream: newest reading (conflated) + a bounded event queue.

    The producer never waits for a client. A reading replaces an unsent older one (counted
    in :attr:`skipped`); an event beyond ``max_events`` unsent ones is dropped (counted in
    :attr:`dropped`).
    """

    def __init__(self, max_events: int = 64) -> None:
        self.max_events = max_events
        self.skipped = 0  #: readings replaced before this client got them
        self.dropped = 0  #: events lost because the client's queue was full
        self._latest: dict[str, Any] | None = None
        self._events: deque[dict[str, Any]] = deque()
        self._wake = anyio.Event()
        self._closed = False

    def offer(self, message: dict[str, Any], *, conflate: bool) -> None:
        """Queue ``message`` without waiting (``conflate``: it is a reading)."""
        if self._closed:
            return
        if conflate:
            if self._latest is not None:
                self.skipped += 1
            self._latest = message
        elif len(self._events) >= self.max_events:
            self.dropped += 1
        else:
            self._events.append(message)
        self._wake.set()

    def close(self) -> None:
        """End the subscription: :meth:`next_batch` returns ``[]`` once drained."""
        self._closed = True
        self._wake.set()

    async def next_batch(self) -> list[dict[str, Any]]:
        """Everything pending (events in order, then the newest reading); ``[]`` at the end."""
        while not self._events and self._latest is None:
            if self._closed:
                return []
            self._wake = anyio.Event()
            await self._wake.wait()
        batch = list(self._events)
        self._events.clear()
        if self._latest is not None:
            batch.append(self._latest)
            self._latest = None
        return batch


class Hub:
    """Fan-out from the background tasks to every :class:`Subscription`; never blocks."""

    def __init__(self, *, max_events: int = 64, history: int = 20) -> None:
        self.max_events = max_events
        self.history: deque[dict[str, Any]] = deque(maxlen=history)  #: recent events
        self._subscriptions: set[Subscription] = set()
        self._present = anyio.Event()
        self._closed = False

    @property
    def subscribers(self) -> int:
        """How many clients are subscribed."""
        return len(self._subscriptions)

    def publish(self, message: dict[str, Any], *, conflate: bool = False) -> None:
        """Deliver to every subscriber (``conflate=True`` for readings)."""
        if not conflate:
            self.history.append(message)
        for subscription in self._subscriptions:
            subscription.offer(message, conflate=conflate)

    async def wait_for_subscribers(self) -> None:
        """Return once at least one client is subscribed (do no work for nobody)."""
        while not self._subscriptions:
            await self._present.wait()

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[Subscription]:
        """``async with hub.subscribe() as sub:`` then ``await sub.next_batch()``."""
        subscription = Subscription(self.max_events)
        if self._closed:
            subscription.close()
        else:
            self._subscriptions.add(subscription)
            self._present.set()
        try:
            yield subscription
        finally:
            self._subscriptions.discard(subscription)
            subscription.close()
            if not self._subscriptions:
                self._present = anyio.Event()

    def close(self) -> None:
        """End every subscription (the server is going away)."""
        self._closed = True
        for subscription in self._subscriptions:
            subscription.close()


# -- the bench: instruments opened by the lifespan --------------------------------------------


@dataclass(slots=True)
class Member:
    """One configured instrument: open (``instrument``) or not (``error``)."""

    name: str
    resource: str
    profile: Profile
    instrument: Instrument | None = None
    identity: Identity | None = None
    error: str | None = None

    def describe(self) -> dict[str, Any]:
        """JSON for ``/api/instruments`` and the WebSocket hello."""
        return {
            "name": self.name,
            "resource": self.resource,
            "online": self.instrument is not None,
            "error": self.error,
            "identity": None
            if self.identity is None
            else {
                "manufacturer": self.identity.manufacturer,
                "model": self.identity.model,
                "serial": self.identity.serial,
                "firmware": self.identity.firmware,
            },
            "quantities": [{"label": q.label, "unit": q.unit} for q in self.profile.quantities],
            "allow": list(self.profile.allow),
            "srq": self.profile.srq_demo and self.instrument is not None,
        }

    def values(self, answer: str | list[str]) -> dict[str, float]:
        """The answer to the quantities' query (compound when several) as label -> value."""
        answers = [answer] if isinstance(answer, str) else answer
        quantities = self.profile.quantities
        values = {q.label: float(a) for q, a in zip(quantities, answers, strict=True)}
        if not all(map(math.isfinite, values.values())):  # JSON has no NaN or Infinity
            raise ValueError(f"{self.name}: non-finite reading in {answer!r}")
        return values

    @property
    def fetch(self) -> str | list[str]:
        """The quantities' query: one, or a list sent as one compound message."""
        commands = [q.command for q in self.profile.quantities]
        return commands[0] if len(commands) == 1 else commands


@dataclass(slots=True)
class Bench:
    """What the lifespan hands to the request handlers (``app.state.bench``)."""

    group: InstrumentGroup
    members: dict[str, Member]
    hub: Hub
    period: float
    timeout: float
    request_timeout: float
    readings: int = 0  #: rows published so far
    missed: int = 0  #: periods skipped because a row took longer than ``period``
    srq_events: int = 0  #: service requests forwarded so far

    def online(self) -> dict[str, Member]:
        """The members that opened."""
        return {n: m for n, m in self.members.items() if m.instrument is not None}

    async def measure(self, member: Member) -> dict[str, float]:
        """Read ``member``'s quantities: one locked exchange (compound when several)."""
        instrument = member.instrument
        assert instrument is not None
        fetch = member.fetch
        if isinstance(fetch, str):
            return member.values(await instrument.query(fetch, timeout=self.timeout))
        return member.values(await instrument.query_many(fetch, timeout=self.timeout))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


@asynccontextmanager
async def open_bench(
    resources: Mapping[str, str],
    options: Mapping[str, Mapping[str, Any]],
    *,
    timeout: float,
    connect_timeout: float,
) -> AsyncIterator[tuple[InstrumentGroup, dict[str, Member]]]:
    """Open every resource concurrently (:func:`aiotmc.open_many`) and identify it.

    One slow or dead instrument delays nobody, and one that fails to open is reported
    (``Member.error``, shown on the page) instead of failing the server.
    """
    specs = {name: (resource, options.get(name, {})) for name, resource in resources.items()}
    async with aiotmc.open_many(specs, timeout=timeout, connect_timeout=connect_timeout) as group:
        members = {
            name: Member(name, resource, profile_for(name, resource), group.get(name))
            for name, resource in resources.items()
        }
        for name, exc in group.failed.items():
            members[name].error = _describe(exc)
            log.warning("%s (%s) is offline: %s", name, resources[name], exc)
        identities = await group.run_all(lambda inst: inst.identify())
        for name, result in identities.items():
            if name in group and result.ok:
                members[name].identity = result.value
            elif name in group and result.error is not None:
                members[name].error = f"*IDN? failed: {_describe(result.error)}"
        yield group, members


class _WanderingDmm(SimDmm):
    """The simulated DMM's input follows a slow sine, so the chart has something to draw."""

    def __init__(self, **kwargs: Any) -> None:
        self._base = 5.0
        self._start = time.monotonic()
        kwargs.setdefault("input_voltage", 5.0)
        super().__init__(**kwargs)

    @property
    def input_voltage(self) -> float:
        phase = 2 * math.pi * (self.clock() - self._start) / 6.0
        # 3.8 V .. 6.2 V: well inside the 10 V range, never at an autorange boundary
        return self._base + math.sin(phase) + 0.2 * math.sin(7.3 * phase)

    @input_voltage.setter
    def input_voltage(self, value: float) -> None:
        self._base = value


def simulated_options() -> dict[str, dict[str, Any]]:
    """Fresh simulated devices for :data:`DEFAULT_RESOURCES` (one set per app start).

    Latencies of a millisecond or two make it a realistic bench: concurrent requests to one
    instrument really do queue behind each other.
    """
    psu = create_device("psu", latency=0.001)
    psu.write(b"APPL CH1,5.0,1.0;:OUTP1 ON\n")  # 5 V into the 10-ohm load: 0.5 A
    return {
        "dmm": {"device": _WanderingDmm(latency=0.002, noise=2e-3)},
        "psu": {"device": psu},
        "scope": {"device": create_device("scope", latency=0.001, acquisition_time=0.02)},
    }


# -- background tasks (started by the lifespan) ----------------------------------------------


async def stream_readings(bench: Bench) -> None:
    """Publish one row of readings every ``bench.period`` while anyone is watching.

    :func:`aiotmc.periodic` schedules rows at ``start + k * period`` (no drift), reads the
    group concurrently (one compound query per instrument) and counts the periods a slow
    row overran in ``row.missed``. Nobody watching: no instrument traffic at all.
    """
    plan: dict[str, Measurement] = {
        name: Measurement(member.fetch, trigger=False, convert=member.values)
        for name, member in bench.online().items()
        if member.profile.quantities
    }
    if not plan:
        return
    while True:
        await bench.hub.wait_for_subscribers()
        async for row in bench.group.periodic(plan, bench.period, timeout=bench.timeout):
            bench.readings += 1
            bench.missed += row.missed
            bench.hub.publish(
                {
                    "type": "reading",
                    "seq": bench.readings,
                    "t": row.wall,
                    "values": {n: s.value for n, s in row.samples.items() if s.ok},
                    "errors": {n: _describe(e) for n, e in row.errors.items()},
                    "missed": bench.missed,
                },
                conflate=True,
            )
            if not bench.hub.subscribers:
                break


def srq_message(name: str, event: ServiceRequest) -> dict[str, Any]:
    """The JSON the page gets for one service request."""
    return {
        "type": "srq",
        "instrument": name,
        "status": int(event.status),
        "flags": [flag.name for flag in event.status],
        "t": event.wall,
        "delay_ms": round((time.monotonic() - event.monotonic) * 1e3, 3),
    }


async def forward_srq(
    bench: Bench, member: Member, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Forward every service request of ``member`` to the hub, as it happens."""
    assert member.instrument is not None
    async with member.instrument.service_requests() as events:
        task_status.started()
        async for event in events:
            bench.srq_events += 1
            bench.hub.publish(srq_message(member.name, event))


async def srq_demo(bench: Bench, member: Member, *, interval: float) -> None:
    """The classic completion pattern, repeated while anyone watches.

    ``inst.operation(":SINGle")`` enables ``*ESE 1;*SRE 32``, sends ``:SINGle;*OPC``; the
    bus trigger starts the acquisition; leaving the block waits for the service request
    (``*OPC?`` where there is none) and reads ``*ESR?`` to clear it. The SRQ itself
    reaches the page through :func:`forward_srq`.
    """
    instrument = member.instrument
    assert instrument is not None
    while True:
        await bench.hub.wait_for_subscribers()
        try:
            async with instrument.operation(":SINGle", timeout=bench.timeout):
                await instrument.trigger(timeout=bench.timeout)
        except Exception as exc:  # report and carry on: the dashboard outlives a bad cycle
            if not isinstance(exc, AiotmcError | TimeoutError):
                log.exception("%s: SRQ cycle failed", member.name)
            bench.hub.publish(
                {
                    "type": "notice",
                    "instrument": member.name,
                    "t": time.time(),
                    "message": f"acquisition failed: {_describe(exc)}",
                }
            )
        await anyio.sleep(interval)


# -- HTTP and WebSocket endpoints -------------------------------------------------------------


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _member(request: Request) -> Member | JSONResponse:
    bench: Bench = request.app.state.bench
    name = request.path_params["name"]
    member = bench.members.get(name)
    if member is None:
        known = ", ".join(bench.members) or "none"
        return _error(404, f"no instrument named {name!r} (known: {known})")
    if member.instrument is None:
        return _error(503, f"{name} is offline: {member.error}")
    return member


async def _guarded(bench: Bench, name: str, call: Callable[[], Any]) -> Any:
    """Run an instrument call with a caller-side deadline that covers *waiting in line*.

    ``timeout=`` on an Instrument call starts once the lock is held; a request that queues
    behind many others needs its own bound, or a busy instrument makes HTTP clients hang.
    """
    try:
        with anyio.fail_after(bench.request_timeout):
            return await call()
    except AiotmcTimeout as exc:
        return _error(504, f"{name}: {exc}")
    except TimeoutError:
        return _error(504, f"{name}: busy, no answer within {bench.request_timeout} s")
    except anyio.ClosedResourceError:
        return _error(503, f"{name} is closed (server shutting down)")
    except (AiotmcError, ValueError) as exc:
        return _error(502, f"{name}: {_describe(exc)}")


async def homepage(request: Request) -> Response:
    return HTMLResponse(request.app.state.index_html)


async def list_instruments(request: Request) -> Response:
    bench: Bench = request.app.state.bench
    return JSONResponse(
        {
            "instruments": [m.describe() for m in bench.members.values()],
            "period": bench.period,
        }
    )


async def measurement(request: Request) -> Response:
    bench: Bench = request.app.state.bench
    member = _member(request)
    if isinstance(member, JSONResponse):
        return member
    if not member.profile.quantities:
        return _error(404, f"{member.name} has no measurement configured")

    async def read() -> Response:
        values = await bench.measure(member)
        units = {q.label: q.unit for q in member.profile.quantities}
        body = {"instrument": member.name, "t": time.time(), "values": values, "units": units}
        return JSONResponse(body)

    result: Response = await _guarded(bench, member.name, read)
    return result


async def query(request: Request) -> Response:
    bench: Bench = request.app.state.bench
    member = _member(request)
    if isinstance(member, JSONResponse):
        return member
    try:
        body = await request.json()
    except ValueError:
        return _error(400, 'the body must be JSON: {"command": "<query>"}')
    command = body.get("command") if isinstance(body, dict) else None
    if not isinstance(command, str):
        return _error(400, 'the body must be JSON: {"command": "<query>"}')
    try:
        command = check_command(command, member.profile.allow)
    except CommandRejected as exc:
        return _error(403, f"{member.name}: {exc}")
    instrument = member.instrument
    assert instrument is not None

    async def ask() -> Response:
        start = time.perf_counter()
        answer = await instrument.query(command, timeout=bench.timeout)
        elapsed = round((time.perf_counter() - start) * 1e3, 3)
        body = {"instrument": member.name, "command": command, "response": answer}
        return JSONResponse({**body, "elapsed_ms": elapsed})

    result: Response = await _guarded(bench, member.name, ask)
    return result


async def stream(websocket: WebSocket) -> None:
    """Send the hello, then every batch of the client's subscription, until either side ends."""
    bench: Bench = websocket.app.state.bench
    send_timeout: float = websocket.app.state.send_timeout
    await websocket.accept()
    code: int | None = None
    async with bench.hub.subscribe() as subscription, anyio.create_task_group() as tg:
        tg.start_soon(_watch_client, websocket, tg.cancel_scope)
        code = await _send_stream(websocket, bench, subscription, send_timeout)
        tg.cancel_scope.cancel()
    if code is not None and websocket.client_state == WebSocketState.CONNECTED:
        with anyio.move_on_after(send_timeout):
            try:
                await websocket.close(code)
            except (WebSocketDisconnect, OSError, RuntimeError):
                pass


async def _watch_client(websocket: WebSocket, scope: anyio.CancelScope) -> None:
    """The client sends nothing we need; this notices when it goes away and stops the send."""
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
    except (WebSocketDisconnect, OSError, RuntimeError):
        pass
    finally:
        scope.cancel()


async def _send_stream(
    websocket: WebSocket, bench: Bench, subscription: Subscription, send_timeout: float
) -> int | None:
    """Send until the hub closes (1001) or the client stalls (1008); None if it left.

    A client that cannot take a message within ``send_timeout`` is disconnected: its
    subscription would only ever skip readings, and the socket buffers are not ours to fill.
    """
    hello = {
        "type": "hello",
        "period": bench.period,
        "instruments": [m.describe() for m in bench.members.values()],
        "history": list(bench.hub.history),
    }
    try:
        with anyio.fail_after(send_timeout):
            await websocket.send_text(json.dumps(hello))
        while batch := await subscription.next_batch():
            for message in batch:
                if message["type"] == "reading":
                    message = {
                        **message,
                        "skipped": subscription.skipped,
                        "dropped": subscription.dropped,
                    }
                with anyio.fail_after(send_timeout):
                    await websocket.send_text(json.dumps(message))
    except TimeoutError:
        log.warning("closing a WebSocket client that stopped reading")
        return 1008
    except (WebSocketDisconnect, OSError, RuntimeError):
        return None  # the client went away while we were sending
    return 1001  # the hub closed: the server is going away


# -- the application ------------------------------------------------------------------------


def create_app(
    resources: Mapping[str, str] | None = None,
    *,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    period: float = 0.2,
    srq_interval: float = 2.0,
    timeout: float = 2.0,
    connect_timeout: float = 5.0,
    request_timeout: float = 5.0,
    send_timeout: float = 5.0,
    allowed_hosts: Iterable[str] = LOOPBACK_HOSTS,
) -> Starlette:
    """The dashboard app.

    Args:
        resources: instrument name -> resource (``{"dmm": "TCPIP0::10.0.0.5::5025::SOCKET"}``).
            ``None``: the simulated bench of :data:`DEFAULT_RESOURCES`, fresh devices each
            start. Names ``dmm``/``psu``/``scope`` (or ``SIM::dmm``... resources) pick the
            matching :data:`PROFILES`; others get identity only.
        options: per-name keyword arguments for :func:`aiotmc.open`.
        period: seconds between streamed rows.
        srq_interval: seconds between the scope's armed acquisitions (each ends in an SRQ).
        timeout: per-exchange instrument timeout.
        connect_timeout: bound on opening each instrument.
        request_timeout: bound on one HTTP request's instrument work, queueing included.
        send_timeout: a WebSocket client that takes longer to accept a message is dropped.
        allowed_hosts: the Host header names served (others get 400: DNS rebinding); POSTs
            and WebSockets must come from the page's own origin (others get 403).
    """
    if resources is None:
        chosen: Mapping[str, str] = DEFAULT_RESOURCES
        open_options: Mapping[str, Mapping[str, Any]] | None = options
        simulated = options is None
    else:
        chosen, open_options, simulated = dict(resources), options or {}, False

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        per_name = simulated_options() if simulated else (open_options or {})
        hub = Hub()
        async with AsyncExitStack() as stack:
            group, members = await stack.enter_async_context(
                open_bench(chosen, per_name, timeout=timeout, connect_timeout=connect_timeout)
            )
            bench = Bench(group, members, hub, period, timeout, request_timeout)
            app.state.bench = bench
            tg = await stack.enter_async_context(anyio.create_task_group())
            # On exit (last in, first out): stop the background tasks, end every WebSocket
            # stream, wait for the tasks, then close the instruments.
            stack.callback(hub.close)
            stack.callback(tg.cancel_scope.cancel)
            tg.start_soon(stream_readings, bench)
            for member in bench.online().values():
                if not member.profile.srq_demo:
                    continue
                assert member.instrument is not None
                try:
                    member.instrument.service_requests()  # raises if the link has no SRQ
                except UnsupportedOperation as exc:
                    log.info("%s: no service-request demo (%s)", member.name, exc)
                    continue
                await tg.start(forward_srq, bench, member)
                tg.start_soon(partial(srq_demo, bench, member, interval=srq_interval))
            log.info("dashboard up: %s", ", ".join(f"{n}={r}" for n, r in chosen.items()))
            yield
        log.info("dashboard down: instruments closed")

    app = Starlette(
        routes=[
            Route("/", homepage),
            Route("/api/instruments", list_instruments),
            Route("/api/instruments/{name}/measurement", measurement),
            Route("/api/instruments/{name}/query", query, methods=["POST"]),
            WebSocketRoute("/ws", stream),
        ],
        lifespan=lifespan,
        middleware=[Middleware(Guard, allowed_hosts=tuple(allowed_hosts))],
    )
    app.state.index_html = (STATIC / "index.html").read_text(encoding="utf-8")
    app.state.send_timeout = send_timeout
    return app
