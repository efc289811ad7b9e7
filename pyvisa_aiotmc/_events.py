"""VISA events of one session: service requests, queued (``wait_on_event``) or handed to
installed handlers (called from a thread of their own, as VISA's callback thread)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from pyvisa.constants import EventMechanism, EventType

from aiotmc import ReadTimeout
from aiotmc.sync import ServiceRequests, SyncInstrument

__all__ = ["Handler", "SessionEvents"]

#: ``handler(session, event_type, context, user_handle)``; the library makes the context.
Handler = Callable[[EventType], None]

_DRAIN_LIMIT = 100_000  # bound on one discard (the queue holds at most max_queue_length)


class SessionEvents:
    """The service-request subscriptions behind one PyVISA session."""

    def __init__(self, instrument: SyncInstrument) -> None:
        self._instrument = instrument
        self.queue_length = 50  #: VI_ATTR_MAX_QUEUE_LENGTH, used when the queue is enabled
        self._queue: ServiceRequests | None = None
        self._handled: ServiceRequests | None = None
        self._pump: threading.Thread | None = None
        self.handlers: list[tuple[Any, Any]] = []  #: (handler, user_handle) pairs

    def enable(self, mechanism: int, dispatch: Handler) -> None:
        """Start delivering service requests through ``mechanism`` (queue and/or handler)."""
        if mechanism & EventMechanism.queue and self._queue is None:
            self._queue = self._instrument.service_requests(buffer=self.queue_length)
        if mechanism & EventMechanism.handler and self._handled is None:
            handled = self._instrument.service_requests(buffer=self.queue_length)
            self._handled = handled

            def pump() -> None:
                for _ in handled:
                    dispatch(EventType.service_request)

            self._pump = threading.Thread(target=pump, name="pyvisa-aiotmc-events", daemon=True)
            self._pump.start()

    def disable(self, mechanism: int) -> None:
        """Stop delivering through ``mechanism`` (what the queue held is dropped)."""
        if mechanism & EventMechanism.handler and self._handled is not None:
            handled, self._handled = self._handled, None
            handled.close()
            if self._pump is not None and self._pump is not threading.current_thread():
                self._pump.join(timeout=5)
            self._pump = None
        if mechanism & EventMechanism.queue and self._queue is not None:
            queue, self._queue = self._queue, None
            queue.close()

    @property
    def queue_enabled(self) -> bool:
        """True while service requests are queued for ``wait_on_event``."""
        return self._queue is not None

    def wait(self, timeout: float | None) -> bool:
        """Wait for a queued service request: True when one came, False on timeout."""
        queue = self._queue
        if queue is None:
            raise LookupError("the queue mechanism is not enabled")
        try:
            queue.get(timeout=timeout)
        except ReadTimeout:
            return False
        except EOFError:  # the instrument closed
            return False
        return True

    def discard(self) -> None:
        """Drop the service requests waiting in the queue."""
        queue = self._queue
        if queue is None:
            return
        for _ in range(_DRAIN_LIMIT):
            try:
                queue.get(timeout=0)
            except (ReadTimeout, EOFError):
                break

    def close(self) -> None:
        """Disable everything and drop what is queued."""
        self.disable(EventMechanism.all)
        self.discard()
