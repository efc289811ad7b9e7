"""The umockdev device process: testbed, emulated devices, GLib loop, control channel.

Run with the *system* Python (it has PyGObject and the UMockdev typelib)::

    PYTHONPATH=<checkout> /usr/bin/python3 -m testbeds.umockdev \\
        --devices '[{"config": {"model": "dmm", "serial": "A1"}}]'

On start it prints one line ``READY <json>`` on stdout with ``root`` (set
``UMOCKDEV_DIR`` to it in the client, together with
``LD_PRELOAD=libumockdev-preload.so.0``), ``control`` (a unix socket path) and the
devices (``devnode``, ``syspath``, ``bus``, ``address``, ``vid``, ``pid``, ``serial``).

Control commands, one per line on stdin or on the control socket; each gets one JSON
reply line ``{"ok": true, ...}`` / ``{"ok": false, "error": ...}``. An optional first
token ``@N`` selects device N (default 0):

``ping`` · ``stats`` · ``unplug`` · ``latency <seconds>`` · ``stall <endpoint>`` ·
``interrupt <hex>`` · ``srq [stb]`` · ``storm <count> [per_tick] [interval_ms]`` ·
``ignore-discards [0|1]`` · ``call <method> [json-args]`` · ``get <attribute>`` ·
``set <attribute> <json>`` · ``quit``

``call``, ``get`` and ``set`` take a dotted path from the device's function
(``call model.delay_next_responses [2.0, 1]``, ``set response_delay 0.5``,
``get seen.triggers``). ``storm`` sends ``count`` SRQ notifications, ``per_tick`` of them
every ``interval_ms`` (defaults 1 and 1), with status bytes ``0x40 | (n & 0x3F)`` for
n = 0, 1, ...: through the function's own interrupt queue when it has one, so they
interleave with READ_STATUS_BYTE replies as on a real device.

The process exits when stdin reaches EOF (the parent went away) or on ``quit``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import shutil
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from aiotmc.sim.usb_function import UsbFunction

from .device import EmulatedUsbDevice

__all__ = ["ControlServer", "load_factory", "main"]

DEFAULT_FACTORY = "testbeds.umockdev.factories:usbtmc"

_INSTALL_HINT = (
    "umockdev is not available to this Python: install the Debian/Ubuntu packages "
    "`umockdev gir1.2-umockdev-1.0 python3-gi` and run this module with /usr/bin/python3"
)


def _log(message: str) -> None:
    sys.stderr.write(f"[aiotmc-umockdev {os.getpid()}] {message}\n")
    sys.stderr.flush()


def load_factory(spec: str) -> Callable[[dict[str, Any]], UsbFunction]:
    """``"package.module:callable"`` -> the callable (called with the config dict)."""
    module_name, _, attribute = spec.partition(":")
    if not attribute:
        raise ValueError(f"factory must look like 'module:callable', not {spec!r}")
    factory: Callable[[dict[str, Any]], UsbFunction] = getattr(
        importlib.import_module(module_name), attribute
    )
    return factory


class ControlServer:
    """Dispatches control commands to the emulated devices; owns the GLib scheduling."""

    def __init__(self, devices: list[EmulatedUsbDevice], glib: Any, loop: Any) -> None:
        self.devices = devices
        self._glib = glib
        self._loop = loop
        self._timer: int | None = None
        self._timer_due: float | None = None
        self._idle: int | None = None
        for device in devices:
            device.on_change = self.reschedule
            device.on_wakeup = self._wakeup

    def _wakeup(self) -> None:
        if self._idle is None:
            self._idle = self._glib.idle_add(self._on_idle)

    def _on_idle(self) -> bool:
        self._idle = None
        for device in self.devices:
            device.service()
        return False

    # -- scheduling --------------------------------------------------------------------

    def reschedule(self) -> None:
        """Arm one GLib timeout for the earliest device deadline."""
        deadlines = [d for d in (device.next_deadline() for device in self.devices) if d]
        due = min(deadlines) if deadlines else None
        if due == self._timer_due:
            return
        if self._timer is not None:
            self._glib.source_remove(self._timer)
            self._timer = None
        self._timer_due = due
        if due is not None:
            delay_ms = max(0, int((due - time.monotonic()) * 1000 + 0.999))
            self._timer = self._glib.timeout_add(delay_ms, self._on_timer)

    def _on_timer(self) -> bool:
        self._timer = None
        self._timer_due = None
        for device in self.devices:
            device.service()
        self.reschedule()
        return False

    def tick(self) -> bool:
        """Periodic housekeeping: forget closed clients, re-offer pending URBs."""
        for device in self.devices:
            device.forget_dead_clients()
            device.service()
        return True

    # -- commands ----------------------------------------------------------------------

    def handle(self, line: str) -> dict[str, Any]:
        words = line.split()
        if not words:
            return {"ok": True}
        index = 0
        if words[0].startswith("@"):
            index = int(words.pop(0)[1:])
        if not words:
            return {"ok": False, "error": "empty command"}
        command, args = words[0].lower(), words[1:]
        try:
            device = self.devices[index]
            result = self._run(device, command, args)
        except Exception as exc:
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        reply: dict[str, Any] = {"ok": True}
        if result is not None:
            reply["result"] = result
        return reply

    def _storm(self, device: EmulatedUsbDevice, count: int, per_tick: int, interval: int) -> None:
        inject_srq = getattr(device.function, "inject_srq", None)
        sent = 0

        def tick() -> bool:
            nonlocal sent
            if not device.plugged:
                return False
            for _ in range(min(per_tick, count - sent)):
                stb = 0x40 | (sent & 0x3F)
                if callable(inject_srq):
                    inject_srq(stb)
                else:
                    device.inject_interrupt(bytes([0x81, stb]))
                sent += 1
            device.service()
            return sent < count

        self._glib.timeout_add(max(0, interval), tick)

    def _run(self, device: EmulatedUsbDevice, command: str, args: list[str]) -> Any:
        if command == "ping":
            return None
        if command == "stats":
            return device.stats_dict()
        if command == "unplug":
            device.unplug()
            return None
        if command == "latency":
            device.latency = float(args[0])
            return None
        if command == "ignore-discards":
            device.ignore_discards = bool(int(args[0])) if args else True
            return None
        if command == "stall":
            device.stall(int(args[0], 0))
            return None
        if command == "interrupt":
            device.inject_interrupt(bytes.fromhex(args[0]))
            return None
        if command == "srq":
            stb = int(args[0], 0) if args else 0x40
            request_service = getattr(device.function, "request_service", None)
            if callable(request_service):
                request_service(stb)
                device.service()
            else:
                device.inject_interrupt(bytes([0x81, stb]))
            return None
        if command == "storm":
            count = int(args[0])
            per_tick = int(args[1]) if len(args) > 1 else 1
            interval = int(args[2]) if len(args) > 2 else 1
            self._storm(device, count, max(1, per_tick), interval)
            return None
        if command in ("call", "get", "set"):
            owner, _, name = args[0].rpartition(".")
            target: Any = device.function
            for part in filter(None, owner.split(".")):
                target = getattr(target, part)
            if command == "set":
                setattr(target, name, json.loads(" ".join(args[1:])))
                device.service()
                return None
            value = getattr(target, name)
            if command == "call" and callable(value):
                call_args = json.loads(" ".join(args[1:])) if len(args) > 1 else []
                value = value(*call_args)
                device.service()
            return _jsonable(value)
        if command == "quit":
            self._loop.quit()
            return None
        raise ValueError(f"unknown command {command!r}")


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (int, float, str, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return repr(value)


def _watch_lines(
    glib: Any, fd: int, on_line: Callable[[str], None], on_eof: Callable[[], None]
) -> None:
    buffer = bytearray()

    def on_ready(_fd: int, _condition: Any) -> bool:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            chunk = b""
        if not chunk:
            on_eof()
            return False
        buffer.extend(chunk)
        while b"\n" in buffer:
            raw, _, rest = bytes(buffer).partition(b"\n")
            buffer[:] = rest
            on_line(raw.decode("utf-8", "replace"))
        return True

    condition = glib.IOCondition.IN | glib.IOCondition.HUP | glib.IOCondition.ERR
    glib.io_add_watch(fd, glib.PRIORITY_DEFAULT, condition, on_ready)


def _serve_socket(glib: Any, path: str, server: ControlServer) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)
    listener.setblocking(False)
    connections: list[socket.socket] = []

    def on_accept(_fd: int, _condition: Any) -> bool:
        try:
            connection, _ = listener.accept()
        except BlockingIOError:
            return True
        connection.setblocking(True)
        connections.append(connection)

        def on_line(line: str) -> None:
            reply = json.dumps(server.handle(line)) + "\n"
            with contextlib.suppress(OSError):
                connection.sendall(reply.encode())

        def on_eof() -> None:
            connections.remove(connection)
            connection.close()

        _watch_lines(glib, connection.fileno(), on_line, on_eof)
        return True

    glib.io_add_watch(listener.fileno(), glib.PRIORITY_DEFAULT, glib.IOCondition.IN, on_accept)
    return listener


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m testbeds.umockdev", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--devices",
        default='[{"config": {}}]',
        help='JSON list of {"factory": "module:callable", "config": {...}} (one per device)',
    )
    parser.add_argument("--factory", default=DEFAULT_FACTORY, help="default device factory")
    parser.add_argument("--bus", type=int, default=1)
    args = parser.parse_args(argv)

    try:
        import gi

        gi.require_version("UMockdev", "1.0")
        from gi.repository import GLib, UMockdev
    except (ImportError, ValueError) as exc:
        _log(f"{_INSTALL_HINT} ({exc})")
        return 2

    specs = json.loads(args.devices)
    testbed = UMockdev.Testbed.new()
    devices: list[EmulatedUsbDevice] = []
    for number, spec in enumerate(specs):
        factory = load_factory(spec.get("factory", args.factory))
        function = factory(dict(spec.get("config", {})))
        device = EmulatedUsbDevice(
            function,
            umockdev=UMockdev,
            testbed=testbed,
            bus=int(spec.get("bus", args.bus)),
            address=int(spec.get("address", 2 + number)),
            port=int(spec.get("port", 1 + number)),
            log=_log,
        )
        device.plug()
        devices.append(device)

    loop = GLib.MainLoop()
    server = ControlServer(devices, GLib, loop)
    root = testbed.get_root_dir()
    control_path = os.path.join(root, "aiotmc-control.sock")
    listener = _serve_socket(GLib, control_path, server)

    def on_stdin_line(line: str) -> None:
        sys.stdout.write(json.dumps(server.handle(line)) + "\n")
        sys.stdout.flush()

    _watch_lines(GLib, sys.stdin.fileno(), on_stdin_line, loop.quit)
    GLib.timeout_add(200, server.tick)
    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, signum, lambda: loop.quit() or False)

    ready = {
        "root": root,
        "control": control_path,
        "pid": os.getpid(),
        "devices": [
            {
                "devnode": device.devnode,
                "syspath": device.syspath,
                "bus": device.bus,
                "address": device.address,
                "vid": device.vid,
                "pid": device.pid,
                **device.strings,
            }
            for device in devices
        ],
    }
    sys.stdout.write("READY " + json.dumps(ready) + "\n")
    sys.stdout.flush()
    try:
        loop.run()
    except Exception:
        _log("main loop failed:\n" + traceback.format_exc())
        return 1
    finally:
        listener.close()
        devices.clear()
        server.devices = []
        del testbed
        # The Testbed's finalizer would remove its directory, but PyGObject does not
        # guarantee it runs at exit: remove it ourselves.
        shutil.rmtree(root, ignore_errors=True)
    return 0
