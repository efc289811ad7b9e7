"""One emulated USB device: a :class:`~aiotmc.sim.usb_function.UsbFunction` behind usbdevfs.

umockdev forwards every ioctl a client makes on the emulated ``/dev/bus/usb/BBB/DDD``
to :meth:`EmulatedUsbDevice.handle_ioctl` (GLib main loop of this process). URBs map to
``UsbFunction`` calls:

* control and OUT URBs are answered at once (the function consumes / answers them);
* IN URBs queue per endpoint; the head URB is offered to ``bulk_in``/``interrupt_in``
  whenever something may have changed (an ioctl, a fault command, the function's
  ``next_deadline`` passing) until it returns data (``None`` = NAK, keep waiting);
* completed URBs wait (optionally ``latency`` seconds) until the client reaps them
  (``REAPURBNDELAY``; ``EAGAIN`` when none); ``DISCARDURB`` completes one with ``-ENOENT``.

Fault injection (:meth:`unplug`, :meth:`stall`, :meth:`inject_interrupt`, ``latency``)
acts at URB level, like the kernel would: after an unplug pending URBs complete with
``-ESHUTDOWN`` and new ones fail with ``ENODEV``. Stdlib only (plus the ``gi`` objects
handed in), so it runs under the system Python that has PyGObject and UMockdev.
"""

from __future__ import annotations

import errno
import struct
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiotmc.protocol.events import ControlRequest
from aiotmc.sim.usb_function import Stall, UsbFunction

from . import usbdevfs as fs
from .usbdevfs import Ioctl, UrbHeader, UrbType, ioctl_name

__all__ = ["EmulatedUsbDevice", "string_descriptor_text"]


def string_descriptor_text(raw: bytes) -> str | None:
    """Decode a USB string descriptor (UTF-16-LE after the 2-byte header)."""
    if len(raw) < 2 or raw[1] != 3:
        return None
    return raw[2 : raw[0]].decode("utf-16-le", "replace")


@dataclass(eq=False)
class _Urb:
    client: Any
    address: int  # the client's struct usbdevfs_urb pointer
    header: UrbHeader
    data: Any  # UMockdev.IoctlData of the urb struct (kept from SUBMITURB)
    buffer: Any = None  # resolved buffer child, if loaded at submit
    status: int = 0
    actual_length: int = 0
    in_data: bytes = b""
    done: bool = False
    ready_at: float = 0.0


@dataclass(eq=False)
class _Client:
    client: Any
    claimed: set[int] = field(default_factory=set)
    submitted: dict[int, _Urb] = field(default_factory=dict)
    completed: deque[_Urb] = field(default_factory=deque)
    blocked_reap: Any = None  # the IoctlClient waiting in a blocking REAPURB


@dataclass
class _EndpointStats:
    submitted: int = 0
    completed: int = 0
    discarded: int = 0
    stalled: int = 0
    bytes: int = 0
    peak_outstanding: int = 0  #: most URBs submitted and not yet reaped at once


