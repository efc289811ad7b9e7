"""The client side of the VXI-11 interrupt channel: a tiny RPC server the device calls.

The transport listens on the address its core connection uses (the address the device
sees), tells the device with create_intr_chan, and enables service requests with
device_enable_srq and a non-empty handle. The device then connects (once; the connection
is persistent) and calls device_intr_srq for each service request. Those calls are
one-way: never answered (pyvisa-py #614). Each one is published to the link's
:class:`~aiotmc.srq.SrqBroadcaster` with the status byte that ``status()`` reads (the
transport polls it on a link of its own, so the link in use is never disturbed); when
that fails, with the RQS bit alone.

The listener and its connections run in one background task owned by the event loop
(:func:`aiotmc._background.spawn`), so the link can be closed from any task. A client
sending junk is logged once and dropped; the listener keeps serving.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final

import anyio
from anyio.abc import SocketListener, SocketStream

from ..._background import BackgroundTask, spawn
from ..._exceptions import RemoteProtocolError
from ..._types import StatusByte
from ...protocol.oncrpc import RecordReassembler, decode_call
from ...protocol.scpi import NEED_DATA
from ...protocol.vxi11 import DEVICE_INTR, VERSION, DeviceSrqParms, Proc
from ...srq import SrqBroadcaster

__all__ = ["InterruptServer"]

_log = logging.getLogger("aiotmc.transports.vxi11")

_MAX_RECORD: Final = 4096
_RECV_SIZE: Final = 4096
_MAX_CONNECTIONS: Final = 4


class InterruptServer:
    """Receives device_intr_srq calls and publishes them to ``srq``."""

    def __init__(
        self,
        srq: SrqBroadcaster,
        *,
        handle: bytes,
        resource: str,
        status: Callable[[], Awaitable[int | None]] | None = None,
    ) -> None:
        if not handle:
            raise ValueError("the SRQ handle must not be empty")
        self._srq = srq
        self._status = status
        self.handle = handle
        self._resource = resource
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
        self._task = spawn(self._serve, name=f"aiotmc VXI-11 interrupt channel {self._resource}")
        return self.port

    async def stop(self) -> None:
        """Stop serving and close the listener (completes under cancellation)."""
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
                    self._handle(record)
                    stb = None if self._status is None else await self._status()
                    self._srq.publish(StatusByte.RQS if stb is None else stb)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        except RemoteProtocolError as exc:
            self.rejected += 1
            _log.warning("%s: junk on the interrupt channel, dropped: %s", self._resource, exc)
        finally:
            self._connections -= 1

    def _handle(self, record: bytes) -> None:
        call = decode_call(record)
        if call.prog != DEVICE_INTR or call.vers != VERSION or call.proc != Proc.DEVICE_INTR_SRQ:
            raise RemoteProtocolError(
                f"expected device_intr_srq, got program {call.prog:#x} procedure {call.proc}"
            )
        handle = bytes(DeviceSrqParms.decode(call.args).handle)  # trailing bytes tolerated
        if handle != self.handle:
            _log.debug("%s: SRQ with a foreign handle %r", self._resource, handle)
        self.received += 1  # a one-way call: never answered
