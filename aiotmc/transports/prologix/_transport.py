"""One GPIB instrument behind a Prologix-compatible adapter (see :mod:`._adapter`).

Every operation takes the adapter's lock, makes sure the adapter is connected and
initialised, addresses the instrument (``++addr`` when another one was addressed), then:
``send_message`` sends the escaped data line, ``receive_message``/``receive_block`` ask
``++read eoi`` and frame the answer on the terminator (blocks by length), ``exchange``
does both in one write, ``read_stb`` is ``++spoll``, ``trigger`` ``++trg``, ``clear``
``++clr`` (selected device clear), ``control_ren`` ``++loc``/``++llo``,
``interface_clear`` ``++ifc``. Service requests: :attr:`PrologixTransport.srq`, fed by the
adapter's SRQ poller (:mod:`._srq`) while subscribed.

Cancellation and deadlines: an operation stopped part-way marks the adapter stale (it is
reconnected before the next transaction, dropping bytes still in flight) and this
instrument *uncleared*: its next operation first sends ``++clr``, so an answer the
instrument still holds never reaches a later exchange.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import anyio

from ..._exceptions import ReadTimeout, RemoteProtocolError, UnsupportedOperation, WriteTimeout
from ..._types import BytesLike, RenMode
from .._bytestream import FramedStream
from .._srq_on_demand import OnDemandRequests
from ..base import Capabilities, TransportInfo
from ._adapter import PrologixAdapter, acquire_lock, escape

if TYPE_CHECKING:
    from ...srq import SrqBroadcaster

__all__ = ["PrologixTransport"]

_CAPABILITIES: Final = Capabilities(
    srq=True, read_stb=True, device_clear=True, trigger=True, remote_local=True
)
_READ: Final = b"++read eoi\n"


class PrologixTransport:
    """A :class:`~aiotmc.transports.base.MessageTransport` to one GPIB address."""

    def __init__(
        self,
        adapter: PrologixAdapter,
        *,
        primary: int,
        secondary: int | None = None,
        resource: str,
        terminator: bytes = b"\n",
    ) -> None:
        self._adapter = adapter
        self._primary = primary
        self._secondary = secondary
        self._terminator = terminator
        self._busy = False
        self._closed = False
        self._uncleared = False
        self._srq = OnDemandRequests(resource, self._want_srq)
        adapter.links.add(self)
        self._info = TransportInfo(
            resource=resource,
            kind="prologix",
            capabilities=_CAPABILITIES,
            details={
                "adapter": f"{adapter.host}:{adapter.port}",
                "gpib_address": str(primary) + ("" if secondary is None else f",{secondary}"),
            },
        )

    @property
    def info(self) -> TransportInfo:
        """Static facts about the link."""
        return self._info

    @property
    def srq(self) -> SrqBroadcaster:
        """Service requests of this instrument (the adapter polls ``++srq`` while there is
        a subscriber, then serial-polls to find the requester)."""
        return self._srq

    @property
    def srq_subscribers(self) -> int:
        """How many service-request subscriptions are open on this instrument."""
        return self._srq.subscriber_count

    @property
    def address(self) -> tuple[int, int | None]:
        """The GPIB (primary, secondary) address."""
        return (self._primary, self._secondary)

    def _want_srq(self) -> None:
        if not self._closed:
            self._adapter.srq_poller.want()

    @property
    def adapter(self) -> PrologixAdapter:
        """The adapter shared with the other instruments on this bus."""
        return self._adapter

    def set_read_termination(self, terminator: bytes) -> None:
        """Frame later responses on ``terminator``."""
        if not terminator:
            raise ValueError("a Prologix adapter needs a read termination to frame messages")
        if self._busy:
            raise anyio.BusyResourceError("cannot change the terminator in mid-message")
        self._terminator = terminator

    # -- messages --------------------------------------------------------------------------

    async def send_message(
        self, parts: Sequence[BytesLike], *, end: bool = True, deadline: float = math.inf
    ) -> None:
        """Send the parts as one escaped data line (EOI on its last byte unless ``end``
        is False)."""
        line = [*(escape(part) for part in parts), b"\n"]  # escaping is per byte
        if not end:
            line = [b"++eoi 0\n", *line, b"++eoi 1\n"]
        async with self._transaction(deadline, reading=False) as stream:
            await stream.send(line, deadline)

    async def receive_message(self, *, max_size: int, deadline: float = math.inf) -> bytes:
        """``++read eoi`` and one response message, terminator included."""
        try:
            async with self._transaction(deadline) as stream:
                await stream.send((_READ,), deadline)
                return await stream.receive_message(max_size, deadline)
        except WriteTimeout as exc:
            raise _nothing_read(exc) from exc

    async def exchange(self, message: bytes, *, max_size: int, deadline: float = math.inf) -> bytes:
        """Send ``message`` and read its response, in one write to the adapter."""
        async with self._transaction(deadline) as stream:
            await stream.send((escape(message), b"\n", _READ), deadline)
            return await stream.receive_message(max_size, deadline)

    async def receive_block(
        self, into: memoryview | None = None, *, max_size: int, deadline: float = math.inf
    ) -> memoryview:
        """``++read eoi`` and a block response; the payload goes straight to ``into``."""
        try:
            async with self._transaction(deadline) as stream:
                await stream.send((_READ,), deadline)
                return await stream.receive_block(into, max_size, deadline)
        except WriteTimeout as exc:
            raise _nothing_read(exc) from exc

    # -- bus operations --------------------------------------------------------------------

    async def read_stb(self, *, deadline: float = math.inf) -> int:
        """Serial poll (``++spoll``)."""
        async with self._transaction(deadline, terminator=b"\n") as stream:
            await stream.send((b"++spoll\n",), deadline)
            line = await stream.receive_message(64, deadline)
        text = line.strip()
        if not text.isdigit() or int(text) > 255:
            raise RemoteProtocolError(f"++spoll answered {line!r}, not a status byte")
        return int(text)

    async def trigger(self, *, deadline: float = math.inf) -> None:
        """Group execute trigger to this instrument (``++trg``)."""
        async with self._transaction(deadline, reading=False) as stream:
            await stream.send((b"++trg\n",), deadline)

    async def clear(self, *, deadline: float = math.inf) -> None:
        """Selected device clear (``++clr``)."""
        async with self._transaction(deadline, reading=False) as stream:
            await stream.send((b"++clr\n",), deadline)

    async def control_ren(self, mode: RenMode | int, *, deadline: float = math.inf) -> None:
        """Remote/local: go-to-local (``++loc``) and local lockout (``++llo``).

        In controller mode the adapter keeps REN asserted, so the "assert" operations only
        address the instrument (it goes remote when it next listens); REN cannot be
        released on its own (``DEASSERT`` sends go-to-local, as ``DEASSERT_GTL``).
        """
        mode = RenMode(mode)
        command = {
            RenMode.DEASSERT: b"++loc\n",
            RenMode.DEASSERT_GTL: b"++loc\n",
            RenMode.ADDRESS_GTL: b"++loc\n",
            RenMode.ASSERT_LLO: b"++llo\n",
            RenMode.ASSERT_ADDRESS_LLO: b"++llo\n",
        }.get(mode, b"")
        async with self._transaction(deadline, reading=False) as stream:
            if command:
                await stream.send((command,), deadline)

    async def interface_clear(self, *, deadline: float = math.inf) -> None:
        """Pulse IFC on the adapter's bus (``++ifc``): every instrument on it is
        unaddressed (the controller takes charge again)."""
        async with self._transaction(deadline, reading=False) as stream:
            await stream.send((b"++ifc\n",), deadline)

    async def aclose(self) -> None:
        """Release the adapter (the last instrument closes its connection)."""
        if not self._closed:
            self._closed = True
            self._srq.close()
            self._adapter.links.discard(self)
            self._adapter.release()
        await anyio.lowlevel.checkpoint()

    # -- internals ---------------------------------------------------------------------------

    def _transaction(
        self, deadline: float, *, terminator: bytes | None = None, reading: bool = True
    ) -> _Transaction:
        if self._busy:
            raise anyio.BusyResourceError("another task is using this transport")
        if self._closed:
            raise anyio.ClosedResourceError
        return _Transaction(self, deadline, terminator or self._terminator, reading)


def _nothing_read(exc: WriteTimeout) -> ReadTimeout:
    """A read whose adapter commands (``++addr``, ``++read``) could not go out before the
    deadline timed out as a read: nothing of the instrument's was read (a serial line in
    worker threads needs a hop for every write, so an expired deadline ends it here)."""
    return ReadTimeout(f"no response before the deadline ({exc})")


class _Transaction:
    """Lock the bus, resynchronise, address; on a failure part-way, mark for recovery."""

    __slots__ = ("_deadline", "_link", "_locked", "_reading", "_terminator")

    def __init__(
        self, link: PrologixTransport, deadline: float, terminator: bytes, reading: bool
    ) -> None:
        self._reading = reading
        self._link = link
        self._deadline = deadline
        self._terminator = terminator
        self._locked = False

    async def __aenter__(self) -> FramedStream:
        link = self._link
        link._busy = True
        adapter = link._adapter
        try:
            await acquire_lock(adapter.lock, self._deadline, self._reading)
            self._locked = True
            stream = await adapter.ready(self._deadline)
            await adapter.select(link._primary, link._secondary, self._deadline)
            if link._uncleared:
                await stream.send((b"++clr\n",), self._deadline)
                link._uncleared = False
            if stream.terminator != self._terminator:
                stream.set_terminator(self._terminator)
        except BaseException as exc:
            self._failed(exc)
            self._release()
            raise
        return stream

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        try:
            if exc is not None:
                self._failed(exc)
        finally:
            self._release()

    def _failed(self, exc: BaseException) -> None:
        if not self._locked:
            return  # nothing was sent
        adapter = self._link._adapter
        if isinstance(exc, RemoteProtocolError) and adapter.stream.in_step:
            return  # a whole message was consumed: in step
        if isinstance(exc, UnsupportedOperation):
            return
        adapter.stale = True
        self._link._uncleared = True

    def _release(self) -> None:
        self._link._busy = False
        if self._locked:
            self._locked = False
            self._link._adapter.lock.release()
