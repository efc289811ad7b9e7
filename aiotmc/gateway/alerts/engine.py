"""The rule engine as a gateway Component: the hub's readings and status events in, the
alerts they cause published back to the hub.

A thin shell around the sans-IO :class:`~aiotmc.gateway.alerts.evaluator.RuleEvaluator`:
it waits for the next event or the evaluator's next deadline (a pending alert's ``for``,
a channel going stale), whichever comes first, with the wall clock (alerts carry Unix
times).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio

from ..._exceptions import ConfigError
from ..model import Alert, Event, Hub
from .evaluator import RuleEvaluator
from .rules import Rule, parse_rules

__all__ = ["RuleEngine", "rules_from_config"]

logger = logging.getLogger("aiotmc.gateway.alerts")


class RuleEngine:
    """Runs ``rules`` on the hub's events; ``name`` is its hub subscription."""

    def __init__(
        self,
        rules: Sequence[Rule],
        *,
        name: str = "rules",
        clock: Callable[[], float] = time.time,
        queue: int = 10_000,
    ) -> None:
        self.name = name
        self.rules = tuple(rules)
        self.clock = clock
        self.queue = queue
        self._evaluator: RuleEvaluator | None = None

    def __repr__(self) -> str:
        return f"<RuleEngine {len(self.rules)} rule(s)>"

    @classmethod
    def from_config(
        cls,
        section: Sequence[Any] | Mapping[str, Any],
        key: tuple[str | int, ...] = (),
        *,
        instruments: Sequence[str] | None = None,
    ) -> RuleEngine:
        """The ``[[rules]]`` array (or a mapping holding it under ``"rules"``), validated
        up front: ``ConfigError`` names the bad field. With ``instruments`` (the configured
        names), a rule's ``instrument`` must match at least one of them."""
        rules = parse_rules(section, key)
        if instruments is not None:
            base = (*key, "rules") if isinstance(section, Mapping) else key
            for index, rule in enumerate(rules):
                if not any(rule.matches(name, None) for name in instruments):
                    known = ", ".join(sorted(instruments)) or "none"
                    raise ConfigError(
                        f"{rule.instrument!r} matches no configured instrument (known: {known})",
                        key=(*base, index, "instrument"),
                    )
        return cls(rules)

    def active(self) -> list[Alert]:
        """The alerts now pending or firing (empty before ``run``)."""
        return [] if self._evaluator is None else self._evaluator.active()

    async def run(self, hub: Hub, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        evaluator = RuleEvaluator(
            self.rules, now=self.clock(), labels={"site": hub.site, "host": hub.host}
        )
        self._evaluator = evaluator
        async with hub.subscribe(self.name, maxsize=self.queue) as events:
            task_status.started()
            while True:
                deadline = evaluator.next_deadline()
                delay = math.inf if deadline is None else max(0.0, deadline - self.clock())
                event: Event | None = None
                with anyio.move_on_after(delay):
                    try:
                        event = await events.receive()
                    except anyio.EndOfStream:
                        return
                now = self.clock()
                if event is None:
                    alerts = evaluator.advance(now)
                elif isinstance(event, Alert):
                    continue  # ours or another engine's, echoed by the hub
                else:
                    alerts = evaluator.feed(event, now)
                for alert in alerts:
                    logger.info(
                        "alert %s %s %s/%s: %s",
                        alert.state.value, alert.rule, alert.instrument, alert.channel or "-",
                        alert.summary,
                    )  # fmt: skip
                    await hub.publish(alert)


#: The plug-in factory (``aiotmc.gateway.alerts:rules_from_config``).
rules_from_config = RuleEngine.from_config
