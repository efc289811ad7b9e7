"""A simulated Prologix GPIB-ETHERNET adapter: several GPIB instruments behind one TCP port.

:class:`PrologixServer` listens on TCP (port 1234 on a real adapter; a free port here) and
speaks the Prologix ``++`` protocol (also spoken by AR488 firmware) in controller mode to
:class:`~aiotmc.sim.SimDevice` instruments at GPIB addresses 0-30:

* a line is ended by an unescaped LF or CR; ``ESC`` makes the next byte (CR, LF, ESC,
  ``+``) data; a line starting with an unescaped ``++`` is a command, any other line is
  data for the addressed instrument, sent with EOI (``++eoi 1``) and the ``++eos``
  terminator (0: CR LF, 1: CR, 2: LF, 3: none).
* commands: ``++addr [pad [sad]]``, ``++auto [0|1]``, ``++clr``, ``++eoi [0|1]``,
  ``++eos [0-3]``, ``++eot_enable [0|1]``, ``++eot_char [n]``, ``++ifc``, ``++llo``,
  ``++loc``, ``++mode [0|1]``, ``++read [eoi|n]``, ``++read_tmo_ms [ms]``, ``++rst``,
  ``++savecfg``, ``++spoll [pad [sad]]``, ``++srq`` (1 while an instrument requests
  service that no serial poll has read), ``++trg``, ``++ver``. Queries (a
  command without its argument) answer with the value and CR LF; unknown ones are ignored.
* ``++read`` sends the addressed instrument's next answer as raw bytes (nothing is
  escaped towards the host), or nothing if none is readable within ``++read_tmo_ms``.

``mode``/``auto`` set what a new session starts with (a real adapter remembers its last
saved configuration: DEVICE mode, read-after-write...); in DEVICE mode (0) the controller
commands are ignored and data lines reach no instrument. ``fixed_mode`` refuses ``++mode``
changes, like firmware built without controller support.

With ``pty=True`` the adapter is a GPIB-USB one instead: it serves on a pseudo-terminal
(:attr:`PrologixServer.path`, resources ``PRLGX-ASRL0::/dev/pts/N::pad::INSTR``).

Bounds (docs/reliability.md): per connection the input is limited to ``max_line`` bytes
per line (4 MiB; longer lines are dropped and logged once), at most ``max_connections``
clients (a real adapter takes one), an idle timeout, and a send timeout after which a
client that does not read is dropped; the bus lock is never held while a socket drains.
:attr:`PrologixServer.remote` records the remote/lockout state ``++loc``/``++llo`` left.
"""

from __future__ import annotations

import logging
import math
import os
import re
import socket
import tty
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import anyio
from anyio.abc import SocketStream, TaskGroup

from ._serving import BackgroundServer
from .device import SimDevice

__all__ = ["VERSION", "PrologixServer"]

_log = logging.getLogger("aiotmc.sim.prologix_server")

VERSION: Final = "Prologix GPIB-ETHERNET Version 1.6.6.0 (aiotmc simulator)"
_LINE_END: Final = re.compile(rb"(?:[^\x1b\r\n]|\x1b[\s\S])*[\r\n]")
_UNESCAPE: Final = re.compile(rb"\x1b([\s\S])")
_EOS: Final = {0: b"\r\n", 1: b"\r", 2: b"\n", 3: b""}
_RECV: Final = 64 * 1024
_CONTROLLER_ONLY: Final = frozenset(
    {"read", "spoll", "srq", "clr", "trg", "ifc", "llo", "loc", "read_tmo_ms", "auto"}
)


@dataclass
class _Session:
    """The adapter settings one client connection changes."""

    address: tuple[int, int | None] = (0, None)
    auto: bool = False
    eoi: bool = True
    eos: int = 0
    eot_enable: bool = False
    eot_char: int = 10
    read_tmo: float = 0.5
    mode: int = 1
    pending: bytearray = field(default_factory=bytearray)
    overrun: bool = False


