"""Service requests on a Prologix adapter's bus: poll the SRQ line, serial-poll the requester.

A Prologix (or AR488) adapter cannot tell the host that SRQ was asserted; it answers
``++srq`` with the line's state (``0``/``1``). While at least one instrument on the
adapter has a ``service_requests()`` subscriber, :class:`SrqPoller` asks ``++srq`` every
``interval`` seconds under the bus lock (a short transaction between the instruments'
ones); when the line is asserted it serial-polls each instrument open on the adapter
(``++spoll pad [sad]``, which also makes the requester release SRQ) and publishes the
status byte of every one whose RQS bit is set, on that instrument's broadcaster (an
:class:`~aiotmc.transports._srq_on_demand.OnDemandRequests`, whose subscriptions wake the
poller). With no subscriber the poller sleeps and sends nothing.

Costs and limits: one round trip per ``interval`` while subscribed (and one per open
instrument while SRQ is asserted); a requester that is not open in this process cannot be
identified: the line then stays asserted and the poller logs it once and backs off to
one round per second. A round stopped part-way (the adapter closing, a deadline) marks
the adapter stale, as any interrupted transaction does. A failing round (adapter
unreachable) is logged and retried with back-off up to one second.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Final, Protocol

import anyio

from ..._background import BackgroundTask, spawn
from ..._exceptions import RemoteProtocolError

if TYPE_CHECKING:
    from ...srq import SrqBroadcaster
    from .._bytestream import FramedStream

__all__ = ["DEFAULT_SRQ_INTERVAL", "Bus", "Link", "SrqPoller"]

_log = logging.getLogger("aiotmc.prologix.srq")

DEFAULT_SRQ_INTERVAL: Final = 0.05  #: seconds between ``++srq`` polls while subscribed
_ROUND_TIMEOUT: Final = 5.0  # one poll round (lock wait included)
_MAX_BACKOFF: Final = 1.0
_RQS: Final = 0x40


class Link(Protocol):
    """What the poller uses of an instrument open on the adapter
    (:class:`~aiotmc.transports.prologix.PrologixTransport` is one)."""

    @property
    def address(self) -> tuple[int, int | None]: ...

    @property
    def srq(self) -> SrqBroadcaster: ...

    @property
    def srq_subscribers(self) -> int: ...


class Bus(Protocol):
    """What the poller uses of its adapter (``PrologixAdapter`` is one): a protocol, so
    that this module sits below the adapter (which creates the poller) for type checkers too."""

    @property
    def host(self) -> str: ...

    @property
    def links(self) -> Iterable[Link]: ...

    def transaction(self, deadline: float) -> AbstractAsyncContextManager[FramedStream]: ...


class SrqPoller:
    """Polls one adapter's SRQ line for the instruments open on it (see the module doc)."""

    def __init__(self, adapter: Bus, interval: float = DEFAULT_SRQ_INTERVAL) -> None:
        if not interval > 0:
            raise ValueError(f"srq_interval must be positive, got {interval!r}")
        self.adapter = adapter
        self.interval = interval
        self.rounds = 0  #: ``++srq`` polls made
        self.published = 0  #: service requests delivered
        self.failures = 0  #: rounds that failed
        self._task: BackgroundTask | None = None
        self._wake = anyio.Event()
        self._unknown_logged = False

    def want(self) -> None:
        """A subscription opened: make sure the poller runs (call on the loop thread)."""
        if self._task is None or self._task.done:
            self._task = spawn(self._run, name=f"prologix SRQ poller {self.adapter.host}")
        self._wake.set()

    def cancel(self) -> None:
        """Stop polling (the adapter's last instrument closed)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def _subscribed(self) -> bool:
        return any(link.srq_subscribers for link in self.adapter.links)

    async def _run(self) -> None:
        delay = self.interval
        while True:
            if not self._subscribed():
                self._wake = anyio.Event()
                await self._wake.wait()
                continue
            try:
                asserted_unknown = await self._round()
            except Exception as exc:
                self.failures += 1
                _log.warning("%s: SRQ poll failed: %s", self.adapter.host, exc)
                delay = min(max(delay * 2, self.interval), _MAX_BACKOFF)
            else:
                delay = _MAX_BACKOFF if asserted_unknown else self.interval
            await anyio.sleep(delay)

    async def _round(self) -> bool:
        """One ``++srq`` poll (and serial polls when asserted); True if SRQ stays asserted
        with no open instrument requesting."""
        adapter = self.adapter
        deadline = anyio.current_time() + _ROUND_TIMEOUT
        async with adapter.transaction(deadline) as stream:
            stream.set_terminator(b"\n")
            await stream.send((b"++srq\n",), deadline)
            line = (await stream.receive_message(64, deadline)).strip()
            self.rounds += 1
            if line not in (b"0", b"1"):
                raise RemoteProtocolError(f"++srq answered {line!r}, expected 0 or 1")
            if line == b"0":
                return False
            found = False
            for link in sorted(adapter.links, key=lambda link: link.address):
                primary, secondary = link.address
                sad = "" if secondary is None else f" {secondary + 96}"
                await stream.send((f"++spoll {primary}{sad}\n".encode(),), deadline)
                text = (await stream.receive_message(64, deadline)).strip()
                if not text.isdigit() or int(text) > 255:
                    raise RemoteProtocolError(f"++spoll answered {text!r}, not a status byte")
                stb = int(text)
                if stb & _RQS:
                    found = True
                    self.published += 1
                    link.srq.publish(stb)
        if not found and not self._unknown_logged:
            self._unknown_logged = True
            _log.warning(
                "%s: SRQ asserted by an instrument not open here; polling slows down",
                adapter.host,
            )
        return not found
