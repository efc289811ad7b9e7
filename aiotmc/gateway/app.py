"""The running gateway: spool, forwarders, components and instrument sources, wired.

::

    config = load_config("gateway.toml")
    async with Gateway(config) as gateway:     # everything started and ready
        ...                                     # gateway.hub, gateway.spool, gateway.sources
    # or, until cancelled:
    await run_gateway(config)

Start order: the spool (its writer), one forwarder per sink, the components (MQTT,
rules, notifiers, web: subscribed before the first reading), then the instrument
sources. ``Gateway`` holds a task group: enter and exit it in the same task. The
gateway runs on asyncio (its MQTT client, aiomqtt, is asyncio-only); the core parts
(hub, spool, sources, SQLite sink) are plain anyio.

While a gateway runs, the cyclic garbage collector's first threshold is raised to
:data:`GC_THRESHOLD` (see there); the last gateway to stop puts the previous one back.
"""

from __future__ import annotations

import gc
import logging
import os
from pathlib import Path
from types import TracebackType

import anyio
from anyio.abc import TaskGroup, TaskStatus

from .._exceptions import GatewayError
from .config import DEFAULT_SPOOL_COMMIT_INTERVAL, GatewayConfig
from .hub import GatewayHub
from .sources import InstrumentSource, Opener
from .spool import Spool

__all__ = ["GC_THRESHOLD", "LOCK_FILE", "SPOOL_FILE", "Gateway", "run_gateway"]

log = logging.getLogger("aiotmc.gateway")

#: The spool's file name in ``data_dir``.
SPOOL_FILE = "spool.sqlite"
#: Held (flock) by the gateway that uses ``data_dir``.
LOCK_FILE = "gateway.lock"
#: The garbage collector's first threshold while a gateway runs (CPython's default: 700
#: allocations). Every reading allocates a few container objects, so at 10,000 readings/s
#: the default collects hundreds of times a second, and each pass walks the large lists
#: of readings in flight (commits, sink batches, the spool's recent readings): about a
#: sixth of the gateway's CPU (docs/gateway.md, Performance). Readings hold no reference
#: cycles; what little cyclic garbage there is waits a little longer. An application
#: that set a higher threshold, or disabled the collector, keeps its setting.
GC_THRESHOLD = 20_000


class _GcTuning:
    """Raises the collector's first threshold while at least one gateway runs."""

    users = 0
    saved: tuple[int, int, int] | None = None

    @classmethod
    def enter(cls) -> None:
        if cls.users == 0:
            first, second, third = gc.get_threshold()
            if 0 < first < GC_THRESHOLD:
                cls.saved = (first, second, third)
                gc.set_threshold(GC_THRESHOLD, second, third)
        cls.users += 1

    @classmethod
    def exit(cls) -> None:
        cls.users -= 1
        saved = cls.saved
        if cls.users == 0 and saved is not None:
            cls.saved = None
            if gc.get_threshold()[0] == GC_THRESHOLD:  # unless changed meanwhile
                gc.set_threshold(*saved)


class Gateway:
    """The whole gateway as an async context manager."""

    def __init__(self, config: GatewayConfig, *, opener: Opener | None = None) -> None:
        settings = config.gateway
        self.config = config
        self.spool = Spool(
            settings.data_dir / SPOOL_FILE,
            gateway_id=settings.id,
            site=settings.site,
            host=settings.host,
            sinks=[sink.name for sink in config.sinks],
            max_readings=settings.spool_max_readings,
            sync=settings.spool_sync,
            commit_interval=(
                DEFAULT_SPOOL_COMMIT_INTERVAL
                if settings.spool_commit_interval is None
                else settings.spool_commit_interval
            ),
        )
        self.hub = GatewayHub(
            gateway_id=settings.id,
            site=settings.site,
            host=settings.host,
            controller=config.controller,
        )
        self.hub.set_spool(self.spool)
        self.spool.on_commit = self.hub.publish_nowait  # durable first, then published
        self.sources = [
            InstrumentSource(
                instrument,
                spool=self.spool,
                hub=self.hub,
                directory=config.directory,
                opener=opener,
            )
            for instrument in config.instruments
        ]
        for source in self.sources:
            self.hub.add_source(source)
        self._group: TaskGroup | None = None
        self._lock: int | None = None
        self._gc_tuned = False
        self._sources_scope: anyio.CancelScope | None = None
        self._sources_done = anyio.Event()
        #: On a clean stop, wait at most this long for the sinks to get what the spool holds.
        self.drain_timeout = 5.0

    async def _run_sources(self, *, task_status: TaskStatus[None]) -> None:
        try:
            async with anyio.create_task_group() as group:
                self._sources_scope = group.cancel_scope
                for source in self.sources:
                    await group.start(source.run)
                task_status.started()
        finally:
            self._sources_done.set()

    async def __aenter__(self) -> Gateway:
        self._lock = _lock_data_dir(self.config.gateway.data_dir)
        try:
            await self.spool.open()
        except BaseException:
            self._unlock()
            raise
        _GcTuning.enter()  # left in _unlock, which every way out passes
        self._gc_tuned = True
        group = anyio.create_task_group()
        await group.__aenter__()
        self._group = group
        try:
            await group.start(self.spool.run)
            for sink in self.config.sinks:
                await group.start(self.spool.forward, sink)
            for component in self.config.components:
                await group.start(component.run, self.hub)
            await group.start(self._run_sources)
        except BaseException as exc:
            await self._stop(type(exc), exc, exc.__traceback__)
            raise
        settings = self.config.gateway
        log.info(
            "gateway %s (%s/%s) running: %d instruments, sinks %s, data in %s",
            settings.id,
            settings.site,
            settings.host,
            len(self.sources),
            ", ".join(s.name for s in self.config.sinks),
            settings.data_dir,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return await self._stop(exc_type, exc, tb)

    async def _stop(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        group, self._group = self._group, None
        try:
            if group is not None:
                if exc is None and self._sources_scope is not None:
                    # a clean stop: acquisition first, then let the sinks catch up
                    self._sources_scope.cancel()
                    with anyio.move_on_after(self.drain_timeout):
                        await self._sources_done.wait()
                        await self.spool.wait_delivered()
                group.cancel_scope.cancel()
                return await group.__aexit__(exc_type, exc, tb)
            return None
        finally:
            with anyio.CancelScope(shield=True):
                for sink in self.config.sinks:
                    try:
                        await sink.aclose()
                    except Exception:
                        log.exception("closing sink %s failed", sink.name)
                await self.spool.aclose()
                self._unlock()

    def _unlock(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            os.close(lock)  # releases the flock
        if self._gc_tuned:
            self._gc_tuned = False
            _GcTuning.exit()


def _lock_data_dir(data_dir: Path) -> int | None:
    """Hold an exclusive lock on ``data_dir/gateway.lock`` (released when the process dies,
    even by ``kill -9``): two gateways on one spool would corrupt each other's order."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks here
        return None
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise GatewayError(f"cannot use data_dir {data_dir}: {exc.strerror or exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise GatewayError(
            f"another gateway is running with data_dir {data_dir} (it holds {LOCK_FILE})"
        ) from None
    return fd


async def run_gateway(config: GatewayConfig, *, opener: Opener | None = None) -> None:
    """Run the gateway until cancelled."""
    async with Gateway(config, opener=opener):
        await anyio.sleep_forever()
