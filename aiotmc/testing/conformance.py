"""``check_transport``: the whole :class:`~aiotmc.transports.base.MessageTransport`
contract, in the style of trio's ``check_two_way_stream``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection

from ._cancellation import check_cancellation
from ._messages import check_blocks, check_framing
from ._session import KitOptions, LinkOpener, Stats
from ._status import check_info, check_status
from ._timing import check_busy, check_close, check_deadlines

__all__ = ["CHECKS", "check_transport"]

Check = Callable[..., Awaitable[Stats]]

CHECKS: dict[str, Check] = {
    "info": check_info,
    "framing": check_framing,
    "blocks": check_blocks,
    "deadlines": check_deadlines,
    "busy": check_busy,
    "status": check_status,
    "cancellation": check_cancellation,
    "close": check_close,
}
"""Every check, in the order :func:`check_transport` runs them."""


async def check_transport(
    open_link: LinkOpener,
    *,
    options: KitOptions | None = None,
    skip: Collection[str] = (),
) -> dict[str, Stats]:
    """Run every check against links from ``open_link``; return what each one did.

    ``open_link()`` returns an async context manager yielding a new, open link to a
    :func:`~aiotmc.testing.conformance_device` (``aiotmc.open_transport(...)`` fits);
    it is called once per check and again whenever a check needs a fresh link.
    ``skip`` names checks (keys of :data:`CHECKS`) a transport cannot run yet.

    Raises ``AssertionError`` naming the check and the step that failed.
    """
    unknown = set(skip) - set(CHECKS)
    if unknown:
        raise ValueError(f"unknown checks {sorted(unknown)}; known: {list(CHECKS)}")
    return {
        name: await check(open_link, options=options)
        for name, check in CHECKS.items()
        if name not in skip
    }
