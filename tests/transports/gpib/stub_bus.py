"""The simulated GPIB bus behind ``libgpib_stub.c``: build the stub, serve the devices.

:func:`build_stub` compiles ``libgpib_stub.c`` with ``cc`` into a shared library;
:class:`StubBus` serves :class:`~aiotmc.sim.SimDevice` instruments at GPIB addresses on
a Unix socket that the stub's descriptors connect to (``AIOTMC_GPIB_STUB``). Each answer
comes within the timeout the request carries, so the stub's blocking calls block for as
long as a real controller's would, and no longer.
"""

from __future__ import annotations

import math
import shutil
import struct
import subprocess
from pathlib import Path
from types import TracebackType

import anyio
from anyio.abc import SocketStream, TaskGroup
from anyio.streams.buffered import BufferedByteReceiveStream

from aiotmc.sim import SimDevice

SOURCE = Path(__file__).with_name("libgpib_stub.c")
_REQUEST = struct.Struct("<BBBBII")
_ANSWER = struct.Struct("<iII")
_EABO, _ENOL = 6, 2
_END, _RQS, _TIMED_OUT = 1, 2, 4
_MAX_REQUEST = 64 << 20


def build_stub(directory: Path) -> Path:
    """Compile the stub library into ``directory`` (``RuntimeError`` without ``cc``)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("no C compiler (cc): install gcc")
    target = directory / "libgpib-stub.so.0"
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-O1", "-pthread", "-o", str(target), str(SOURCE)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return target


class StubBus:
    """Serve ``{address: device}`` to the stub library (async context manager)."""

    def __init__(self, devices: dict[int, SimDevice], path: Path) -> None:
        self.devices = devices
        self.path = path
        self.requests: list[tuple[str, int]] = []  #: (op, address) of every request
        self.local: set[int] = set()  #: addresses sent to local (ibloc)
        self._pending: dict[int, bytearray] = {}
        self._changed = anyio.Event()
        self._task_group: TaskGroup | None = None

    async def __aenter__(self) -> StubBus:
        listener = await anyio.create_unix_listener(self.path)
        for device in self.devices.values():
            device.add_srq_listener(lambda _stb: self._wake())
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        task_group.start_soon(self._listen, listener)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        task_group, self._task_group = self._task_group, None
        assert task_group is not None
        task_group.cancel_scope.cancel()
        return await task_group.__aexit__(exc_type, exc, tb)

    async def _listen(self, listener: anyio.abc.Listener[SocketStream]) -> None:
        async with listener:
            await listener.serve(self._serve)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def _serve(self, stream: SocketStream) -> None:
        reader = BufferedByteReceiveStream(stream)
        async with stream:
            try:
                while True:
                    head = await reader.receive_exactly(_REQUEST.size)
                    op, pad, _sad, flags, timeout_ms, length = _REQUEST.unpack(head)
                    if length > _MAX_REQUEST:
                        return
                    data = await reader.receive_exactly(length) if length else b""
                    timeout = timeout_ms / 1000 if timeout_ms else math.inf
                    err, out_flags, payload = await self._handle(chr(op), pad, flags, data, timeout)
                    self._wake()
                    await stream.send(_ANSWER.pack(err, out_flags, len(payload)) + payload)
            except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError):
                return

    async def _handle(
        self, op: str, pad: int, flags: int, data: bytes, timeout: float
    ) -> tuple[int, int, bytes]:
        self.requests.append((op, pad))
        device = self.devices.get(pad)
        if op in "IEe":  # board operations: nothing to simulate beyond accepting them
            return -1, 0, b""
        if device is None:
            if op == "R":
                await anyio.sleep(min(timeout, 0.05))
                return _EABO, _TIMED_OUT, b""
            return _ENOL, 0, b""
        if op == "W":
            self.local.discard(pad)
            device.write(data)
            return -1, 0, b""
        if op == "R":
            (want,) = struct.unpack("<I", data[:4])
            pending = self._pending.setdefault(pad, bytearray())
            if not pending:
                ready = await self._until(device, lambda: self._fetch(pad, device), timeout)
                if not ready:
                    return _EABO, _TIMED_OUT, b""
                pending = self._pending[pad]
            chunk = bytes(pending[:want])
            del pending[:want]
            return -1, _END if not pending else 0, chunk
        if op == "S":
            return -1, 0, bytes([device.serial_poll()])
        if op == "C":
            self._pending.pop(pad, None)
            device.device_clear()
            return -1, 0, b""
        if op == "T":
            device.trigger()
            return -1, 0, b""
        if op == "L":
            self.local.add(pad)
            return -1, 0, b""
        if op == "Q":
            asserted = await self._until(device, lambda: device.requesting_service, timeout)
            return -1, _RQS if asserted else _TIMED_OUT, b""
        return 4, 0, b""  # EARG: an op this bus does not know

    def _fetch(self, pad: int, device: SimDevice) -> bool:
        parts = device.read_parts()
        if parts is None:
            return False
        self._pending[pad] = bytearray(b"".join(bytes(part) for part in parts))
        return True

    async def _until(self, device: SimDevice, ready: object, timeout: float) -> bool:
        """Wait (bounded by ``timeout``) until ``ready()``; woken by any request, any SRQ
        and the device's own deadlines."""
        assert callable(ready)
        end = anyio.current_time() + timeout
        while not ready():
            now = anyio.current_time()
            if now >= end:
                return False
            due = device.next_deadline()
            wake = end if due is None else min(end, now + max(0.0, due - device.clock()))
            with anyio.move_on_after(max(0.001, wake - now)):
                await self._changed.wait()
        return True
