"""Whether to look for an answer right after sending, before waiting for one.

A peer on the same host (a simulator, an instrument proxy on loopback) is often woken by
the ``send`` and answers before it returns; a remote instrument practically never does.
Looking costs one ``recv`` that fails with ``EAGAIN`` when nothing is there; not looking
when the answer is there costs a trip through the event loop's poller. The probe keeps
looking while looks find the answer and, after a look that finds nothing, skips the next
1, 2, 4 ... :data:`MAX_SKIP` exchanges before looking again, so a remote instrument costs
one failed ``recv`` per :data:`MAX_SKIP` exchanges.
"""

from __future__ import annotations

from typing import Final

__all__ = ["MAX_SKIP", "AnswerProbe"]

MAX_SKIP: Final = 64


class AnswerProbe:
    """Adaptive decision, one per connection; pure bookkeeping, no I/O."""

    __slots__ = ("_backoff", "_skip")

    def __init__(self) -> None:
        self._skip = 0  # exchanges left before the next look
        self._backoff = 1  # how many to skip after the next miss

    def should_look(self) -> bool:
        """True when this exchange should look before waiting (counts skipped ones)."""
        if self._skip:
            self._skip -= 1
            return False
        return True

    def found(self) -> None:
        """The look found the answer: keep looking."""
        self._backoff = 1

    def missed(self) -> None:
        """The look found nothing: skip the next exchanges, twice as many as last time."""
        self._skip = self._backoff
        self._backoff = min(self._backoff * 2, MAX_SKIP)
