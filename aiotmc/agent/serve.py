"""One instrument served to remote clients: requests in, the instrument's own link out.

Requests for the instrument arrive on its subject (:mod:`aiotmc.protocol.remote`). Each
runs as its own task that queues for the link (FIFO, so clients are served in arrival
order, together with the agent's own use of the instrument: its in-process lock) and
then performs the seam operation on the instrument's link with the deadline the client
sent. An
``abort`` for a request cancels it wherever it is (queued or on the link: the link then
recovers by its own cancellation contract); ``resync`` asks the link to resynchronise
(device clear) after a client abandoned a request. ``lock`` gives one client session
exclusive use: other sessions' requests wait for it within their own deadline, then fail
with :class:`~aiotmc.ResourceBusyError`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from typing import Final

import anyio
from anyio.abc import TaskGroup

from .._exceptions import (
    AiotmcError,
    LocalProtocolError,
    ReadTimeout,
    RemoteProtocolError,
    ResourceBusyError,
    UnsupportedOperation,
)
from .._types import RenMode
from ..instrument import Instrument
from ..protocol import remote as wire
from ..protocol.nats import Msg
from ..transports.base import MessageTransport, SupportsReconnect, SupportsRemoteLocal
from ..transports.nats.connection import NatsConnection

__all__ = ["InstrumentService"]

_log = logging.getLogger("aiotmc.agent")
#: The largest answer the agent reads for a client, whatever the client asks.
MAX_ANSWER: Final = 1 << 30
_CHUNK_HEADROOM: Final = 1024  # header bytes left in each chunk message
#: How far ahead a synchronized trigger may be scheduled, and the busy-wait before it.
MAX_TRIGGER_LEAD: Final = 60.0
_SPIN: Final = 0.002
_FINE: Final = 0.0003  # of which busy-waiting (a timer sleep wakes ~0.1 ms late)
_PUBLIC_CAPS: Final = ("srq", "read_stb", "device_clear", "trigger", "remote_local")


class InstrumentService:
    """Serves one local link on ``aiotmc.rpc.<agent>.<name>``."""

    def __init__(self, nc: NatsConnection, agent: str, name: str, instrument: Instrument):
        self.nc = nc
        self.agent = agent
        self.name = name
        #: The local instrument: remote requests run on its link under its own lock, so
        #: the agent's local users of it (acquisition) and remote clients take turns.
        self.instrument = instrument
        self.link: MessageTransport = instrument.transport
        self.subject = wire.rpc_subject(agent, name)
        self.served = 0  #: requests answered
        self._running: dict[str, anyio.CancelScope] = {}  # reply inbox -> its scope
        self._aborted: set[str] = set()
        self._holder: str | None = None  # the session holding the lock
        self._released = anyio.Event()

    def description(self) -> dict[str, object]:
        """What ``describe`` answers: the local resource and its abilities."""
        info = self.link.info
        caps = {name: bool(getattr(info.capabilities, name)) for name in _PUBLIC_CAPS}
        caps["locking"] = True  # the agent's own lock across its clients
        return {"resource": info.resource, "kind": info.kind, "capabilities": caps}

    async def serve(self, tg: TaskGroup) -> None:
        """Handle requests until cancelled (each request is a task of ``tg``)."""
        sub = await self.nc.subscribe(self.subject, maxsize=10_000)
        try:
            async for msg in sub.messages:
                self._dispatch(msg, tg)
        finally:
            with anyio.CancelScope(shield=True):
                await sub.unsubscribe()

    async def forward_srqs(self) -> None:
        """Publish the link's service requests for remote subscribers."""
        srq = self.link.srq
        if srq is None:
            return
        subject = wire.srq_subject(self.agent, self.name)
        async with srq.subscribe(buffer=256) as events:
            async for event in events:
                await self.nc.publish(subject, b"%d" % int(event.status))

    # -- dispatch --------------------------------------------------------------------------

    def _dispatch(self, msg: Msg, tg: TaskGroup) -> None:
        op = msg.headers.get(wire.OP, "")
        session = msg.headers.get(wire.SESSION, "")
        if op == "abort":
            target = msg.headers.get(wire.ARG, "")
            scope = self._running.get(target)
            if scope is not None:
                scope.cancel()
            elif target:
                self._aborted.add(target)
                if len(self._aborted) > 10_000:  # bounded: stale notices of long-done requests
                    self._aborted.clear()
            return
        if op == "close":
            if session and self._holder == session:
                self._release()
            return
        if msg.reply is None:
            return  # nowhere to answer: ignore
        tg.start_soon(self._handle, msg, op, session)

    async def _handle(self, msg: Msg, op: str, session: str) -> None:
        reply = msg.reply
        assert reply is not None
        try:
            timeout = wire.parse_timeout(msg.headers.get(wire.TIMEOUT))
        except ValueError as exc:
            await self._answer_error(reply, RemoteProtocolError(str(exc)))
            return
        deadline = math.inf if timeout is None else anyio.current_time() + timeout
        with anyio.CancelScope() as scope:
            self._running[reply] = scope
            if reply in self._aborted:
                self._aborted.discard(reply)
                scope.cancel()
            try:
                await self._run(msg, op, session, reply, deadline)
            except AiotmcError as exc:
                await self._answer_error(reply, exc)
            except TimeoutError:
                await self._answer_error(reply, ReadTimeout(f"{op}: timed out at the agent"))
            except anyio.BusyResourceError as exc:
                await self._answer_error(reply, ResourceBusyError(str(exc)))
            except Exception as exc:  # a bug here or in a link: report it, keep serving
                _log.exception("%s: %s request failed", self.subject, op)
                await self._answer_error(
                    reply, RemoteProtocolError(f"the agent failed: {type(exc).__name__}: {exc}")
                )
            finally:
                self._running.pop(reply, None)
        if scope.cancelled_caught:
            _log.debug("%s: %s aborted by its client", self.subject, op)

    async def _run(self, msg: Msg, op: str, session: str, reply: str, deadline: float) -> None:
        if op == "describe":
            await self._answer(reply, json.dumps(self.description()).encode())
            return
        if op == "lock":
            await self._lock(session, msg.headers.get(wire.ARG, "0"), deadline)
            await self._answer(reply, b"1")
            return
        if op == "unlock":
            if self._holder == session:
                self._release()
            await self._answer(reply, b"")
            return
        operation = self._operations().get(op)
        if operation is None:
            raise RemoteProtocolError(f"unknown operation {op!r}")
        await self._wait_unlocked(session, deadline)
        with anyio.move_on_after(deadline - anyio.current_time()) as queued:
            async with self.instrument.lock():
                queued.deadline = math.inf  # the wait in the queue is over
                await operation(msg, reply, deadline)
                self.served += 1
        if queued.cancelled_caught:
            raise ReadTimeout(f"{self.name}: {op}: the deadline passed in the agent's queue")

    def _operations(self) -> dict[str, Callable[[Msg, str, float], Awaitable[None]]]:
        return {
            "send": self._send,
            "receive": self._receive,
            "exchange": self._exchange,
            "block": self._block,
            "stb": self._stb,
            "clear": self._clear,
            "trigger": self._trigger,
            "ren": self._ren,
            "resync": self._resync,
            "trigger_at": self._trigger_at,
        }

    # -- operations ------------------------------------------------------------------------

    async def _send(self, msg: Msg, reply: str, deadline: float) -> None:
        end = msg.headers.get(wire.END, "1") != "0"
        await self.link.send_message([msg.payload], end=end, deadline=deadline)
        await self._answer(reply, b"")

    async def _receive(self, msg: Msg, reply: str, deadline: float) -> None:
        answer = await self.link.receive_message(max_size=_max_size(msg), deadline=deadline)
        await self._answer(reply, answer)

    async def _exchange(self, msg: Msg, reply: str, deadline: float) -> None:
        answer = await self.link.exchange(msg.payload, max_size=_max_size(msg), deadline=deadline)
        await self._answer(reply, answer)

    async def _block(self, msg: Msg, reply: str, deadline: float) -> None:
        view = await self.link.receive_block(None, max_size=_max_size(msg), deadline=deadline)
        chunk = max(1024, self.nc.max_payload - _CHUNK_HEADROOM)
        size = len(view)
        count = max(1, math.ceil(size / chunk))
        for index in range(count):
            headers = {
                wire.STATUS: "ok",
                wire.CHUNK: f"{index}/{count}",
                wire.SIZE: str(size),
            }
            part = view[index * chunk : (index + 1) * chunk]
            await self.nc.publish(reply, part, headers=headers)

    async def _stb(self, msg: Msg, reply: str, deadline: float) -> None:
        status = await self.link.read_stb(deadline=deadline)
        await self._answer(reply, b"%d" % status)

    async def _clear(self, msg: Msg, reply: str, deadline: float) -> None:
        await self.link.clear(deadline=deadline)
        await self._answer(reply, b"")

    async def _trigger(self, msg: Msg, reply: str, deadline: float) -> None:
        await self.link.trigger(deadline=deadline)
        await self._answer(reply, b"")

    async def _trigger_at(self, msg: Msg, reply: str, deadline: float) -> None:
        """Trigger at a wall-clock instant (several agents, one instant): sleep until just
        before it, wait out the last stretch with the thread's own precise sleep (an event
        loop's timers are ~1 ms coarse), fire; answer the Unix time at which the trigger
        went out."""
        try:
            when = float(msg.headers.get(wire.ARG, ""))
        except ValueError:
            raise LocalProtocolError("bad trigger time") from None
        lead = when - time.time()
        if lead > MAX_TRIGGER_LEAD:
            raise LocalProtocolError(
                f"trigger time {lead:.1f} s ahead (at most {MAX_TRIGGER_LEAD})"
            )
        if lead > _SPIN:
            await anyio.sleep(lead - _SPIN)
        _wait_until(when)
        fired = time.time()
        if self.link.info.capabilities.trigger:
            await self.link.trigger(deadline=deadline)
        else:
            await self.link.send_message([b"*TRG\n"], deadline=deadline)
        _give_way()  # agents of this host waiting for a core fire before this one answers
        await self._answer(reply, repr(fired).encode())

    async def _ren(self, msg: Msg, reply: str, deadline: float) -> None:
        if not isinstance(self.link, SupportsRemoteLocal):
            raise UnsupportedOperation(f"{self.link.info.resource} has no remote/local control")
        try:
            mode = RenMode(int(msg.headers.get(wire.ARG, "")))
        except ValueError:
            raise LocalProtocolError("bad remote/local mode") from None
        await self.link.control_ren(mode, deadline=deadline)
        await self._answer(reply, b"")

    async def _resync(self, msg: Msg, reply: str, deadline: float) -> None:
        """A client abandoned a request: drop whatever answer may still be on its way."""
        link = self.link
        try:
            if link.info.capabilities.device_clear:
                await link.clear(deadline=deadline)
            elif isinstance(link, SupportsReconnect):
                await link.reconnect(deadline=deadline)
            else:
                await link.clear(deadline=deadline)
        except UnsupportedOperation:
            pass
        await self._answer(reply, b"")

    # -- the lock across clients -----------------------------------------------------------

    async def _lock(self, session: str, wait_text: str, deadline: float) -> None:
        if not session:
            raise LocalProtocolError("a lock needs a session")
        try:
            wait = float(wait_text)
        except ValueError:
            raise LocalProtocolError("bad lock timeout") from None
        limit = min(deadline, anyio.current_time() + max(0.0, min(wait, 3600.0)))
        while self._holder not in (None, session):
            with anyio.move_on_after(max(0.0, limit - anyio.current_time())):
                await self._released.wait()
                continue
            raise ResourceBusyError(f"{self.name} is locked by another client")
        self._holder = session

    async def _wait_unlocked(self, session: str, deadline: float) -> None:
        while self._holder not in (None, session):
            with anyio.move_on_after(max(0.0, deadline - anyio.current_time())):
                await self._released.wait()
                continue
            raise ResourceBusyError(f"{self.name} is locked by another client")

    def _release(self) -> None:
        self._holder = None
        self._released.set()
        self._released = anyio.Event()

    # -- replies ---------------------------------------------------------------------------

    async def _answer(self, reply: str, payload: bytes | memoryview) -> None:
        await self.nc.publish(reply, payload, headers={wire.STATUS: "ok"})

    async def _answer_error(self, reply: str, exc: BaseException) -> None:
        message = str(exc).encode("utf-8", "replace")[:4096]
        with anyio.CancelScope(shield=True):
            try:
                await self.nc.publish(reply, message, headers=wire.error_headers(exc))
            except AiotmcError:
                _log.debug("%s: could not answer %s", self.subject, reply)


