"""Instrument sources: one task per instrument turns its channels into readings.

An :class:`InstrumentSource` opens its instrument with ``aiotmc.open(resource)`` (any
transport aiotmc has), writes the ``setup`` commands, then reads every periodic channel
on its own schedule and every ``on_srq`` channel when the instrument requests service.
Each answer is parsed to the channel's type, made durable by the spool (which gives it
its ``seq``) and only then published on the hub (by the spool, after its commit).

States: the instrument is ``online`` from a successful connection until the link fails
(the transport raises, or ``max_failures`` queries in a row time out); then it goes
``offline`` at once (a :class:`~aiotmc.gateway.StatusEvent` with the reason) and is
reopened with exponential backoff (``retry_min`` doubling up to ``retry_max``).

Quality: an answer that does not parse becomes a reading with value None and quality
``bad``; a channel with no good reading for ``stale_after`` seconds (the instrument is
offline or the channel keeps failing) gets one reading with quality ``stale`` (value
None), once per episode.
"""

from __future__ import annotations

import logging
import math
import time
import zlib
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Final

import anyio
from anyio.abc import TaskGroup, TaskStatus

from .._exceptions import (
    AiotmcError,
    AiotmcTimeout,
    GatewayError,
    InstrumentError,
    ProtocolError,
    UnsupportedOperation,
)
from .._loops import sleep
from .config import ChannelConfig, InstrumentConfig, InstrumentDirectory
from .hub import GatewayHub
from .model import InstrumentState, InstrumentStats, Quality, StatusEvent, Value

if TYPE_CHECKING:
    from ..instrument import Instrument
    from .spool import Spool

__all__ = ["InstrumentSource", "parse_value"]

log = logging.getLogger("aiotmc.gateway.sources")

_TRUE: Final = frozenset({"1", "ON", "TRUE", "YES"})
_FALSE: Final = frozenset({"0", "OFF", "FALSE", "NO"})

Opener = Callable[..., AbstractAsyncContextManager["Instrument"]]


def parse_value(text: str, parse: str) -> Value:
    """An answer as the channel's type; ``ValueError`` when it is not one."""
    text = text.strip()
    if parse == "float":
        return float(text)
    if parse == "int":
        try:
            return int(text)
        except ValueError:
            number = float(text)
            if not number.is_integer():
                raise
            return int(number)
    if parse == "bool":
        word = text.upper()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise ValueError(f"not a boolean: {text!r}")
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


class _LinkLost(Exception):
    """The instrument's link failed: close it, go offline, reconnect."""


class _Channel:
    """A channel's config plus its freshness."""

    __slots__ = ("config", "last_good", "stale")

    def __init__(self, config: ChannelConfig, now: float) -> None:
        self.config = config
        self.last_good = now  # time.monotonic(); the start counts as fresh
        self.stale = False


