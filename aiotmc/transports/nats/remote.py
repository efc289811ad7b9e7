"""A remote instrument: the transport seam carried over NATS to the ``aiotmc agent`` that
owns the instrument (:mod:`aiotmc.protocol.remote` describes the wire).

Every seam operation is one request to the agent, which runs it on its own link to the
instrument, in order with other clients' requests. Deadlines travel with the request (the
agent applies them to the real operation) and bound the local wait (plus a margin for the
bus). A request that is cancelled or times out while the agent may be working on it
makes the link *stale*: an ``abort`` goes to the agent at once (it cancels the operation
if it still runs), and the next operation first asks the agent to resynchronise the
instrument (a device clear on its link), so that an answer meant for the abandoned
request can never reach a later one.
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Mapping, Sequence
from typing import Any, Final

import anyio
from anyio.lowlevel import checkpoint

from ..._background import BackgroundTask, spawn
from ..._exceptions import (
    ConnectionLostError,
    LocalProtocolError,
    PermissionDeniedError,
    ReadTimeout,
    RemoteProtocolError,
    ResourceNotFoundError,
    WriteTimeout,
)
from ..._types import BytesLike, RenMode
from ...protocol import remote as wire
from ...protocol.nats import Msg
from ...reconnect import Reconnect, retry_connect
from ...resources import NatsInstr
from ...srq import SrqBroadcaster
from ..base import Capabilities, TransportInfo
from .connection import NatsConnection, NatsServer, Subscription

__all__ = ["RemoteTransport"]

#: Added to the caller's deadline for the local wait: the bus and the agent's queue.
BUS_MARGIN: Final = 2.0
_DESCRIBE_TIMEOUT: Final = 5.0
_NO_RESPONDERS: Final = 503
_REFUSED: Final = 403  # synthetic: the server refused to let us publish the request
_CAPABILITY_NAMES: Final = (
    "srq",
    "read_stb",
    "device_clear",
    "trigger",
    "remote_local",
    "locking",
)


class RemoteTransport:
    """A :class:`~aiotmc.transports.base.MessageTransport` to an instrument of an agent."""

    def __init__(
        self,
        connection: NatsConnection,
        resource: NatsInstr,
        description: Mapping[str, Any],
        *,
        policy: Reconnect | None = None,
        connect_timeout: float | None = 10.0,
    ) -> None:
        self._nc = connection
        self._policy = policy
        self._connect_timeout = connect_timeout
        self._known = connection.cluster()  # where to go when this node stops
        self.reconnects = 0  #: how many times the link moved to a new connection
        self._resource = resource
        self._name = str(resource)
        self._subject = wire.rpc_subject(resource.agent, resource.instrument)
        caps = description.get("capabilities", {})
        flags = {n: bool(caps.get(n)) for n in _CAPABILITY_NAMES if isinstance(caps, dict)}
        self._info = TransportInfo(
            resource=self._name,
            kind="nats",
            capabilities=Capabilities(**flags),
            details={
                "agent": resource.agent,
                "remote_resource": str(description.get("resource", "")),
                "remote_kind": str(description.get("kind", "")),
            },
        )
        self._session = secrets.token_hex(8)
        self._busy = False
        self._stale = False
        self._closed = False
        self._srq = SrqBroadcaster(self._name) if flags.get("srq") else None
        self._srq_sub: Subscription | None = None
        self._srq_task: BackgroundTask | None = None

    @classmethod
    async def attach(
        cls,
        servers: Sequence[NatsServer],
        resource: NatsInstr,
        *,
        timeout: float | None,
        policy: Reconnect | None = None,
    ) -> RemoteTransport:
        """Connect (to the first of ``servers`` that answers), ask the agent what the
        instrument is, subscribe to its service requests. The link owns the connection."""
        connection = await NatsConnection.connect_any(
            servers, timeout=timeout, name=f"aiotmc {resource}"
        )
        try:
            return await cls._attach(connection, resource, timeout=timeout, policy=policy)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await connection.aclose()
            raise

    @classmethod
    async def _attach(
        cls,
        connection: NatsConnection,
        resource: NatsInstr,
        *,
        timeout: float | None,
        policy: Reconnect | None,
    ) -> RemoteTransport:
        limit = _DESCRIBE_TIMEOUT if timeout is None else timeout
        reply = await _request(
            connection,
            wire.rpc_subject(resource.agent, resource.instrument),
            {wire.OP: "describe"},
            b"",
            wait=limit,
            resource=str(resource),
        )
        try:
            description = json.loads(reply.payload)
            assert isinstance(description, dict)
        except (ValueError, AssertionError):
            raise RemoteProtocolError(f"{resource}: the agent's description is not JSON") from None
        self = cls(connection, resource, description, policy=policy, connect_timeout=timeout)
        await self._start_srqs()
        return self

    async def _start_srqs(self) -> None:
        if self._srq is None:
            return
        resource = self._resource
        self._srq_sub = await self._nc.subscribe(
            wire.srq_subject(resource.agent, resource.instrument), maxsize=256
        )
        self._srq_task = spawn(self._forward_srqs, name=f"SRQ of {resource}")

    async def _stop_srqs(self) -> None:
        with anyio.CancelScope(shield=True):
            if self._srq_task is not None:
                await self._srq_task.stop()
                self._srq_task = None
            if self._srq_sub is not None:
                await self._srq_sub.unsubscribe()
                self._srq_sub = None

    async def reconnect(self, *, deadline: float = math.inf) -> None:
        """A new connection, to this node or another of its cluster; the next operation
        resynchronises the instrument (a request may have been lost with the old one)."""
        if self._busy:
            raise anyio.BusyResourceError("another task is using this transport")
        self._busy = True
        try:
            await self._reconnect(deadline)
        finally:
            self._busy = False

    async def _reconnect(self, deadline: float) -> None:
        old = self._nc
        await self._stop_srqs()
        with anyio.CancelScope(shield=True):
            await old.aclose()
        timeout = self._connect_timeout
        if deadline != math.inf:
            left = max(0.001, deadline - anyio.current_time())
            timeout = left if timeout is None else min(timeout, left)
        new = await NatsConnection.connect_any(
            self._known, timeout=timeout, name=f"aiotmc {self._resource}"
        )
        self._nc = new
        for node in new.cluster():
            if node not in self._known:
                self._known.append(node)
        self.reconnects += 1
        self._stale = True
        await self._start_srqs()

    # -- the seam --------------------------------------------------------------------------

    @property
    def info(self) -> TransportInfo:
        """Static facts about the link (the remote instrument's abilities)."""
        return self._info

    @property
    def srq(self) -> SrqBroadcaster | None:
        """Service requests the agent forwards, if the instrument has them."""
        return self._srq

    @property
    def stale(self) -> bool:
        """True when the next operation first resynchronises the remote instrument."""
        return self._stale

    async def send_message(
        self, parts: Sequence[BytesLike], *, end: bool = True, deadline: float = math.inf
    ) -> None:
        """Send one message (the agent sends it to the instrument)."""
        payload = b"".join(parts)
        headers = {wire.END: "1" if end else "0"}
        await self._call("send", headers, payload, deadline, WriteTimeout)

    async def receive_message(self, *, max_size: int, deadline: float = math.inf) -> bytes:
        """Receive one response message."""
        reply = await self._call(
            "receive", {wire.MAX_SIZE: str(max_size)}, b"", deadline, ReadTimeout
        )
        return reply.payload

    async def exchange(self, message: bytes, *, max_size: int, deadline: float = math.inf) -> bytes:
        """Send and receive in one request (atomic at the agent)."""
        reply = await self._call(
            "exchange", {wire.MAX_SIZE: str(max_size)}, message, deadline, ReadTimeout
        )
        return reply.payload

    async def receive_block(
        self, into: memoryview | None = None, *, max_size: int, deadline: float = math.inf
    ) -> memoryview:
        """Receive a block: the agent reads it and sends it in chunks, written in place."""
        limit = max_size
        result: list[memoryview] = []

        async def assemble(first: Msg, more: anyio.abc.ObjectReceiveStream[Msg]) -> None:
            result.append(await _assemble(first, more, into, limit, self._name))

        await self._call("block", {wire.MAX_SIZE: str(limit)}, b"", deadline, ReadTimeout, assemble)
        return result[0]

    async def read_stb(self, *, deadline: float = math.inf) -> int:
        """The status byte, read by the agent over the instrument's bus."""
        reply = await self._call("stb", {}, b"", deadline, ReadTimeout)
        try:
            return int(reply.payload) & 0xFF
        except ValueError:
            raise RemoteProtocolError(
                f"{self._name}: bad status byte {reply.payload[:20]!r}"
            ) from None

    async def clear(self, *, deadline: float = math.inf) -> None:
        """Device clear at the agent."""
        await self._call("clear", {}, b"", deadline, ReadTimeout)

    async def trigger(self, *, deadline: float = math.inf) -> None:
        """Bus trigger at the agent."""
        await self._call("trigger", {}, b"", deadline, WriteTimeout)

    async def trigger_at(self, when: float, *, deadline: float = math.inf) -> float:
        """Have the agent trigger at Unix time ``when``; the time it actually fired."""
        reply = await self._call("trigger_at", {wire.ARG: repr(when)}, b"", deadline, WriteTimeout)
        try:
            return float(reply.payload)
        except ValueError:
            raise RemoteProtocolError(f"{self._name}: bad trigger time answered") from None

    async def control_ren(self, mode: RenMode, *, deadline: float = math.inf) -> None:
        """Remote / local / lockout at the agent."""
        await self._call("ren", {wire.ARG: str(int(mode))}, b"", deadline, WriteTimeout)

    async def lock(self, *, timeout: float = 0.0, deadline: float = math.inf) -> bool | None:
        """Take the agent's exclusive lock on the instrument for this link."""
        wait = max(0.0, timeout)
        if deadline != math.inf:
            deadline = max(deadline, anyio.current_time() + wait)
        reply = await self._call("lock", {wire.ARG: repr(wait)}, b"", deadline, ReadTimeout)
        return reply.payload == b"1"

    async def unlock(self, *, deadline: float = math.inf) -> None:
        """Release the lock this link holds."""
        await self._call("unlock", {}, b"", deadline, WriteTimeout)

    async def aclose(self) -> None:
        """Release a held lock at the agent, stop forwarding SRQs, close the connection."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            await self._stop_srqs()
            if not self._nc.closed:
                try:  # the agent also releases the lock of a session it no longer hears
                    await self._nc.publish(self._subject, b"", headers=self._headers("close"))
                except ConnectionLostError:
                    pass
            await self._nc.aclose()
            await checkpoint()

    # -- internals -------------------------------------------------------------------------

    def _headers(self, op: str) -> dict[str, str]:
        return {wire.OP: op, wire.SESSION: self._session}

    async def _call(
        self,
        op: str,
        headers: dict[str, str],
        payload: bytes,
        deadline: float,
        timeout_error: type[ReadTimeout] | type[WriteTimeout],
        consume: Any = None,
    ) -> Msg:
        if self._busy:
            raise anyio.BusyResourceError("another task is using this transport")
        if self._closed:
            raise anyio.ClosedResourceError
        self._busy = True
        try:
            if self._nc.closed:
                if self._policy is None:
                    raise self._nc._lost()
                await retry_connect(
                    self._policy,
                    lambda: self._reconnect(deadline),
                    resource=self._name,
                    deadline=deadline,
                )
            if self._stale:
                await self._resync(deadline)
            return await self._request(op, headers, payload, deadline, timeout_error, consume)
        finally:
            self._busy = False

    async def _resync(self, deadline: float) -> None:
        await self._request("resync", {}, b"", deadline, ReadTimeout, None)
        self._stale = False

    async def _request(
        self,
        op: str,
        headers: dict[str, str],
        payload: bytes,
        deadline: float,
        timeout_error: type[ReadTimeout] | type[WriteTimeout],
        consume: Any,
    ) -> Msg:
        now = anyio.current_time()
        if deadline <= now:
            self._stale = self._stale or op in {"send", "receive", "exchange", "block"}
            raise timeout_error(f"{self._name}: {op}: the deadline passed")
        all_headers = {**self._headers(op), **headers}
        ms = wire.timeout_header(deadline, now)
        if ms is not None:
            all_headers[wire.TIMEOUT] = ms
        wait = math.inf if deadline == math.inf else deadline - now + BUS_MARGIN
        nc = self._nc
        inbox, replies = nc.open_inbox()
        published = False
        done = False
        try:
            published = True  # from here the agent may have it, even if the send is cut
            await nc.publish(self._subject, payload, reply=inbox, headers=all_headers)
            with anyio.move_on_after(wait) as scope:
                try:
                    first = await replies.receive()
                except anyio.EndOfStream:
                    raise nc._lost() from None
            if scope.cancelled_caught:
                raise timeout_error(
                    f"{self._name}: {op}: no answer from agent {self._resource.agent!r} in time"
                )
            done = True  # the agent finished: its link kept its own contract
            _check_reply(first, self._name, self._resource)
            if consume is not None:
                done = False  # a block cut short leaves chunks on their way
                await consume(first, replies)
                done = True
            return first
        finally:
            nc.close_inbox(inbox)
            replies.close()
            if published and not done:
                await self._abandon(inbox)

    async def _abandon(self, inbox: str) -> None:
        """After a request that did not complete: abort it at the agent; resync next."""
        self._stale = True
        if self._nc.closed:
            return
        with anyio.CancelScope(shield=True):
            headers = {**self._headers("abort"), wire.ARG: inbox}
            try:
                await self._nc.publish(self._subject, b"", headers=headers)
            except ConnectionLostError:
                pass

    async def _forward_srqs(self) -> None:
        assert self._srq_sub is not None and self._srq is not None
        async for msg in self._srq_sub.messages:
            try:
                status = int(msg.payload) & 0xFF
            except ValueError:
                continue
            self._srq.publish(status)


async def _request(
    nc: NatsConnection,
    subject: str,
    headers: dict[str, str],
    payload: bytes,
    *,
    wait: float,
    resource: str,
) -> Msg:
    """A one-reply request outside a link (``describe``)."""
    inbox, replies = nc.open_inbox()
    try:
        await nc.publish(subject, payload, reply=inbox, headers=headers)
        with anyio.move_on_after(wait):
            try:
                msg = await replies.receive()
            except anyio.EndOfStream:
                raise nc._lost() from None
            name = NatsInstr.from_url(resource) if resource.startswith("nats://") else None
            _check_reply(msg, resource, name)
            return msg
        raise ResourceNotFoundError(f"{resource}: no answer from its agent within {wait} s")
    finally:
        nc.close_inbox(inbox)
        replies.close()


def _check_reply(msg: Msg, resource: str, name: NatsInstr | None) -> None:
    if msg.status == _REFUSED:
        raise PermissionDeniedError(
            f"the NATS server's permissions do not let this user use it "
            f"({msg.payload.decode('utf-8', 'replace')})",
            resource=resource,
        )
    if msg.status == _NO_RESPONDERS:
        who = f"agent {name.agent!r} serving {name.instrument!r}" if name else "agent"
        raise ResourceNotFoundError(f"{resource}: no {who} on the NATS server")
    status = msg.headers.get(wire.STATUS)
    if status == "ok":
        return
    if status == "error":
        raise wire.error_from_reply(msg.headers, msg.payload, resource=resource)
    raise RemoteProtocolError(f"{resource}: malformed reply from the agent")


async def _assemble(
    first: Msg,
    more: anyio.abc.ObjectReceiveStream[Msg],
    into: memoryview | None,
    max_size: int,
    resource: str,
) -> memoryview:
    """Write a chunked block into ``into`` (or a new buffer), checking order and sizes."""
    try:
        size = int(first.headers.get(wire.SIZE, "-1"))
        index, count = (int(x) for x in first.headers.get(wire.CHUNK, "").split("/"))
    except ValueError:
        raise RemoteProtocolError(f"{resource}: malformed block chunk header") from None
    if size < 0 or size > max_size or not 0 < count <= wire.MAX_CHUNKS or index != 0:
        raise RemoteProtocolError(f"{resource}: block of {size} bytes in {count} chunks refused")
    too_small = into is not None and len(into) < size
    target = memoryview(bytearray(size)) if into is None or too_small else into[:size]
    pos = 0
    msg = first
    for expected in range(count):
        if expected:
            try:
                msg = await more.receive()
            except anyio.EndOfStream:
                raise ConnectionLostError(
                    f"the NATS connection closed after {pos} of {size} block bytes",
                    resource=resource,
                ) from None
            if msg.headers.get(wire.CHUNK) != f"{expected}/{count}":
                raise RemoteProtocolError(f"{resource}: block chunk out of order")
        data = msg.payload
        if pos + len(data) > size:
            raise RemoteProtocolError(f"{resource}: block chunks exceed the announced size")
        target[pos : pos + len(data)] = data
        pos += len(data)
    if pos != size:
        raise RemoteProtocolError(f"{resource}: block of {size} bytes ended after {pos}")
    if too_small:
        assert into is not None
        raise LocalProtocolError(f"block of {size} bytes does not fit the {len(into)}-byte buffer")
    return target
