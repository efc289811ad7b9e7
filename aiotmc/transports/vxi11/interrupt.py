"""The client side of the VXI-11 interrupt channel: a tiny RPC server the devices call.

A link listens on the address its core connection uses (the address the device sees),
tells the device with create_intr_chan, and enables service requests with
device_enable_srq and a non-empty handle of its own. The device then connects (once; the
connection is persistent) and calls device_intr_srq for each service request. Those calls
are one-way: never answered (pyvisa-py #614). Each one is published to the
:class:`~aiotmc.srq.SrqBroadcaster` of the link whose handle it carries, with the status
byte that link's ``status()`` reads (the transport polls it on a link of its own, so the
link in use is never disturbed); when that fails, with the RQS bit alone.

All links of one event loop on one local address share one listener
(:func:`acquire` / :func:`release`, counted): ten links to a gateway cost one port and one
background task. The listener and its connections run in one background task owned by
the event loop (:func:`aiotmc._background.spawn`), so links can be closed from any task;
it stops when the last link releases it. A client sending junk is logged once and
dropped; the listener keeps serving.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import anyio
from anyio.abc import SocketListener, SocketStream

from ..._background import BackgroundTask, spawn
from ..._exceptions import RemoteProtocolError
from ..._loops import running_loop, running_trio
from ..._types import StatusByte
from ...protocol.framing import NEED_DATA
from ...protocol.oncrpc import RecordReassembler, decode_call
from ...protocol.vxi11 import DEVICE_INTR, VERSION, DeviceSrqParms, Proc
from ...srq import SrqBroadcaster

__all__ = ["InterruptServer", "acquire", "release", "shared_listeners"]

_log = logging.getLogger("aiotmc.transports.vxi11")

_MAX_RECORD: Final = 4096
_RECV_SIZE: Final = 4096
_MAX_CONNECTIONS: Final = 64  # devices connected back at once (one per core connection)

Status = Callable[[], Awaitable[int | None]]


@dataclass(eq=False)
class _Subscriber:
    srq: SrqBroadcaster
    status: Status | None
    resource: str


def _loop_key() -> object:
    """The running event loop (asyncio) or trio run (its token): listeners are per loop."""
    trio = running_trio()
    if trio is not None:
        return trio.lowlevel.current_trio_token()
    loop = running_loop()
    assert loop is not None
    return loop


_SHARED: dict[tuple[object, str], InterruptServer] = {}


async def acquire(
    local_host: str,
    handle: bytes,
    srq: SrqBroadcaster,
    *,
    resource: str,
    status: Status | None = None,
) -> InterruptServer:
    """The listener of this loop on ``local_host`` (started on first need), with ``srq``
    subscribed to the service requests that carry ``handle``. Pair with :func:`release`."""
    if not handle:
        raise ValueError("the SRQ handle must not be empty")
    key = (_loop_key(), local_host)
    server = _SHARED.get(key)
    if server is None or server.stopped:
        server = InterruptServer(key)
        _SHARED[key] = server
        try:
            await server.start(local_host)
        except BaseException:
            _SHARED.pop(key, None)
            raise
    if handle in server.subscribers:
        raise ValueError(f"SRQ handle {handle!r} is already in use on this listener")
    server.subscribers[handle] = _Subscriber(srq, status, resource)
    return server


async def release(server: InterruptServer, handle: bytes) -> None:
    """Unsubscribe ``handle``; the last one out stops the listener (completes under
    cancellation)."""
    server.subscribers.pop(handle, None)
    if not server.subscribers:
        if _SHARED.get(server.key) is server:
            del _SHARED[server.key]
        await server.stop()


def shared_listeners() -> int:
    """Listeners running now (tests)."""
    return len(_SHARED)


class InterruptServer:
    """Receives device_intr_srq calls and publishes each to the subscriber of its handle
    (use :func:`acquire` and :func:`release`)."""

    def __init__(self, key: tuple[object, str]) -> None:
        self.key = key
        self.subscribers: dict[bytes, _Subscriber] = {}
        self.stopped = False
        self._resource = f"VXI-11 interrupt channel on {key[1]}"
        self._listener: SocketListener | None = None
        self._task: BackgroundTask | None = None
        self._connections = 0
        self.port = 0  #: the TCP port devices connect to
        self.received = 0  #: device_intr_srq calls received
        self.rejected = 0  #: connections dropped for junk

    async def start(self, local_host: str) -> int:
        """Listen on ``local_host`` (a free port) and serve in the background."""
        multi = await anyio.create_tcp_listener(local_host=local_host, local_port=0)
        listener = multi.listeners[0]
        for extra in multi.listeners[1:]:
            await extra.aclose()
        assert isinstance(listener, SocketListener)
        self._listener = listener
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        self._task = spawn(self._serve, name=f"aiotmc {self._resource}")
        return self.port

    async def stop(self) -> None:
        """Stop serving and close the listener (completes under cancellation)."""
        self.stopped = True
        task, self._task = self._task, None
        if task is not None:
            await task.stop(timeout=1.0)
        listener, self._listener = self._listener, None
        if listener is not None:
            with anyio.CancelScope(shield=True):
                await listener.aclose()

    async def _serve(self) -> None:
        listener = self._listener
        assert listener is not None
        async with anyio.create_task_group() as tg:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    _log.warning("%s: interrupt channel accept failed: %s", self._resource, exc)
                    await anyio.sleep(0.1)
                    continue
                if self._connections >= _MAX_CONNECTIONS:
                    await stream.aclose()
                    continue
                tg.start_soon(self._read, stream)

    async def _read(self, stream: SocketStream) -> None:
        self._connections += 1
        reassembler = RecordReassembler(max_size=_MAX_RECORD)
        try:
            async with stream:
                while True:
                    record = reassembler.next_record()
                    if record is NEED_DATA:
                        reassembler.receive_data(await stream.receive(_RECV_SIZE))
                        continue
                    assert isinstance(record, bytes)
                    subscriber = self._handle(record)
                    if subscriber is None:
                        continue
                    status = subscriber.status
                    stb = None if status is None else await status()
                    subscriber.srq.publish(StatusByte.RQS if stb is None else stb)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        except RemoteProtocolError as exc:
            self.rejected += 1
            _log.warning("%s: junk on the interrupt channel, dropped: %s", self._resource, exc)
        finally:
            self._connections -= 1

    def _handle(self, record: bytes) -> _Subscriber | None:
        """The subscriber a device_intr_srq call is for (None: a foreign handle)."""
        call = decode_call(record)
        if call.prog != DEVICE_INTR or call.vers != VERSION or call.proc != Proc.DEVICE_INTR_SRQ:
            raise RemoteProtocolError(
                f"expected device_intr_srq, got program {call.prog:#x} procedure {call.proc}"
            )
        handle = bytes(DeviceSrqParms.decode(call.args).handle)  # trailing bytes tolerated
        self.received += 1  # a one-way call: never answered
        subscriber = self.subscribers.get(handle)
        if subscriber is None and len(self.subscribers) == 1:
            # One link only: a device that mangles the handle still reaches it.
            (subscriber,) = self.subscribers.values()
        if subscriber is None:
            _log.debug("%s: SRQ with a foreign handle %r", self._resource, handle)
        return subscriber
