"""What every notifier shares: which alerts it tells about, bounded retries, counters.

A notifier is a gateway Component subscribed to the hub. It tells about an alert when it
fires, and when an alert it told about resolves (``send_resolved``); pending alerts and
the resolution of alerts that never fired are not news. ``severities`` and ``rules``
(glob patterns) narrow what it tells about. A delivery that fails in a way worth
retrying is tried ``retries`` more times, waiting ``retry_delay`` seconds, doubled each
time (at most a minute); then it is logged and counted in ``failed``, and the notifier
goes on with the next alert. Alerts are delivered one at a time, in order; while a
delivery waits, the hub queues this notifier's events (bounded: the oldest are dropped).
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio

from ..fields import Fields
from ..model import Alert, AlertState, Hub

__all__ = ["DeliveryError", "Notifier", "NotifierOptions"]

logger = logging.getLogger("aiotmc.gateway.alerts")

AlertKey = tuple[str, str, str | None]


class DeliveryError(Exception):
    """A notification did not go through; ``retry`` says whether trying again may help."""

    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


@dataclass(frozen=True, slots=True)
class NotifierOptions:
    """The fields every ``[[notifiers]]`` table has besides its type's own."""

    name: str
    send_resolved: bool = True
    severities: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()
    retries: int = 3
    retry_delay: float = 1.0
    timeout: float = 10.0

    @classmethod
    def read(cls, fields: Fields, default_name: str) -> NotifierOptions:
        return cls(
            name=fields.name("name", default_name),
            send_resolved=fields.boolean("send_resolved", True),
            severities=fields.strings("severities", ()),
            rules=fields.strings("rules", ()),
            retries=fields.integer("retries", 3, minimum=0, maximum=20),
            retry_delay=fields.duration("retry_delay", 1.0),
            timeout=fields.number("timeout", 10.0, positive=True),
        )


class Notifier:
    """Base class: subclasses implement :meth:`deliver` (and may wrap :meth:`session`)."""

    def __init__(self, options: NotifierOptions) -> None:
        self.options = options
        self.name = options.name
        #: Notifications delivered, and given up after the last retry.
        self.sent = 0
        self.failed = 0
        self._firing: dict[AlertKey, float] = {}

    def wants(self, alert: Alert) -> bool:
        """Whether ``alert`` passes the severity and rule filters."""
        options = self.options
        if options.severities and alert.severity not in options.severities:
            return False
        return not options.rules or any(fnmatch.fnmatchcase(alert.rule, p) for p in options.rules)

    def news(self, alert: Alert) -> float | None:
        """The alert's start (firing time) if it is worth telling, else None; keeps
        track of what fired."""
        key = (alert.rule, alert.instrument, alert.channel)
        if alert.state is AlertState.FIRING:
            self._firing[key] = alert.timestamp
            return alert.timestamp
        if alert.state is AlertState.RESOLVED and key in self._firing:
            started = self._firing.pop(key)
            return started if self.options.send_resolved else None
        return None

    async def run(self, hub: Hub, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        async with self.session(), hub.subscribe(f"notifier:{self.name}") as events:
            task_status.started()
            async for event in events:
                if isinstance(event, Alert) and self.wants(event):
                    started = self.news(event)
                    if started is not None:
                        await self.notify(event, started)

    def session(self) -> Any:
        """An async context manager around the run (e.g. an HTTP client)."""
        return _Nothing()

    async def notify(self, alert: Alert, started: float) -> bool:
        """Deliver with bounded retries; False (logged, counted) when it gave up."""
        delay = self.options.retry_delay
        for attempt in range(self.options.retries + 1):
            try:
                with anyio.fail_after(self.options.timeout + 5):
                    await self.deliver(alert, started)
            except (DeliveryError, TimeoutError) as exc:
                retry = getattr(exc, "retry", True)
                last = attempt == self.options.retries or not retry
                logger.log(
                    logging.ERROR if last else logging.WARNING,
                    "notifier %r: %s alert %s for %s: %s%s",
                    self.name, alert.state.value, alert.rule, alert.instrument,
                    exc or type(exc).__name__, "" if last else f"; retrying in {delay:g} s",
                )  # fmt: skip
                if last:
                    self.failed += 1
                    return False
                await anyio.sleep(delay)
                delay = min(delay * 2, 60.0)
            else:
                self.sent += 1
                return True
        return False  # pragma: no cover (the loop always returns)

    async def deliver(self, alert: Alert, started: float) -> None:
        """Send one notification; ``DeliveryError`` when it did not go through."""
        raise NotImplementedError


class _Nothing:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


def labels_of(alert: Alert) -> Mapping[str, str]:
    """Alertmanager-style labels: alertname, severity, instrument, channel, and the
    alert's own (site, host, the rule's labels)."""
    labels = {"alertname": alert.rule, "severity": alert.severity, "instrument": alert.instrument}
    if alert.channel is not None:
        labels["channel"] = alert.channel
    return {**dict(alert.labels), **labels}
