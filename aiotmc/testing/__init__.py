"""Testing aids (public): a conformance kit for transports, simulated-instrument fixtures.

:func:`check_transport` checks the whole :class:`~aiotmc.transports.base.MessageTransport`
contract against a link to a :func:`conformance_device`; each check is importable on
its own. ``aiotmc.testing.pytest_plugin`` (registered as a ``pytest11`` entry point)
provides fixtures for simulated instruments. See docs/testing.md.

Names load lazily (PEP 562): the device half (``aiotmc.testing.device``) runs in USB
emulator processes that have no anyio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from ._cancellation import cancel_after, check_cancellation
    from ._messages import check_blocks, check_framing
    from ._session import KitOptions, LinkOpener, Stats
    from ._status import check_info, check_status
    from ._timing import check_busy, check_close, check_deadlines
    from .attach import ATTACHMENTS, open_sim_instrument, sim_device
    from .conformance import CHECKS, check_transport
    from .device import (
        USB_FACTORY,
        ConformanceDevice,
        binary_payload,
        block_payload,
        check_payload,
        conformance_device,
        usb_function,
    )

_LAZY: dict[str, str] = {
    "ATTACHMENTS": ".attach",
    "open_sim_instrument": ".attach",
    "sim_device": ".attach",
    "CHECKS": ".conformance",
    "check_transport": ".conformance",
    "check_info": "._status",
    "check_status": "._status",
    "check_framing": "._messages",
    "check_blocks": "._messages",
    "check_deadlines": "._timing",
    "check_busy": "._timing",
    "check_close": "._timing",
    "check_cancellation": "._cancellation",
    "cancel_after": "._cancellation",
    "KitOptions": "._session",
    "LinkOpener": "._session",
    "Stats": "._session",
    "USB_FACTORY": ".device",
    "ConformanceDevice": ".device",
    "binary_payload": ".device",
    "block_payload": ".device",
    "check_payload": ".device",
    "conformance_device": ".device",
    "usb_function": ".device",
}

__all__ = [
    "ATTACHMENTS",
    "CHECKS",
    "USB_FACTORY",
    "ConformanceDevice",
    "KitOptions",
    "LinkOpener",
    "Stats",
    "binary_payload",
    "block_payload",
    "cancel_after",
    "check_blocks",
    "check_busy",
    "check_cancellation",
    "check_close",
    "check_deadlines",
    "check_framing",
    "check_info",
    "check_payload",
    "check_status",
    "check_transport",
    "conformance_device",
    "open_sim_instrument",
    "sim_device",
    "usb_function",
]

__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY, __all__)
