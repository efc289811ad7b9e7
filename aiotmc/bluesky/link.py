"""One aiotmc instrument shared by the signals of a device: opened by ``connect()``.

:class:`ScpiLink` opens its resource with :func:`aiotmc.open` the first time a signal (or
the device) connects, in the event loop that connects it: bluesky's RunEngine loop when
devices are made under ``init_devices()`` or connected by a plan. Every later use must
come from that loop (``RuntimeError`` otherwise: an aiotmc instrument belongs to the loop
that opened it). :meth:`ScpiLink.aclose` stops the signals' monitors and closes the
instrument; a link given an already open :class:`~aiotmc.Instrument` never closes it.

It also reads the event status register (``*ESR?``) at most once per service request for
every monitor that asks for it (:meth:`ScpiLink.event_status`): reading it clears it, so
two monitors must not each read it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, Final
from weakref import WeakKeyDictionary

import anyio
from ophyd_async.core import NotConnectedError

from .._open import open as open_instrument
from .._types import EventStatus, ServiceRequest
from ..instrument import Instrument

if TYPE_CHECKING:
    from .._background import BackgroundTask

__all__ = ["ScpiLink"]

log = logging.getLogger("aiotmc.bluesky")

_ESR_MEMORY: Final = 16  # service requests whose *ESR? value is remembered
_OF_INSTRUMENT: WeakKeyDictionary[Instrument, ScpiLink] = WeakKeyDictionary()


class ScpiLink:
    """The instrument behind a group of SCPI signals.

    Args:
        resource: a resource name (opened by :meth:`open`, closed by :meth:`aclose`) or
            an open :class:`~aiotmc.Instrument` (used as is, never closed here).
        open_options: keyword options of :func:`aiotmc.open` (``timeout=``,
            ``srq_poll_interval=``, ``device=`` for a ``SIM::`` resource...).
            ``connect_timeout`` defaults to the ``connect()`` timeout.
    """

    def __init__(self, resource: str | Instrument, **open_options: Any) -> None:
        self._given = resource if isinstance(resource, Instrument) else None
        if self._given is not None and open_options:
            raise TypeError("open options apply to a resource name, not an open Instrument")
        self.resource = resource.resource if isinstance(resource, Instrument) else resource
        self.open_options = open_options
        self._instrument: Instrument | None = self._given
        self._stack: AsyncExitStack | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._opening: asyncio.Lock | None = None
        self._esr_lock: asyncio.Lock | None = None
        self._esr: OrderedDict[ServiceRequest, EventStatus] = OrderedDict()
        self._tasks: set[BackgroundTask] = set()

    @classmethod
    def of(cls, instrument: Instrument) -> ScpiLink:
        """The one link wrapping the open ``instrument`` (made on first use), so that all
        its signals share it."""
        link = _OF_INSTRUMENT.get(instrument)
        if link is None:
            link = _OF_INSTRUMENT[instrument] = cls(instrument)
        return link

    def __repr__(self) -> str:
        state = "open" if self.is_open else "not open"
        return f"<ScpiLink {self.resource} {state}>"

    @property
    def is_open(self) -> bool:
        """True while the instrument is open."""
        return self._instrument is not None and not self._instrument.closed

    @property
    def instrument(self) -> Instrument:
        """The open instrument. Raises ``NotConnectedError`` (ophyd-async's) before
        ``connect()`` or after :meth:`aclose`, ``RuntimeError`` from a task of another event
        loop than the one that opened it."""
        self._check_loop()
        if self._instrument is None or self._instrument.closed:
            raise NotConnectedError(f"{self.resource}: not connected; connect the device first")
        return self._instrument

    def _check_loop(self) -> None:
        if self._loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop here: e.g. a coroutine being made for the right loop
        if running is not self._loop:
            raise RuntimeError(
                f"{self.resource} was opened in another event loop: use it from the loop "
                "that connected it (bluesky's RunEngine loop; see docs/bluesky.md)"
            )

    async def open(self, *, timeout: float | None = None, reopen: bool = False) -> Instrument:
        """Open the instrument unless it is open (concurrent callers share one opening).

        ``timeout`` bounds connecting (unless ``connect_timeout`` was given);
        ``reopen=True`` closes an instrument this link opened and opens it again.
        Raises what :func:`aiotmc.open` raises (:class:`~aiotmc.ConnectError`,
        :class:`~aiotmc.ResourceNotFoundError`, :class:`~aiotmc.InvalidResourceName`...).
        """
        self._check_loop()
        loop = asyncio.get_running_loop()
        if self._opening is None or (self._loop is None and not self._opening.locked()):
            self._opening = asyncio.Lock()  # of this loop (a closed link may reopen elsewhere)
        async with self._opening:
            if reopen and self._given is None and self._instrument is not None:
                await self.aclose()
            if self._instrument is not None and not self._instrument.closed:
                self._loop = loop
                return self._instrument
            if self._given is not None:
                raise NotConnectedError(f"{self.resource}: the given instrument is closed")
            options = dict(self.open_options)
            if timeout is not None:
                options.setdefault("connect_timeout", timeout)
            stack = AsyncExitStack()
            try:
                instrument = await stack.enter_async_context(
                    open_instrument(self.resource, **options)
                )
            except BaseException:
                await stack.aclose()
                raise
            self._stack, self._instrument, self._loop = stack, instrument, loop
            log.info("%s: opened for bluesky", self.resource)
            return instrument

    def track(self, task: BackgroundTask) -> None:
        """Remember a monitor task, stopped by :meth:`aclose`."""
        self._tasks.add(task)

    def untrack(self, task: BackgroundTask) -> None:
        """Forget a monitor task (it was stopped by its signal)."""
        self._tasks.discard(task)

    async def event_status(self, event: ServiceRequest) -> EventStatus:
        """``*ESR?`` read once for ``event``: every monitor asking about the same service
        request gets the same value (the read clears the register and re-arms the
        request). Raises what the query raises."""
        if self._esr_lock is None:
            self._esr_lock = asyncio.Lock()
        async with self._esr_lock:
            known = self._esr.get(event)
            if known is not None:
                return known
            inst = self.instrument
            value = EventStatus(int(await inst.query("*ESR?")) & 0xFF)
            if inst.srq_poller is not None:  # *ESR? cleared ESB: the next request is an edge
                inst.srq_poller.rearm()
            self._esr[event] = value
            while len(self._esr) > _ESR_MEMORY:
                self._esr.popitem(last=False)
            return value

    async def aclose(self) -> None:
        """Stop the monitors, then close the instrument if this link opened it.

        Idempotent; completes under cancellation. The link can be opened again.
        """
        self._check_loop()
        tasks, self._tasks = self._tasks, set()
        with anyio.CancelScope(shield=True):
            for task in tasks:
                await task.stop()
            stack, self._stack = self._stack, None
            if stack is not None:
                self._instrument = self._loop = None
                self._esr.clear()
                self._esr_lock = None
                await stack.aclose()
                log.info("%s: closed", self.resource)