class InstrumentSource:
    """Acquisition from one instrument, forever: :meth:`run` it in a task group."""

    def __init__(
        self,
        config: InstrumentConfig,
        *,
        spool: Spool,
        hub: GatewayHub,
        directory: InstrumentDirectory | None = None,
        opener: Opener | None = None,
        max_failures: int = 3,
    ) -> None:
        self.config = config
        self.name = config.name
        self.spool = spool
        self.hub = hub
        self.directory = directory
        self.max_failures = max_failures
        self._opener = opener
        self._current: Instrument | None = None
        self._state: InstrumentState | None = None
        self._channels = [_Channel(c, time.monotonic()) for c in config.channels]
        self._fresh = anyio.Event()
        self._failures = 0  # consecutive failed queries
        self._connections = 0
        self.readings = 0
        self.errors = 0
        self._latency_sum = 0.0
        self._latency_count = 0
        self._last_latency: float | None = None

    # -- what others see --------------------------------------------------------------------

    @property
    def current(self) -> Instrument | None:
        """The open instrument, None while offline."""
        return self._current

    @property
    def state(self) -> InstrumentState:
        return self._state or InstrumentState.OFFLINE

    def stats(self) -> InstrumentStats:
        return InstrumentStats(
            state=self.state,
            readings=self.readings,
            errors=self.errors,
            reconnects=max(0, self._connections - 1),
            latency_sum=self._latency_sum,
            latency_count=self._latency_count,
            last_latency=self._last_latency,
        )

    # -- the task ---------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Connect, acquire, reconnect after failures; until cancelled."""
        async with anyio.create_task_group() as group:
            group.start_soon(self._watch_staleness)
            task_status.started()
            await self._connect_forever()

    async def _connect_forever(self) -> None:
        delay = self.config.retry_min
        while True:
            reason = await self._session()
            if reason is None:  # connected for a while: start the backoff afresh
                delay = self.config.retry_min
                continue
            changed = await self._set_state(InstrumentState.OFFLINE, reason)
            level = logging.WARNING if changed else logging.DEBUG  # once per outage
            log.log(level, "%s: offline (%s); retry in %.1f s", self.name, reason, delay)
            await anyio.sleep(delay)
            delay = min(delay * 2, self.config.retry_max)

    def _open(self) -> AbstractAsyncContextManager[Instrument]:
        options: dict[str, Any] = dict(self.config.options)
        options.setdefault("connect_timeout", self.config.timeout)
        if self._opener is not None:
            return self._opener(self.config.resource, timeout=self.config.timeout, **options)
        from .._open import open as aiotmc_open

        return aiotmc_open(self.config.resource, timeout=self.config.timeout, **options)

    async def _session(self) -> str:
        """One connection: returns why it ended."""
        try:
            async with self._open() as inst:
                for command in self.config.setup:
                    await inst.write(command)
                self._connections += 1
                self._failures = 0
                self._current = inst
                if self.directory is not None:
                    self.directory.set(self.name, inst)
                await self._set_state(InstrumentState.ONLINE, inst.resource)
                try:
                    await self._acquire(inst)
                finally:
                    self._current = None
                    if self.directory is not None:
                        self.directory.set(self.name, None)
        except _LinkLost as exc:
            return str(exc)
        except (AiotmcError, OSError) as exc:
            self.errors += 1
            return f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # a bug in one instrument's path must not stop the others
            self.errors += 1
            log.exception("%s: unexpected error", self.name)
            return f"{type(exc).__name__}: {exc}"
        raise AssertionError("acquisition ended without a reason")  # pragma: no cover

    async def _acquire(self, inst: Instrument) -> None:
        """Run the channels until the link fails (raises ``_LinkLost``)."""
        lost: list[BaseException] = []
        async with anyio.create_task_group() as group:
            srq = [c for c in self._channels if c.config.on_srq]
            for channel in self._channels:
                if not channel.config.on_srq:
                    group.start_soon(self._periodic, inst, channel, group, lost)
            if srq:
                await self._arm(inst, srq, group, lost)
                group.start_soon(self._on_srq, inst, srq, group, lost)
        if lost:
            raise _LinkLost(f"{type(lost[0]).__name__}: {lost[0]}") from lost[0]
        # only an SRQ subscription ends by itself: when the link closes under it
        raise _LinkLost("service requests ended: the link closed")

    async def _periodic(
        self, inst: Instrument, channel: _Channel, group: TaskGroup, lost: list[BaseException]
    ) -> None:
        period = channel.config.period
        assert period is not None
        # The first read at once, then a grid whose phase depends on the channel's name:
        # a thousand instruments connected together do not all query at the same instant.
        phase = zlib.crc32(f"{self.name}/{channel.config.name}".encode()) / 2**32 * period
        start = time.monotonic() + phase
        tick = -1
        while True:
            if not await self._read(inst, channel, group, lost):
                return
            now = time.monotonic()
            # the next slot on the grid from the start; missed slots are skipped, not caught up
            tick = max(tick + 1, math.floor((now - start) / period) + 1)
            await sleep(max(0.0, start + tick * period - now))  # anyio.sleep, cheaper

    async def _arm(
        self,
        inst: Instrument,
        channels: list[_Channel],
        group: TaskGroup,
        lost: list[BaseException],
    ) -> None:
        for channel in channels:
            if channel.config.arm:
                try:
                    async with inst.lock():
                        await inst.write(channel.config.arm)
                        if inst.srq_poller is not None:  # a polled request may clear and
                            inst.srq_poller.rearm()  # set again between two polls
                except Exception as exc:
                    self._failed(exc, group, lost, channel)

    async def _on_srq(
        self,
        inst: Instrument,
        channels: list[_Channel],
        group: TaskGroup,
        lost: list[BaseException],
    ) -> None:
        try:
            async with inst.service_requests() as events:
                async for _event in events:
                    for channel in channels:
                        if not await self._read(inst, channel, group, lost):
                            return
                    await self._arm(inst, channels, group, lost)
        except UnsupportedOperation as exc:
            log.error("%s: on_srq channels cannot work: %s", self.name, exc)

    async def _read(
        self, inst: Instrument, channel: _Channel, group: TaskGroup, lost: list[BaseException]
    ) -> bool:
        """Query and publish one value; False once the link is lost."""
        config = channel.config
        started = time.perf_counter()
        try:
            answer = await inst.query(config.query)
        except Exception as exc:
            return self._failed(exc, group, lost, channel)
        latency = time.perf_counter() - started
        timestamp = time.time()
        self._failures = 0
        self._last_latency = latency
        self._latency_sum += latency
        self._latency_count += 1
        try:
            value: Value = parse_value(answer, config.parse)
            quality = Quality.GOOD
        except ValueError:
            self.errors += 1
            log.warning(
                "%s.%s: cannot parse %r as %s", self.name, config.name, answer, config.parse
            )
            value, quality = None, Quality.BAD
        await self._publish(channel, value, timestamp, quality)
        return True

    def _failed(
        self, exc: Exception, group: TaskGroup, lost: list[BaseException], channel: _Channel
    ) -> bool:
        """Count a failed exchange; True to go on, False (and end the session) when the
        link is gone: the transport failed, or ``max_failures`` timeouts in a row."""
        self.errors += 1
        where = f"{self.name}.{channel.config.name}"
        if isinstance(exc, InstrumentError | ProtocolError):  # answered, but wrongly
            log.warning("%s: %s", where, exc)
            return True
        if isinstance(exc, AiotmcTimeout):
            self._failures += 1
            if self._failures < self.max_failures:
                log.warning("%s: %s", where, exc)
                return True
        elif not isinstance(exc, AiotmcError | OSError | anyio.ClosedResourceError):
            log.error("%s: unexpected %r", where, exc)
        if not lost:
            lost.append(exc)
        group.cancel_scope.cancel()
        return False

    async def _publish(
        self, channel: _Channel, value: Value, timestamp: float, quality: Quality
    ) -> None:
        """Hand a value to the spool (the spool publishes it on the hub once durable)."""
        config = channel.config
        if self.spool.full:  # the disk is behind: acquisition waits rather than drops
            await self.spool.wait_room()
        try:
            self.spool.append_nowait(self.name, config.name, value, config.unit, timestamp, quality)
        except GatewayError as exc:
            self.errors += 1
            log.error("%s.%s: %s", self.name, config.name, exc)
            return
        if quality is Quality.GOOD:
            channel.last_good = time.monotonic()
            if channel.stale:
                channel.stale = False
                self._fresh.set()
        if quality is not Quality.STALE:
            self.readings += 1

    async def _set_state(self, state: InstrumentState, detail: str) -> bool:
        """Publish a change of state; False when it is not one."""
        if state is self._state:
            return False
        self._state = state
        if state is InstrumentState.ONLINE:
            log.info("%s: online (%s)", self.name, detail)
        await self.hub.publish(StatusEvent(self.name, state, time.time(), detail))
        return True

    async def _watch_staleness(self) -> None:
        """Give a channel one ``stale`` reading when it had no good one for stale_after."""
        while True:
            now = time.monotonic()
            due: float | None = None
            stale = False  # some channel is stale: a fresh value must wake us
            for channel in self._channels:
                limit = channel.config.stale_after
                if limit is None:
                    continue
                if channel.stale:
                    stale = True
                    continue
                deadline = channel.last_good + limit
                if deadline <= now:
                    channel.stale = stale = True
                    await self._publish(channel, None, time.time(), Quality.STALE)
                elif due is None or deadline < due:
                    due = deadline
            fresh, self._fresh = self._fresh, anyio.Event()
            if due is None:
                await fresh.wait()
            elif not stale:  # the usual case: a plain sleep, no cancellation to deliver
                await anyio.sleep(due - time.monotonic())
            else:
                with anyio.move_on_after(due - time.monotonic()):
                    await fresh.wait()
