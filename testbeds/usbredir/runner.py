"""Serving :class:`UsbredirDevice` connections from one thread (stdlib ``selectors``).

``UsbredirRunner`` plugs emulated devices into QEMU: :meth:`UsbredirRunner.plug` connects
to the socket of a ``-chardev socket,server=on,...`` that a ``-device usb-redir`` uses
(connect = plug), :meth:`UsbredirRunner.unplug` closes it (close = unplug). Everything that
touches a device runs on the runner thread; :meth:`UsbredirRunner.call` runs a callable
there (fault injection) and returns its result.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import selectors
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiotmc.sim.usb_function import UsbFunction

from .protocol import UsbredirDevice, UsbredirError

__all__ = ["Address", "UsbredirRunner"]

_log = logging.getLogger("testbeds.usbredir")

T = TypeVar("T")
Address = str | tuple[str, int]
"""A unix socket path, or ``(host, port)`` for TCP (keep it on loopback)."""


@dataclass(slots=True)
class _Link:
    name: str
    sock: socket.socket
    device: UsbredirDevice
    outbox: bytearray = field(default_factory=bytearray)


class UsbredirRunner:
    """A thread that serves any number of usbredir links, one emulated device each."""

    def __init__(self, *, name: str = "usbredir") -> None:
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        self._links: dict[str, _Link] = {}
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # -- public API (any thread) ---------------------------------------------------------------

    def call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        """Run ``fn()`` on the runner thread; return its result or raise its exception."""
        if threading.current_thread() is self._thread:
            return fn()
        if self._stopping:
            raise RuntimeError("the usbredir runner is closed")
        future: Future[T] = Future()
        self._calls.put((fn, future))
        self._wake()
        return future.result(timeout)

    def plug(
        self, function: UsbFunction, address: Address, *, name: str = "0", timeout: float = 10.0
    ) -> UsbredirDevice:
        """Connect ``function`` to the usb-redir chardev at ``address`` (the device appears)."""
        family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(address)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        try:
            device = UsbredirDevice(function)
        except BaseException:
            sock.close()
            raise

        def register() -> UsbredirDevice:
            if name in self._links:
                self._close(self._links[name], "replaced")
            link = _Link(name, sock, device)
            device.on_change = self._wake
            self._links[name] = link
            self._selector.register(sock, selectors.EVENT_READ, link)
            self._flush(link)
            return device

        return self.call(register, timeout)

    def unplug(self, name: str = "0", timeout: float = 10.0) -> bool:
        """Close link ``name`` (the device disappears); False if it was not plugged."""

        def close() -> bool:
            link = self._links.get(name)
            if link is None:
                return False
            self._close(link, "unplugged")
            return True

        return self.call(close, timeout)

    def device(self, name: str = "0") -> UsbredirDevice | None:
        """The device plugged as ``name`` (touch it only through :meth:`call`)."""
        link = self._links.get(name)
        return None if link is None else link.device

    def close(self) -> None:
        """Unplug everything and stop the thread (idempotent)."""
        if self._stopping:
            return
        self._stopping = True
        self._wake()
        self._thread.join(10)
        for sock in (self._wake_r, self._wake_w):
            sock.close()
        self._selector.close()

    # -- runner thread -------------------------------------------------------------------------

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def _close(self, link: _Link, why: str) -> None:
        if self._links.get(link.name) is link:
            del self._links[link.name]
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(link.sock)
        with contextlib.suppress(OSError):
            link.sock.shutdown(socket.SHUT_RDWR)
        link.sock.close()
        _log.debug("usbredir link %s closed: %s", link.name, why)

    def _flush(self, link: _Link) -> None:
        link.outbox += link.device.data_to_send()
        while link.outbox:
            try:
                sent = link.sock.send(link.outbox[: 1 << 20])
            except BlockingIOError:
                break
            except OSError as exc:
                self._close(link, f"send failed: {exc}")
                return
            del link.outbox[:sent]
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if link.outbox else 0)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.modify(link.sock, events, link)

    def _service(self, link: _Link) -> None:
        """After any activity: pump, flush, and unplug a function that disconnected."""
        if self._links.get(link.name) is not link:
            return
        try:
            link.device.pump()
        except Exception as exc:
            _log.exception("usbredir device failed")
            self._close(link, f"device error: {exc!r}")
            return
        self._flush(link)
        if not link.device.function.connected and self._links.get(link.name) is link:
            self._close(link, "function disconnected")

    def _run(self) -> None:
        while not self._stopping:
            now = time.monotonic()
            timeout: float | None = None
            for link in list(self._links.values()):
                due = link.device.next_deadline()
                if due is not None:
                    if due <= now:
                        try:
                            link.device.poll()
                        except Exception as exc:
                            _log.exception("usbredir device poll failed")
                            self._close(link, f"device error: {exc!r}")
                            continue
                        self._service(link)
                        due = link.device.next_deadline()
                    if due is not None:
                        wait = max(0.0, due - time.monotonic())
                        timeout = wait if timeout is None else min(timeout, wait)
            for key, mask in self._selector.select(timeout):
                link = key.data
                if link is None:
                    with contextlib.suppress(BlockingIOError):
                        while self._wake_r.recv(4096):
                            pass
                    continue
                if mask & selectors.EVENT_READ:
                    self._read(link)
                if mask & selectors.EVENT_WRITE and self._links.get(link.name) is link:
                    self._flush(link)
            while True:
                try:
                    fn, future = self._calls.get_nowait()
                except queue.Empty:
                    break
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn())
                    except BaseException as exc:
                        future.set_exception(exc)
            for link in list(self._links.values()):
                self._service(link)
        for link in list(self._links.values()):
            self._close(link, "runner closed")

    def _read(self, link: _Link) -> None:
        try:
            data = link.sock.recv(1 << 20)
        except BlockingIOError:
            return
        except OSError as exc:
            self._close(link, f"recv failed: {exc}")
            return
        if not data:
            self._close(link, "peer closed")
            return
        try:
            link.device.receive_data(data)
        except UsbredirError as exc:
            _log.error("usbredir protocol error: %s", exc)
            self._close(link, f"protocol error: {exc}")
            return
        self._service(link)
