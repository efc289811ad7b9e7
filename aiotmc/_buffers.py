"""The list of byte views a scatter send (``sendmsg``) works through, and its bookkeeping.

Every sender that hands several buffers to ``sendmsg`` without joining them (the raw
socket and VXI-11 clients, the blocking fast path, the simulators) keeps the same list:
one flat byte view per non-empty part, the parts already sent dropped from the front.
Stdlib only.
"""

from __future__ import annotations

from collections.abc import Iterable

from ._types import BytesLike

__all__ = ["byte_views", "drop_sent"]


def byte_views(parts: Iterable[BytesLike]) -> list[memoryview]:
    """One flat (``"B"``) view per non-empty part, in order, nothing copied."""
    return [memoryview(part).cast("B") for part in parts if len(part)]


def drop_sent(views: list[memoryview], sent: int) -> None:
    """Take the first ``sent`` bytes off the front of ``views`` (what a send took)."""
    while sent:
        head = views[0]
        if sent >= len(head):
            sent -= len(head)
            views.pop(0)
        else:
            views[0] = head[sent:]
            sent = 0
