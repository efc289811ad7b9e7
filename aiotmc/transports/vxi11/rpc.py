"""One ONC-RPC client connection over TCP (a non-blocking socket, anyio waits, no threads).

Sends and receives are tried first and wait (``anyio.wait_writable`` /
``anyio.wait_readable``) only when the socket is not ready: a cancelled wait consumes
nothing, so the framing survives any cancellation that is not mid-send.

:meth:`RpcChannel.call` sends one CALL and waits for the REPLY with its XID. Replies
with another XID are late answers to calls given up earlier (cancelled or timed out)
and are skipped; :attr:`RpcChannel.abandoned` counts the replies still owed. A call
cancelled while its CALL was only partly sent leaves the stream unusable:
:attr:`RpcChannel.broken` is then True and the owner reconnects.
"""

from __future__ import annotations

import logging
import math
import random
import socket
import struct
from collections.abc import Sequence
from typing import Final

import anyio

from ..._buffers import drop_sent
from ..._exceptions import (
    ConnectError,
    ConnectionLostError,
    ConnectTimeout,
    LocalProtocolError,
    ReadTimeout,
    RemoteProtocolError,
    WriteTimeout,
)
from ..._types import BytesLike
from ..._wake_threshold import wake_threshold
from ...protocol.framing import NEED_DATA
from ...protocol.oncrpc import (
    AUTH_NONE,
    LAST_FRAGMENT,
    MAX_FRAGMENT,
    RPC_VERSION,
    Placement,
    RecordReassembler,
    decode_reply,
    peek_xid,
)
from .._probe import AnswerProbe
from .._receivers import Receiver, receiver_for
from ..tcp import connect_socket

__all__ = ["RpcChannel"]

_log = logging.getLogger("aiotmc.transports.vxi11")

_RECV_SIZE: Final = 256 * 1024
_JOIN_LIMIT: Final = 64 * 1024  # smaller calls go out as one send
_MAX_SKIPPED: Final = 64  # replies with foreign XIDs tolerated while waiting for one call
_CALL_HEADER: Final = 40
_MARKED_CALL: Final = struct.Struct(">11I")  # record mark + CALL header (AUTH_NONE)
_REPLY_OK: Final = struct.Struct(">6I")  # xid, REPLY, MSG_ACCEPTED, verifier (0, 0), SUCCESS
_ACCEPTED: Final = (1, 0, 0, 0, 0)