def _wait_until(when: float) -> None:
    """Block until Unix time ``when`` (at most _SPIN seconds away, plus the loop's lateness).

    ``time.sleep`` (a high-resolution timer sleep) until _FINE before the instant, then a
    busy-wait: the precision of a busy-wait, but the core is left to the other agents
    that fire at the same instant for all but the last _FINE (five agents spinning 2 ms
    each on a 2-core machine compete for it). The event loop is held as long as before.
    """
    remaining = when - _FINE - time.time()
    if remaining > 0:
        time.sleep(remaining)  # bounded by _SPIN (the loop is held, as by a busy-wait)
    while time.time() < when:  # bounded: at most _FINE seconds, plus the sleep's lateness
        pass


def _give_way() -> None:
    """Let the other runnable processes of this CPU run now (``sched_yield``): agents on
    one host that share the cores all wake at the trigger instant."""
    yield_cpu = getattr(os, "sched_yield", None)
    if yield_cpu is not None:
        yield_cpu()


def _max_size(msg: Msg) -> int:
    try:
        size = int(msg.headers.get(wire.MAX_SIZE, ""))
    except ValueError:
        raise LocalProtocolError("missing or bad max size") from None
    if size < 0:
        raise LocalProtocolError("negative max size")
    return min(size, MAX_ANSWER)
