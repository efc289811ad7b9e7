"""Fakes for the USB bridge tests: a libusb transfer, and event contexts for both drivers."""

from __future__ import annotations

import queue
import select
import socket
import threading
import time
from collections.abc import Callable

from aiotmc._usb.driver import PollfdAdded, PollfdRemoved
from aiotmc._usb.errors import LibusbError, TransferStatus
from aiotmc._usb.transfer import Completion


class FakeUSBError(Exception):
    """Looks like python-libusb1's USBError: carries ``.value``."""

    def __init__(self, value: int) -> None:
        super().__init__(f"LIBUSB error {value}")
        self.value = value


class FakeTransfer:
    """A libusb transfer whose completion the test triggers (from any thread).

    ``cancel_behaviour``: ``"complete"`` (cancel completes it with CANCELLED from a thread),
    ``"not_found"`` (cancel raises NOT_FOUND and the normal completion follows), ``"never"``.
    """

    def __init__(self, *, cancel_behaviour: str = "complete", cancel_delay: float = 0.01) -> None:
        self.callback: Callable[[], None] | None = None
        self.submitted = 0
        self.cancelled = 0
        self.submit_error: BaseException | None = None
        self.cancel_behaviour = cancel_behaviour
        self.cancel_delay = cancel_delay
        self.result = Completion(TransferStatus.COMPLETED, 0, b"")
        self.snapshot_error: BaseException | None = None
        self.in_flight = False

    def set_callback(self, callback: Callable[[], None]) -> None:
        self.callback = callback

    def submit(self) -> None:
        if self.submit_error is not None:
            raise self.submit_error
        self.submitted += 1
        self.in_flight = True

    def cancel(self) -> None:
        self.cancelled += 1
        if self.cancel_behaviour == "complete":
            self.complete_later(TransferStatus.CANCELLED, delay=self.cancel_delay)
        elif self.cancel_behaviour == "not_found":
            self.complete_later(TransferStatus.COMPLETED, delay=self.cancel_delay)
            raise FakeUSBError(LibusbError.NOT_FOUND)

    def snapshot(self) -> Completion:
        if self.snapshot_error is not None:
            raise self.snapshot_error
        return self.result

    def complete(self, status: int = TransferStatus.COMPLETED, data: bytes = b"") -> None:
        """What libusb does: set the result, then call the callback (this thread)."""
        self.result = Completion(status, len(data), data)
        self.in_flight = False
        assert self.callback is not None
        self.callback()

    def complete_later(
        self, status: int = TransferStatus.COMPLETED, data: bytes = b"", delay: float = 0.01
    ) -> threading.Thread:
        def run() -> None:
            # Like libusb, complete only a submitted transfer: on a loaded machine this
            # thread may run before the test has submitted (the waiter would then hang).
            deadline = time.monotonic() + 10
            while not self.in_flight and time.monotonic() < deadline:
                time.sleep(0.001)
            time.sleep(delay)
            self.complete(status, data)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread


class QueueEventContext:
    """For the thread driver: ``handle_events_timeout`` blocks on a queue of callbacks.

    ``post(fn)`` makes the event thread run ``fn`` inside "libusb event handling".
    """

    def __init__(self) -> None:
        self.queue: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self.calls = 0
        self.threads: set[int] = set()
        self.closed = False
        self.fail_next: BaseException | None = None

    def post(self, fn: Callable[[], None]) -> None:
        self.queue.put(fn)

    def handle_events_timeout(self, seconds: float) -> None:
        assert not self.closed, "handle_events after close"
        self.calls += 1
        self.threads.add(threading.get_ident())
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        try:
            item = self.queue.get(timeout=seconds)
        except queue.Empty:
            return
        if item is None:
            raise FakeUSBError(LibusbError.INTERRUPTED)
        item()

    def interrupt_event_handler(self) -> bool:
        self.queue.put(None)
        return True

    def get_pollfds(self) -> list[tuple[int, int]]:
        raise NotImplementedError

    def set_pollfd_notifiers(
        self, added: PollfdAdded | None, removed: PollfdRemoved | None
    ) -> None:
        raise NotImplementedError

    def get_next_timeout(self) -> float | None:
        return None