class EmulatedUsbDevice:
    """A ``UsbFunction`` attached to a ``UMockdev.Testbed`` as a usbfs device."""

    def __init__(
        self,
        function: UsbFunction,
        *,
        umockdev: Any,
        testbed: Any,
        bus: int = 1,
        address: int = 2,
        port: int = 1,
        speed: int = 480,
        clock: Callable[[], float] = time.monotonic,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.function = function
        self._umockdev = umockdev
        self._testbed = testbed
        self.bus = bus
        self.address = address
        self.port = port
        self.speed = speed
        self.clock = clock
        self._log = log or (lambda message: None)
        self.devnode = f"/dev/bus/usb/{bus:03d}/{address:03d}"
        self.syspath = ""
        self.latency = 0.0
        #: Fault: DISCARDURB "succeeds" but the URB never completes (a libusb/kernel bug).
        self.ignore_discards = False
        self.plugged = False
        self._clients: dict[int, _Client] = {}
        self._in_queues: dict[int, deque[_Urb]] = {}
        self._halted: set[int] = set()
        self._interrupts: dict[int, deque[bytes]] = {}
        self._handler: Any = None
        self.stats: dict[int, _EndpointStats] = {}
        self.ioctl_counts: dict[str, int] = {}
        self.clients_seen = 0
        self.on_change: Callable[[], None] = lambda: None
        #: Called when the function signals news outside a call (SRQ, disconnect); the
        #: server points it at a GLib idle callback that runs :meth:`service`.
        self.on_wakeup: Callable[[], None] = lambda: None
        set_wakeup = getattr(function, "set_wakeup", None)
        if callable(set_wakeup):
            set_wakeup(lambda: self.on_wakeup())
        self._descriptors = bytes(function.descriptors)
        self.vid, self.pid = struct.unpack_from("<HH", self._descriptors, 8)
        self.strings = self._read_strings()

    # -- setup -------------------------------------------------------------------------

    def _read_strings(self) -> dict[str, str | None]:
        result: dict[str, str | None] = {}
        for name, offset in (("manufacturer", 14), ("product", 15), ("serial", 16)):
            index = self._descriptors[offset] if len(self._descriptors) > offset else 0
            text = None
            if index:
                raw = self.function.control(
                    ControlRequest(
                        request_type=0x80, request=6, value=0x300 | index, index=0x0409, length=255
                    )
                )
                if not isinstance(raw, Stall):
                    text = string_descriptor_text(bytes(raw))
            result[name] = text
        return result

    def plug(self) -> str:
        """Attach the ioctl handler, then add the device to the testbed; returns syspath."""
        handler = self._umockdev.IoctlBase()
        handler.connect("handle-ioctl", self._on_ioctl)
        self._handler = handler
        if not self._testbed.attach_ioctl(self.devnode, handler):
            raise RuntimeError(f"umockdev refused to attach an ioctl handler to {self.devnode}")
        sysname = f"{self.bus}-{self.port}"
        lines = [
            f"P: /devices/pci0000:00/0000:00:14.0/usb{self.bus}/{sysname}",
            f"N: bus/usb/{self.bus:03d}/{self.address:03d}",
            "E: SUBSYSTEM=usb",
            "E: DEVTYPE=usb_device",
            "E: DRIVER=usb",
            f"E: BUSNUM={self.bus:03d}",
            f"E: DEVNUM={self.address:03d}",
            f"E: DEVNAME={self.devnode}",
            f"E: PRODUCT={self.vid:x}/{self.pid:x}/100",
            f"E: ID_VENDOR_ID={self.vid:04x}",
            f"E: ID_MODEL_ID={self.pid:04x}",
            f"A: idVendor={self.vid:04x}\\n",
            f"A: idProduct={self.pid:04x}\\n",
            f"A: busnum={self.bus}\\n",
            f"A: devnum={self.address}\\n",
            f"A: speed={self.speed}\\n",
            "A: bConfigurationValue=1\\n",
            "A: bNumConfigurations=1\\n",
        ]
        for name, text in self.strings.items():
            if text and "\n" not in text:
                lines.append(f"A: {name}={text}\\n")
        lines.append(f"H: descriptors={self._descriptors.hex()}")
        if not self._testbed.add_from_string("\n".join(lines) + "\n"):
            raise RuntimeError("umockdev refused the device description")
        self.syspath = f"/sys/devices/pci0000:00/0000:00:14.0/usb{self.bus}/{sysname}"
        self.plugged = True
        return self.syspath

    # -- fault injection ---------------------------------------------------------------

    def unplug(self) -> None:
        """The device disappears: pending URBs end with -ESHUTDOWN, new I/O gets ENODEV."""
        if not self.plugged:
            return
        self.plugged = False
        for queue in self._in_queues.values():
            while queue:
                self._complete(queue.popleft(), fs.STATUS_SHUTDOWN)
        for state in self._clients.values():
            self._answer_blocked_reap(state)
        try:
            self._testbed.uevent(self.syspath, "remove")
            self._testbed.remove_device(self.syspath)
        except Exception:
            self._log("removing the device from the testbed failed:\n" + traceback.format_exc())

    def stall(self, endpoint: int) -> None:
        """Halt ``endpoint``: its pending and future URBs end with -EPIPE until CLEAR_HALT."""
        self._halted.add(endpoint)
        queue = self._in_queues.get(endpoint)
        while queue:
            self._complete(queue.popleft(), fs.STATUS_STALL)

    def inject_interrupt(self, data: bytes, endpoint: int | None = None) -> None:
        """Deliver ``data`` on interrupt-IN before anything the function produces."""
        if endpoint is None:
            endpoint = self._first_interrupt_in()
        self._interrupts.setdefault(endpoint, deque()).append(bytes(data))
        self.service()

    def _first_interrupt_in(self) -> int:
        body = self._descriptors[18:]
        offset = 0
        while offset + 2 <= len(body) and body[offset]:
            length, kind = body[offset], body[offset + 1]
            if kind == 5 and body[offset + 2] & 0x80 and body[offset + 3] & 0x03 == 3:
                return int(body[offset + 2])
            offset += length
        raise ValueError("the device has no interrupt-IN endpoint")

    def stats_dict(self) -> dict[str, Any]:
        return {
            "plugged": self.plugged,
            "clients_seen": self.clients_seen,
            "clients": len(self._clients),
            "claimed": sorted({n for c in self._clients.values() for n in c.claimed}),
            "pending_in": {f"0x{ep:02x}": len(q) for ep, q in self._in_queues.items() if q},
            "halted": [f"0x{ep:02x}" for ep in sorted(self._halted)],
            "endpoints": {f"0x{ep:02x}": vars(s) for ep, s in sorted(self.stats.items())},
            "ioctls": dict(self.ioctl_counts),
            "latency": self.latency,
            "ignore_discards": self.ignore_discards,
        }

    # -- time --------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """The earliest time something is due (function deadline, latency, blocked reap)."""
        deadlines = []
        if self.plugged and any(self._in_queues.values()):
            deadline = self.function.next_deadline()
            if deadline is not None:
                deadlines.append(deadline)
        for state in self._clients.values():
            if state.blocked_reap is not None and state.completed:
                deadlines.append(min(urb.ready_at for urb in state.completed))
        return min(deadlines) if deadlines else None

    def service(self) -> None:
        """Offer the head IN URB of every endpoint to the function; answer blocked reaps."""
        if self.plugged and not self.function.connected:
            self.unplug()
        if self.plugged:
            try:
                self.function.poll()
            except Exception:
                self._log("function.poll failed:\n" + traceback.format_exc())
            progress = True
            while progress:
                progress = False
                for endpoint, queue in self._in_queues.items():
                    if queue and self._try_in(endpoint, queue[0]):
                        queue.popleft()
                        progress = True
        for state in self._clients.values():
            self._answer_blocked_reap(state)
        self.on_change()

    def _try_in(self, endpoint: int, urb: _Urb) -> bool:
        if endpoint in self._halted:
            self._complete(urb, fs.STATUS_STALL)
            return True
        size = urb.header.buffer_length
        injected = self._interrupts.get(endpoint)
        if injected:
            self._complete(urb, fs.STATUS_OK, injected.popleft()[:size])
            return True
        try:
            if urb.header.type == UrbType.INTERRUPT:
                result = self.function.interrupt_in(endpoint, size)
            else:
                result = self.function.bulk_in(endpoint, size)
        except Exception:
            self._log("function IN handler failed:\n" + traceback.format_exc())
            result = Stall()
        if result is None:
            return False
        if isinstance(result, Stall):
            self._halted.add(endpoint)
            self._complete(urb, fs.STATUS_STALL)
        else:
            self._complete(urb, fs.STATUS_OK, bytes(result)[:size])
        return True

    # -- URB bookkeeping ---------------------------------------------------------------

    def _stats(self, endpoint: int) -> _EndpointStats:
        stats = self.stats.get(endpoint)
        if stats is None:
            stats = self.stats[endpoint] = _EndpointStats()
        return stats

    def _complete(self, urb: _Urb, status: int, in_data: bytes = b"", actual: int = -1) -> None:
        urb.status = status
        urb.in_data = in_data
        urb.actual_length = len(in_data) if actual < 0 else actual
        urb.done = True
        urb.ready_at = self.clock() + self.latency
        stats = self._stats(urb.header.endpoint)
        stats.completed += 1
        stats.bytes += urb.actual_length
        if status == fs.STATUS_STALL:
            stats.stalled += 1
        state = self._clients.get(id(urb.client))
        if state is not None and urb.address in state.submitted:
            state.completed.append(urb)

    def _pop_ready(self, state: _Client) -> _Urb | None:
        now = self.clock()
        for urb in state.completed:
            if urb.ready_at <= now:
                state.completed.remove(urb)
                state.submitted.pop(urb.address, None)
                return urb
        return None

    def _deliver(self, client: Any, urb: _Urb) -> None:
        """Write status, length and IN data into the client's URB and hand it back."""
        header = urb.header
        if urb.in_data:
            offset = 8 if header.type == UrbType.CONTROL else 0
            buffer = urb.buffer
            if buffer is None:
                buffer = urb.data.resolve(fs.URB_BUFFER_OFFSET, offset + len(urb.in_data))
            buffer.update(offset, urb.in_data)
        urb.data.update(fs.URB_STATUS_OFFSET, fs.pack_int(urb.status))
        urb.data.update(fs.URB_ACTUAL_LENGTH_OFFSET, fs.pack_int(urb.actual_length))
        pointer = client.get_arg().resolve(0, fs.POINTER_SIZE)
        pointer.set_ptr(0, urb.data)
        client.complete(0, 0)

    def _answer_blocked_reap(self, state: _Client) -> None:
        client = state.blocked_reap
        if client is None:
            return
        urb = self._pop_ready(state)
        if urb is not None:
            state.blocked_reap = None
            self._deliver(client, urb)
        elif not self.plugged and not state.completed:
            state.blocked_reap = None
            client.complete(-1, errno.ENODEV)

    def forget_dead_clients(self) -> None:
        """Drop state of clients whose connection closed (umockdev does not tell us)."""
        for key, state in list(self._clients.items()):
            try:
                alive = state.client.get_connected()
            except Exception:
                alive = False
            if alive:
                continue
            del self._clients[key]
            for queue in self._in_queues.values():
                for urb in [u for u in queue if u.client is state.client]:
                    queue.remove(urb)
            self._log(f"client gone; released interfaces {sorted(state.claimed)}")

    # -- ioctls ------------------------------------------------------------------------

    def _on_ioctl(self, _handler: Any, client: Any) -> bool:
        request = client.get_request()
        name = ioctl_name(request)
        self.ioctl_counts[name] = self.ioctl_counts.get(name, 0) + 1
        state = self._clients.get(id(client))
        if state is None:
            state = self._clients[id(client)] = _Client(client)
            self.clients_seen += 1
        try:
            self._dispatch(client, state, request)
        except Exception:
            self._log(f"ioctl {name} failed:\n" + traceback.format_exc())
            client.complete(-1, errno.EIO)
        try:
            self.service()
        except Exception:
            self._log("service failed:\n" + traceback.format_exc())
        return True

    def _dispatch(self, client: Any, state: _Client, request: int) -> None:
        arg = client.get_arg()
        if request in (Ioctl.REAPURBNDELAY, Ioctl.REAPURB):
            self.service()
            urb = self._pop_ready(state)
            if urb is not None:
                self._deliver(client, urb)
            elif not self.plugged and not state.completed:
                client.complete(-1, errno.ENODEV)
            elif request == Ioctl.REAPURB:
                state.blocked_reap = client
            else:
                client.complete(-1, errno.EAGAIN)
            return
        if request == Ioctl.SUBMITURB:
            self._submit(client, state, arg)
            return
        if request == Ioctl.DISCARDURB:
            self._discard(client, state, fs.unpack_pointer(arg.retrieve()))
            return
        if request == Ioctl.GET_CAPABILITIES:
            arg.resolve(0, 4).update(0, fs.pack_uint(fs.CAPABILITIES))
            client.complete(0, 0)
            return
        if not self.plugged:
            client.complete(-1, errno.ENODEV)
            return
        if request in (Ioctl.CLAIMINTERFACE, Ioctl.DISCONNECT_CLAIM):
            number = fs.unpack_uint(arg.resolve(0, 4).retrieve())
            owners = [c for c in self._clients.values() if c is not state and number in c.claimed]
            if owners:
                client.complete(-1, errno.EBUSY)
                return
            state.claimed.add(number)
            client.complete(0, 0)
        elif request == Ioctl.RELEASEINTERFACE:
            number = fs.unpack_uint(arg.resolve(0, 4).retrieve())
            if number not in state.claimed:
                client.complete(-1, errno.EINVAL)
                return
            state.claimed.discard(number)
            client.complete(0, 0)
        elif request == Ioctl.CLEAR_HALT:
            endpoint = fs.unpack_uint(arg.resolve(0, 4).retrieve()) & 0xFF
            self._clear_halt(endpoint)
            client.complete(0, 0)
        elif request in (Ioctl.GETDRIVER, Ioctl.IOCTL):
            client.complete(-1, errno.ENODATA)  # no kernel driver bound
        elif request == Ioctl.GET_SPEED:
            client.complete(fs.USB_SPEED_HIGH, 0)
        elif request == Ioctl.RESET:
            self._halted.clear()
            reset = getattr(self.function, "reset", None)
            if callable(reset):
                reset()
            client.complete(0, 0)
        elif request in (
            Ioctl.SETINTERFACE,
            Ioctl.SETCONFIGURATION,
            Ioctl.RESETEP,
            Ioctl.DROP_PRIVILEGES,
            Ioctl.CONNECT,
            Ioctl.DISCONNECT,
        ):
            client.complete(0, 0)
        else:
            self._log(f"unhandled ioctl {ioctl_name(request)}")
            client.complete(-1, errno.ENOTTY)

    def _clear_halt(self, endpoint: int) -> None:
        self._halted.discard(endpoint)
        try:
            self.function.clear_halt(endpoint)
        except Exception:
            self._log("function.clear_halt failed:\n" + traceback.format_exc())

    def _submit(self, client: Any, state: _Client, arg: Any) -> None:
        if not self.plugged:
            client.complete(-1, errno.ENODEV)
            return
        data = arg.resolve(0, fs.URB_SIZE)
        header = UrbHeader.parse(data.retrieve())
        urb = _Urb(client, int(data.client_addr), header, data)
        endpoint = header.endpoint if header.type != UrbType.CONTROL else 0
        self._stats(endpoint).submitted += 1
        state.submitted[urb.address] = urb
        if header.type == UrbType.ISO:
            state.submitted.pop(urb.address)
            client.complete(-1, errno.EINVAL)
            return
        if header.type == UrbType.CONTROL:
            self._submit_control(urb)
        elif not header.is_in:
            if endpoint in self._halted:
                self._complete(urb, fs.STATUS_STALL)
            else:
                payload = b""
                if header.buffer_length:
                    urb.buffer = data.resolve(fs.URB_BUFFER_OFFSET, header.buffer_length)
                    payload = bytes(urb.buffer.retrieve())
                try:
                    result = self.function.bulk_out(endpoint, payload)
                except Exception:
                    self._log("function.bulk_out failed:\n" + traceback.format_exc())
                    result = Stall()
                if isinstance(result, Stall):
                    self._halted.add(endpoint)
                    self._complete(urb, fs.STATUS_STALL)
                else:
                    self._complete(urb, fs.STATUS_OK, actual=len(payload))
        else:
            self._in_queues.setdefault(endpoint, deque()).append(urb)
        outstanding = sum(
            1
            for other in state.submitted.values()
            if (other.header.endpoint if other.header.type != UrbType.CONTROL else 0) == endpoint
        )
        stats = self._stats(endpoint)
        stats.peak_outstanding = max(stats.peak_outstanding, outstanding)
        client.complete(0, 0)

    def _submit_control(self, urb: _Urb) -> None:
        urb.buffer = urb.data.resolve(fs.URB_BUFFER_OFFSET, urb.header.buffer_length)
        raw = bytes(urb.buffer.retrieve())
        request_type, request = raw[0], raw[1]
        value, index, length = struct.unpack_from("<HHH", raw, 2)
        is_in = bool(request_type & 0x80)
        control = ControlRequest(
            request_type=request_type,
            request=request,
            value=value,
            index=index,
            length=length,
            data=b"" if is_in else raw[8 : 8 + length],
        )
        if request_type == 0x02 and request == 1 and value == 0:  # CLEAR_FEATURE(HALT)
            self._clear_halt(index & 0xFF)
            self._complete(urb, fs.STATUS_OK)
            return
        try:
            result = self.function.control(control)
        except Exception:
            self._log("function.control failed:\n" + traceback.format_exc())
            result = Stall()
        if isinstance(result, Stall):
            self._complete(urb, fs.STATUS_STALL)
        elif is_in:
            self._complete(urb, fs.STATUS_OK, bytes(result)[:length])
        else:
            self._complete(urb, fs.STATUS_OK, actual=length)

    def _discard(self, client: Any, state: _Client, address: int) -> None:
        urb = state.submitted.get(address)
        if urb is None or urb.done:
            client.complete(-1, errno.EINVAL)
            return
        if self.ignore_discards:
            self._stats(urb.header.endpoint).discarded += 1
            client.complete(0, 0)
            return
        queue = self._in_queues.get(urb.header.endpoint)
        if queue is not None and urb in queue:
            queue.remove(urb)
        self._stats(urb.header.endpoint).discarded += 1
        self._complete(urb, fs.STATUS_DISCARDED)
        client.complete(0, 0)
