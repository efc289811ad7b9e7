"""Finding instruments: ``await aiotmc.list_resources()`` and ``await aiotmc.discover()``.

Both ask every registered transport that can list its resources (see
:mod:`aiotmc.registry`); a transport that cannot work here is reported, not raised.
"""

from __future__ import annotations

import logging
from typing import Any

from .registry import Discovery, registry

__all__ = ["discover", "list_resources"]

logger = logging.getLogger(__name__)


async def discover(**options: Any) -> Discovery:
    """Attached resources with descriptions, and why a kind could not be listed.

    ``options`` go to the transports that take them, e.g. ``vxi11_hosts=["192.0.2.0/28"]``
    (VXI-11 asks only the hosts named; see docs/vxi11.md).

    ``Discovery.found`` holds :class:`~aiotmc.registry.FoundResource` entries (name and
    description); ``Discovery.problems`` maps a resource kind to the reason it could not
    be listed, e.g. ``{"usb": 'python-libusb1 is not installed: pip install "aiotmc[usb]"'}``.
    """
    return await registry.discover(**options)


async def list_resources(**options: Any) -> list[str]:
    """VISA names of the attached instruments, e.g. ``USB0::0x0957::0x1796::MY1::INSTR``.

    USB enumeration runs in a worker thread on a private libusb context, so open
    instruments are not disturbed and the event loop never blocks. USB devices without a
    serial number are listed as ``USB0::vid::pid::INSTR`` (open them that way while they
    are unambiguous). A transport that cannot list here (e.g. USB without the ``usb``
    extra) is skipped and its reason logged; :func:`discover` returns the reasons.
    ``options`` as for :func:`discover`.
    """
    result = await discover(**options)
    for kind, reason in result.problems.items():
        logger.info("not listing %s resources: %s", kind, reason)
    return [found.resource for found in result.found]