class SpinningEventContext(QueueEventContext):
    """``handle_events_timeout`` returns at once with nothing done (umockdev's busy fd)."""

    def handle_events_timeout(self, seconds: float) -> None:
        self.calls += 1
        try:
            item = self.queue.get_nowait()
        except queue.Empty:
            return
        if item is None:
            raise FakeUSBError(LibusbError.INTERRUPTED)
        item()


class SocketEventContext:
    """For the pollfd driver: each "device" is a socketpair end exposed as a libusb pollfd.

    POLLIN devices: the test writes to the peer to make the fd readable; handling events
    drains it. POLLOUT devices (like usbfs): the fd's send buffer is kept full; the test
    drains the peer to make it writable ("URB reapable"); handling events refills it.
    Each handled readiness runs the callbacks queued with :meth:`complete_on_event`.
    """

    def __init__(self) -> None:
        self.devices: dict[int, tuple[socket.socket, socket.socket, int]] = {}
        self.added: PollfdAdded | None = None
        self.removed: PollfdRemoved | None = None
        self.pending: list[Callable[[], None]] = []
        self.handled = 0
        self.handled_threads: set[int] = set()
        self.next_timeout: float | None = None
        self.lock = threading.Lock()

    # -- test side ------------------------------------------------------------------------

    def new_device(self, events: int, *, notify: bool = True) -> int:
        ours, peer = socket.socketpair()
        ours.setblocking(False)
        peer.setblocking(False)
        if events & select.POLLOUT:
            self._fill(ours)
        self.devices[ours.fileno()] = (ours, peer, events)
        if notify and self.added is not None:
            self.added(ours.fileno(), events)
        return ours.fileno()

    def remove_device(self, fd: int) -> None:
        """What libusb_close does: notify removal first, then close the fd."""
        ours, peer, _ = self.devices.pop(fd)
        if self.removed is not None:
            self.removed(fd)
        ours.close()
        peer.close()

    def make_ready(self, fd: int) -> None:
        _ours, peer, events = self.devices[fd]
        if events & select.POLLOUT:
            while True:
                try:
                    if not peer.recv(1 << 16):
                        break
                except BlockingIOError:
                    break
        else:
            peer.send(b"!")

    def complete_on_event(self, fn: Callable[[], None]) -> None:
        with self.lock:
            self.pending.append(fn)

    @staticmethod
    def _fill(sock: socket.socket) -> None:
        chunk = b"\0" * 65536
        while True:
            try:
                sock.send(chunk)
            except BlockingIOError:
                return

    def close(self) -> None:
        for ours, peer, _ in self.devices.values():
            ours.close()
            peer.close()
        self.devices.clear()

    # -- EventContext ---------------------------------------------------------------------

    def handle_events_timeout(self, seconds: float) -> None:
        assert seconds == 0
        self.handled += 1
        self.handled_threads.add(threading.get_ident())
        for ours, _peer, events in list(self.devices.values()):
            if events & select.POLLOUT:
                self._fill(ours)
            else:
                while True:
                    try:
                        if not ours.recv(4096):
                            break
                    except BlockingIOError:
                        break
        with self.lock:
            pending, self.pending = self.pending, []
        for fn in pending:
            fn()

    def interrupt_event_handler(self) -> bool:
        return True

    def get_pollfds(self) -> list[tuple[int, int]]:
        return [(fd, events) for fd, (_o, _p, events) in self.devices.items()]

    def set_pollfd_notifiers(
        self, added: PollfdAdded | None, removed: PollfdRemoved | None
    ) -> None:
        self.added = added
        self.removed = removed

    def get_next_timeout(self) -> float | None:
        return self.next_timeout