class _PtyStream:
    """``receive``/``send`` over a non-blocking pty master fd."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    async def receive(self, max_bytes: int) -> bytes:
        while True:
            try:
                data = os.read(self.fd, max_bytes)
            except BlockingIOError:
                await anyio.wait_readable(self.fd)
                continue
            if data:
                return data
            await anyio.wait_readable(self.fd)

    async def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.fd, view) :]
            except BlockingIOError:
                await anyio.wait_writable(self.fd)


class PrologixServer(BackgroundServer):
    """Serve ``{address: device}`` behind one simulated adapter (async context manager)."""

    def __init__(
        self,
        devices: Mapping[int, SimDevice],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_line: int = 4 << 20,
        max_connections: int = 4,
        idle_timeout: float = 600.0,
        send_timeout: float = 10.0,
        pty: bool = False,
        mode: int = 1,
        auto: bool = False,
        fixed_mode: bool = False,
    ) -> None:
        for address in devices:
            if not 0 <= address <= 30:
                raise ValueError(f"GPIB addresses are 0..30, got {address}")
        self.devices = dict(devices)
        self.host = host
        self.port = port
        self.max_line = max_line
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.send_timeout = send_timeout
        #: address -> "remote", "local" or "lockout", as ``++loc``/``++llo``/data left it
        self.remote: dict[int, str] = {}
        self.commands: list[str] = []  #: every ``++`` command received (for tests)
        self.connections = 0
        self.pty = pty  #: serve on a pseudo-terminal (a GPIB-USB adapter) instead of TCP
        #: settings a new session starts with (a real adapter keeps what was saved)
        self.initial_mode = mode
        self.initial_auto = auto
        #: refuse ``++mode`` changes (firmware without controller support)
        self.fixed_mode = fixed_mode
        self.path = ""  #: the pty clients open, when ``pty``
        self._fds: tuple[int, int] | None = None
        self._bus = anyio.Lock()
        self._task_group: TaskGroup | None = None
        self._listener: anyio.abc.Listener[SocketStream] | None = None

    def resource(self, address: int, secondary: int | None = None) -> str:
        """The aiotmc resource name of the instrument at ``address``."""
        sad = "" if secondary is None else f"::{secondary}"
        if self.pty:
            return f"PRLGX-ASRL0::{self.path}::{address}{sad}::INSTR"
        return f"PRLGX-TCPIP0::{self.host}::{self.port}::{address}{sad}::INSTR"

    @property
    def interface(self) -> str:
        """The adapter as pyvisa-py names it: ``PRLGX-TCPIP0::host::port::INTFC``."""
        if self.pty:
            return f"PRLGX-ASRL0::{self.path}::INTFC"
        return f"PRLGX-TCPIP0::{self.host}::{self.port}::INTFC"

    async def _open(self) -> None:
        if self.pty:
            master, slave = os.openpty()
            self._fds = (master, slave)  # closed by _close if the rest fails
            tty.setraw(slave)
            os.set_blocking(master, False)
            self.path = os.ttyname(slave)
            return
        listener = await anyio.create_tcp_listener(local_host=self.host, local_port=self.port)
        self._listener = listener
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)

    def _start(self, task_group: TaskGroup) -> None:
        if self._fds is not None:
            task_group.start_soon(self._serve_pty, self._fds[0])
        else:
            assert self._listener is not None
            task_group.start_soon(self._listener.serve, self._serve)

    async def _close(self) -> None:
        if self._listener is not None:
            await self._listener.aclose()
            self._listener = None
        fds, self._fds = self._fds, None
        for fd in fds or ():
            try:
                anyio.notify_closing(fd)
            except Exception:  # nobody waiting
                pass
            os.close(fd)

    async def _serve_pty(self, master: int) -> None:
        """One endless session on the pty (the server keeps the slave open, so clients
        come and go; a serial adapter keeps its settings across them)."""
        stream = _PtyStream(master)
        session = self._new_session()
        while True:
            try:
                await self._converse(stream, session)
            except TimeoutError:
                _log.info("prologix sim: pty client idle or not reading")

    def _new_session(self) -> _Session:
        return _Session(mode=self.initial_mode, auto=self.initial_auto)

    # -- one client -------------------------------------------------------------------------

    async def _serve(self, stream: SocketStream) -> None:
        async with stream:
            if self.connections >= self.max_connections:
                _log.warning("prologix sim: connection refused, %d open", self.connections)
                return
            self.connections += 1
            try:
                stream.extra(anyio.abc.SocketAttribute.raw_socket).setsockopt(
                    socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
                )
                await self._converse(stream, self._new_session())
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass
            except TimeoutError:
                _log.info("prologix sim: client idle or not reading, dropped")
            finally:
                self.connections -= 1

    async def _converse(self, stream: SocketStream | _PtyStream, session: _Session) -> None:
        buffer = session.pending
        while True:
            with anyio.fail_after(self.idle_timeout):
                data = await stream.receive(_RECV)
            buffer += data
            start = 0
            while True:
                match = _LINE_END.match(buffer, start)
                if match is None:
                    break
                line = bytes(buffer[start : match.end() - 1])
                start = match.end()
                reply = await self._line(line, session)
                if reply:
                    with anyio.fail_after(self.send_timeout):
                        await stream.send(reply)
            del buffer[:start]
            if len(buffer) > self.max_line:
                if not session.overrun:
                    session.overrun = True
                    _log.warning("prologix sim: line over %d bytes dropped", self.max_line)
                # keep only a possibly open escape; the rest of the line is dropped
                del buffer[: len(buffer) - 1]

    async def _line(self, line: bytes, session: _Session) -> bytes:
        if not line:
            return b""
        if line.startswith(b"++"):
            return await self._command(line[2:].decode("ascii", "replace").strip(), session)
        data = _UNESCAPE.sub(rb"\1", line) + _EOS[session.eos]
        if session.mode == 0:
            return b""  # DEVICE mode: data goes to the controller, none here
        async with self._bus:
            device = self.devices.get(session.address[0])
            if device is not None:
                self.remote.setdefault(session.address[0], "remote")
                if self.remote[session.address[0]] == "local":
                    self.remote[session.address[0]] = "remote"
                device.write(data)
            if session.auto:
                return await self._read(session)
        return b""

    async def _read(self, session: _Session) -> bytes:
        """The addressed device's next answer (bus lock held), or nothing on time-out."""
        device = self.devices.get(session.address[0])
        if device is None:
            await anyio.sleep(session.read_tmo)
            return b""
        with anyio.move_on_after(session.read_tmo):
            while True:
                parts = device.read_parts()
                if parts is not None:
                    answer = b"".join(parts)
                    if session.eot_enable:
                        answer += bytes([session.eot_char])
                    return answer
                deadline = device.next_deadline()
                delay = 0.05 if deadline is None else max(0.0, deadline - device.clock())
                await anyio.sleep(min(delay, 0.05) if math.isfinite(delay) else 0.05)
        return b""

    async def _command(self, text: str, session: _Session) -> bytes:
        self.commands.append(text)
        name, _, argument = text.partition(" ")
        name = name.lower()
        args = argument.split()
        numbers = [int(a) for a in args if a.isdigit()]
        value: object
        if name == "addr":
            if not numbers:
                return f"{session.address[0]}\r\n".encode()
            sad = None if len(numbers) < 2 else numbers[1] - 96 if numbers[1] >= 96 else numbers[1]
            session.address = (numbers[0], sad)
            return b""
        simple = {"auto": "auto", "eoi": "eoi", "eot_enable": "eot_enable"}
        if name in simple:
            if not numbers:
                return f"{int(getattr(session, simple[name]))}\r\n".encode()
            setattr(session, simple[name], bool(numbers[0]))
            return b""
        if session.mode == 0 and name in _CONTROLLER_ONLY:
            return b""  # not available in DEVICE mode
        if name == "mode" and numbers and self.fixed_mode:
            return b""
        if name in ("eos", "eot_char", "mode"):
            if not numbers:
                return f"{getattr(session, name)}\r\n".encode()
            setattr(session, name, numbers[0] if name != "eos" else min(numbers[0], 3))
            return b""
        if name == "read_tmo_ms":
            if not numbers:
                return f"{round(session.read_tmo * 1000)}\r\n".encode()
            session.read_tmo = max(1, min(numbers[0], 3000)) / 1000
            return b""
        if name == "read":
            async with self._bus:
                return await self._read(session)
        if name == "spoll":
            address = numbers[0] if numbers else session.address[0]
            device = self.devices.get(address)
            if device is None:
                return b""
            async with self._bus:
                value = device.serial_poll()
            return f"{value}\r\n".encode()
        if name == "srq":
            async with self._bus:
                value = int(any(d.requesting_service for d in self.devices.values()))
            return f"{value}\r\n".encode()
        device = self.devices.get(session.address[0])
        if name == "clr":
            if device is not None:
                async with self._bus:
                    device.device_clear()
        elif name == "trg":
            if device is not None:
                async with self._bus:
                    device.trigger()
        elif name == "loc":
            self.remote[session.address[0]] = "local"
        elif name == "llo":
            self.remote[session.address[0]] = "lockout"
        elif name == "ver":
            return f"{VERSION}\r\n".encode()
        return b""  # ifc, rst, savecfg and unknown commands: nothing to answer
