"""Opt-in automatic reconnection: the :class:`Reconnect` policy and its bounded retry loop.

``aiotmc.open(resource, reconnect=Reconnect(attempts=5, backoff=0.1, max_backoff=2.0))``
(or ``reconnect=True`` for these defaults) lets the transport replace a dropped link by
itself: a raw socket connects again, a USBTMC device is reopened by its resource name
(after a replug) and device-cleared. Rules (docs/reliability.md):

* An operation that was on the wire when the link dropped **fails loudly** with
  :class:`~aiotmc.ConnectionLostError` (or :class:`~aiotmc.SessionBrokenError`); it is never
  replayed on the new link, because nobody can know whether the instrument executed it.
* The *next* operation reconnects first: at most ``attempts`` tries, ``backoff`` seconds
  before the second, doubling (``multiplier``) up to ``max_backoff``, all within that
  operation's own timeout. If every try fails it raises :class:`~aiotmc.ConnectError`
  and the link stays down; the operation after that starts a new round.
* Everything that lives in the :class:`~aiotmc.Instrument` and the transport survives:
  timeout, terminations, encoding, ``service_requests()`` subscriptions (the same
  broadcaster keeps publishing once the new link is up). Settings that live in the
  *instrument* (``*SRE``, ranges...) are the instrument's business: a power-cycled device
  has lost them; the transport's ``reconnects`` counter tells that a reconnect happened,
  so set them again then.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

import anyio

from ._exceptions import AiotmcError, ConnectError, ConnectTimeout

__all__ = ["Reconnect", "resolve_policy", "retry_connect"]

logger = logging.getLogger("aiotmc.reconnect")


@dataclass(frozen=True, slots=True, kw_only=True)
class Reconnect:
    """How a transport replaces a dropped link (bounded: ``attempts`` tries per round).

    Args:
        attempts: tries per round (at least 1).
        backoff: seconds before the second try.
        max_backoff: upper bound of the wait between tries.
        multiplier: growth of the wait between tries (1: constant).
    """

    attempts: int = 5
    backoff: float = 0.1
    max_backoff: float = 2.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, not {self.attempts!r}")
        if not (self.backoff >= 0 and self.max_backoff >= 0 and self.multiplier >= 1):
            raise ValueError("backoff and max_backoff must be >= 0 and multiplier >= 1")

    def delays(self) -> Iterator[float]:
        """The wait before each try: 0, backoff, backoff*multiplier... (capped)."""
        delay = self.backoff
        for attempt in range(self.attempts):
            if attempt == 0:
                yield 0.0
                continue
            yield min(delay, self.max_backoff)
            delay *= self.multiplier

    @property
    def worst_case(self) -> float:
        """Seconds spent waiting between the tries of one round (connect times not included)."""
        return sum(self.delays())


def resolve_policy(value: Reconnect | bool | None) -> Reconnect | None:
    """``True`` -> the default policy, ``False``/``None`` -> none."""
    if value is True:
        return Reconnect()
    if value is False or value is None:
        return None
    if not isinstance(value, Reconnect):
        raise TypeError(f"reconnect must be a Reconnect, True or None, not {value!r}")
    return value


async def retry_connect(
    policy: Reconnect,
    attempt: Callable[[], Awaitable[None]],
    *,
    resource: str,
    deadline: float = math.inf,
) -> int:
    """Call ``attempt()`` until it succeeds, at most ``policy.attempts`` times, with backoff.

    Returns how many tries it took. Gives up early when ``deadline`` (absolute,
    ``anyio.current_time()``) passes: :class:`~aiotmc.ConnectTimeout`; after the last try:
    :class:`~aiotmc.ConnectError` with the last failure as its cause. Only aiotmc and
    ``OSError`` failures are retried; cancellation and bugs pass through at once.
    """
    last: BaseException | None = None
    tries = 0
    for delay in policy.delays():
        if delay:
            remaining = deadline - anyio.current_time()
            if remaining <= delay:
                break
            await anyio.sleep(delay)
        tries += 1
        try:
            if deadline == math.inf:
                await attempt()
            else:
                with anyio.CancelScope(deadline=deadline) as scope:
                    await attempt()
                if scope.cancelled_caught:
                    raise ConnectTimeout("reconnect attempt ran out of time", resource=resource)
            return tries
        except (AiotmcError, OSError) as exc:
            last = exc
            logger.info("%s: reconnect attempt %d failed: %s", resource, tries, exc)
    if anyio.current_time() >= deadline or tries < policy.attempts:
        raise ConnectTimeout(
            f"link not restored before the deadline ({tries} attempt(s)): {last}",
            resource=resource,
        ) from last
    raise ConnectError(
        f"link not restored after {tries} attempt(s): {last}", resource=resource
    ) from last