class RpcChannel:
    """An RPC client for one program/version over one TCP connection."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        prog: int,
        vers: int,
        max_record: int,
        resource: str | None = None,
    ) -> None:
        self._sock: socket.socket | None = sock
        self._receiver: Receiver | None = None  # made on first use, on the running loop
        self._buffer = memoryview(bytearray(_RECV_SIZE))
        self._prog = prog
        self._vers = vers
        self._resource = resource
        self._where = f"{resource}: " if resource else ""
        self._reassembler = RecordReassembler(max_size=max_record)
        self._xid = random.getrandbits(32)
        self._outstanding: set[int] = set()  # XIDs of calls sent and not answered yet
        self._probe = AnswerProbe()  # look for the reply right after sending?
        self._fresh = False  # a call was just sent: the next receive asks the probe
        self._lowat = 1  # the socket's SO_RCVLOWAT (see aiotmc/_wake_threshold.py)
        self.broken = False  #: the stream is out of step: close it and connect again

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        *,
        prog: int,
        vers: int,
        max_record: int,
        deadline: float,
        what: str,
        resource: str | None = None,
    ) -> RpcChannel:
        """Connect to ``host:port`` (ConnectError / ConnectTimeout) and return a channel."""
        timeout = None if math.isinf(deadline) else max(0.0, deadline - anyio.current_time())
        try:
            sock = await connect_socket(host, port, timeout=timeout)
        except ConnectTimeout:
            raise ConnectTimeout(f"no connection to the {what} at {host}:{port} in time") from None
        except ConnectError as exc:
            raise ConnectError(f"{what}: {exc}") from exc.__cause__
        return cls(sock, prog=prog, vers=vers, max_record=max_record, resource=resource)

    @property
    def local_address(self) -> str:
        """Our address on this connection (as the server sees it)."""
        sock = self._socket()
        address: str = sock.getsockname()[0]
        return address

    @property
    def max_record(self) -> int:
        """The largest reply accepted."""
        return self._reassembler.max_size

    @max_record.setter
    def max_record(self, size: int) -> None:
        if self._reassembler.at_record_start:
            self._reassembler = RecordReassembler(max_size=size)

    async def aclose(self) -> None:
        """Close the connection (never blocks)."""
        self.broken = True
        sock, self._sock = self._sock, None
        receiver, self._receiver = self._receiver, None
        if receiver is not None:
            receiver.close()
        if sock is not None:
            try:
                anyio.notify_closing(sock)  # wakes a task waiting on it
            except Exception:
                pass
            sock.close()
        with anyio.CancelScope(shield=True):
            await anyio.lowlevel.checkpoint()

    @property
    def abandoned(self) -> int:
        """Replies owed to calls nobody waits for any more (between operations)."""
        return len(self._outstanding)

    async def call(
        self,
        proc: int,
        args: Sequence[BytesLike],
        *,
        wait_until: float = math.inf,
        writing: bool = False,
    ) -> memoryview:
        """Call ``proc`` with the concatenation of ``args``; return the results.

        ``wait_until`` (absolute ``anyio.current_time()``) bounds the whole call: past it,
        :class:`~aiotmc.WriteTimeout` while sending, :class:`~aiotmc.ReadTimeout` while
        waiting (WriteTimeout for a call that is a write: ``writing``). RPC-level refusals
        raise :class:`~aiotmc.protocol.oncrpc.RpcError`.
        """
        xid = await self.send_call(proc, args, wait_until=wait_until)
        return await self.reply(xid, wait_until=wait_until, writing=writing, proc=proc)

    async def send_call(
        self, proc: int, args: Sequence[BytesLike], *, wait_until: float = math.inf
    ) -> int:
        """Send one CALL without waiting for its reply; its XID (see :meth:`reply`)."""
        (xid,) = await self.send_calls([(proc, args)], wait_until=wait_until)
        return xid

    async def send_calls(
        self,
        calls: Sequence[tuple[int, Sequence[BytesLike]]],
        *,
        wait_until: float = math.inf,
    ) -> list[int]:
        """Send CALLs back to back (one send when small); their XIDs, in order."""
        xids = []
        pieces: list[BytesLike] = []
        total = 0
        for proc, args in calls:
            self._xid = xid = (self._xid + 1) & 0xFFFFFFFF
            size = _CALL_HEADER + sum(map(len, args))
            if size > MAX_FRAGMENT:
                raise LocalProtocolError(f"RPC call of {size} bytes exceeds one record fragment")
            pieces.append(
                _MARKED_CALL.pack(
                    size | LAST_FRAGMENT, xid, 0, RPC_VERSION, self._prog, self._vers, proc,
                    AUTH_NONE, 0, AUTH_NONE, 0,
                )
            )  # fmt: skip
            pieces.extend(args)
            total += 4 + size
            xids.append(xid)
        if await self._send(pieces, total, wait_until):
            self._outstanding.update(xids)
            self._fresh = True
            return xids
        self.broken = True
        raise WriteTimeout(f"{self._where}RPC calls {[p for p, _ in calls]} not sent in time")

    async def reply(
        self, xid: int, *, wait_until: float = math.inf, writing: bool = False, proc: int = 0
    ) -> memoryview:
        """Wait for the reply to call ``xid`` (calls sent earlier are answered first and
        skipped when nobody waits for them). A reply given up stays owed (:attr:`abandoned`).
        """
        try:
            return await self._await_reply(xid, wait_until)
        except TimeoutError:
            pass  # nothing of the reply was consumed: it stays owed
        if writing:
            raise WriteTimeout(f"{self._where}no reply to RPC call {proc} in time")
        raise ReadTimeout(f"{self._where}no reply to RPC call {proc} in time")

    async def reply_placed(
        self,
        xid: int,
        place: Placement,
        *,
        wait_until: float = math.inf,
        proc: int = 0,
    ) -> tuple[memoryview, tuple[int, int] | None]:
        """As :meth:`reply`, offering ``place`` to put a large reply's bytes straight into
        the caller's buffer (see :data:`~aiotmc.protocol.oncrpc.Placement`; only the
        reply to ``xid`` is placed). Returns the results and, when placed, (offset,
        size) of the stretch that is missing from them (record offsets). Once this
        returns or raises, nothing more is written to the caller's buffer."""
        reassembler = self._reassembler

        def placement(prefix: memoryview, length: int) -> tuple[int, memoryview] | None:
            return place(prefix, length) if peek_xid(prefix) == xid else None

        reassembler.place_next(placement)
        try:
            results = await self.reply(xid, wait_until=wait_until, proc=proc)
            return results, reassembler.take_placed()
        finally:
            reassembler.detach()

    def _socket(self) -> socket.socket:
        sock = self._sock
        if sock is None:
            self.broken = True
            raise ConnectionLostError("the connection is closed", resource=self._resource)
        return sock

    async def _send(self, pieces: Sequence[BytesLike], size: int, wait_until: float) -> bool:
        """Send everything (True) or time out at ``wait_until`` (False). The first try
        needs no cancel scope: only a wait for the socket can be cancelled or time out."""
        sock = self._socket()
        if size <= _JOIN_LIMIT:
            data = b"".join(pieces)
            try:
                sent = sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                self.broken = True
                raise ConnectionLostError(f"send failed: {exc!r}", resource=self._resource) from exc
            if sent == size:
                return True  # the usual case: one system call
            views = [memoryview(data)[sent:]]
        else:
            views = [memoryview(p).cast("B") for p in pieces if len(p)]
        if self._send_some(sock, views):
            return True
        try:
            with anyio.CancelScope(deadline=wait_until):
                while True:
                    await anyio.wait_writable(sock)
                    if self._send_some(sock, views):
                        return True
        except BaseException:
            self.broken = True  # part of a CALL may be on the wire
            raise
        self.broken = True
        return False

    def _send_some(self, sock: socket.socket, views: list[memoryview]) -> bool:
        """Send what the socket takes now, dropping it from ``views``; True when all is sent."""
        while views:
            try:
                sent = sock.sendmsg(views)
            except BlockingIOError:
                return False
            except OSError as exc:
                self.broken = True
                raise ConnectionLostError(f"send failed: {exc!r}", resource=self._resource) from exc
            drop_sent(views, sent)
        return True

    async def _await_reply(self, xid: int, wait_until: float) -> memoryview:
        reassembler = self._reassembler
        skipped = 0
        while True:
            try:
                record = reassembler.next_record_view()
            except RemoteProtocolError:
                self.broken = True  # the framing is lost
                raise
            if record is NEED_DATA:
                await self._fill(wait_until)
                continue
            assert isinstance(record, bytes | memoryview)
            if len(record) >= 24:  # the usual case: accepted, empty verifier, SUCCESS
                head = _REPLY_OK.unpack_from(record)
                if head[0] == xid and head[1:] == _ACCEPTED:
                    self._outstanding.discard(xid)
                    return memoryview(record)[24:]
            try:
                reply = decode_reply(record)
                record_xid: int | None = reply.xid
            except RemoteProtocolError as exc:
                record_xid = peek_xid(record)
                if record_xid == xid:
                    self._outstanding.discard(xid)
                    raise RemoteProtocolError(
                        f"garbled RPC reply: {exc}; {bytes(record[:40])!r}"
                    ) from exc
                reply = None
            if reply is not None and reply.xid == xid:
                self._outstanding.discard(xid)
                return reply.check()
            skipped += 1
            if record_xid in self._outstanding:
                self._outstanding.discard(record_xid)
                _log.debug("skipped a late RPC reply (xid %s)", record_xid)
            else:
                _log.warning("skipped an unexpected RPC record: %r", bytes(record[:40]))
            if skipped > _MAX_SKIPPED:
                self.broken = True
                raise RemoteProtocolError(
                    f"{skipped} RPC records with unexpected XIDs while waiting for {xid}"
                )

    async def _fill(self, wait_until: float) -> None:
        """Receive what is there (TimeoutError at ``wait_until``, nothing consumed)."""
        sock = self._socket()
        receiver = self._receiver
        if receiver is None:
            receiver = self._receiver = receiver_for(sock)
        direct = self._reassembler.receive_buffer()  # a large record: straight into it
        view = self._buffer if direct is None else direct
        # The rest of a long record: wake once per megabyte, not per segment batch (any
        # other receive puts the threshold back to 1 before it waits).
        remaining = 0 if direct is None else len(direct)
        if remaining or self._lowat != 1:
            self._lowat = wake_threshold(sock, remaining, self._lowat)
        # Right after a send, the reply is looked for only as the probe says (a loopback
        # peer may have answered already; a remote one practically never has).
        just_sent, self._fresh = self._fresh, False
        try:
            n = -1
            if just_sent and self._probe.should_look():
                try:
                    n = sock.recv_into(view)
                    self._probe.found()
                except BlockingIOError:
                    self._probe.missed()
            if n < 0:
                n = await receiver.recv_into(view, wait_until, not just_sent)
        except TimeoutError:
            raise
        except OSError as exc:
            self.broken = True
            raise ConnectionLostError(f"receive failed: {exc!r}", resource=self._resource) from exc
        if n == 0:
            self.broken = True
            raise ConnectionLostError("the server closed the connection", resource=self._resource)
        if direct is None:
            self._reassembler.receive_data(self._buffer[:n])
        else:
            self._reassembler.commit(n)
