"""Opening a :class:`~aiotmc.transports.usbtmc.UsbtmcTransport`: over a port the caller
opened, or by resource name through libusb (imported only when a device is opened).

Neither holds a task group or cancel scope across its ``yield``: entering in one task and
exiting in another, or inside a cancel scope (even an already-cancelled one), closes the
transport, the port and the libusb context.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, TypedDict

import anyio

from ..._exceptions import ConnectTimeout
from ...protocol.quirks import Quirks, quirks_for
from ...resources import ResourceName, UsbInstr
from ..spec import FoundResource, LinkSettings, TransportSpec
from ._transport import UsbtmcTransport

if TYPE_CHECKING:
    from ..._usb.port import UsbPort
    from ...reconnect import Reconnect

__all__ = ["TRANSPORT", "UsbOptions", "open_usb_resource", "open_usbtmc_transport"]


def open_usbtmc_transport(
    port: UsbPort, *, resource: str, quirks: Quirks | None = None, **options: Any
) -> AbstractAsyncContextManager[UsbtmcTransport]:
    """``async with open_usbtmc_transport(port, resource=...) as transport:``.

    See :meth:`UsbtmcTransport.open` (``quirks=None``: look up the VID/PID in
    ``resource``) and :class:`UsbtmcTransport` for ``options``.
    """
    return UsbtmcTransport.open(port, resource=resource, quirks=quirks, **options)


@asynccontextmanager
async def open_usb_resource(
    resource: UsbInstr,
    *,
    connect_timeout: float | None = 10.0,
    quirks: Quirks | Mapping[tuple[int, int | None], Quirks] | None = None,
    driver: str = "auto",
    reconnect: Reconnect | None = None,
    **options: Any,
) -> AsyncIterator[UsbtmcTransport]:
    """Open ``USB::vid::pid[::serial[::interface]]::INSTR`` through libusb.

    ``quirks``: a :class:`Quirks` to use as is, or extra table entries for
    :func:`~aiotmc.protocol.quirks.quirks_for`. ``driver``: libusb event driver.
    ``reconnect``: retry policy for reopening the device after it was lost (see
    :class:`~aiotmc.reconnect.Reconnect`); :meth:`UsbtmcTransport.reconnect` works
    without one. The session starts with a device clear (``clear_on_open``).
    """
    if isinstance(quirks, Quirks):
        chosen = quirks
    else:
        chosen = quirks_for(resource.vid, resource.pid, quirks)
    name = str(resource)

    def reopen() -> AbstractAsyncContextManager[UsbPort]:
        return _libusb_port(resource, connect_timeout=connect_timeout, driver=driver)

    options.setdefault("clear_on_open", True)
    async with (
        reopen() as port,
        UsbtmcTransport.open(
            port, resource=name, quirks=chosen, reopen=reopen, reconnect=reconnect, **options
        ) as transport,
    ):
        yield transport


@asynccontextmanager
async def _libusb_port(
    resource: UsbInstr, *, connect_timeout: float | None, driver: str
) -> AsyncIterator[UsbPort]:
    """The device's USBTMC interface through libusb, opened within ``connect_timeout``."""
    from ..._usb.libusb_port import open_usb_port

    port_cm = open_usb_port(
        resource.vid, resource.pid, resource.serial, resource.interface, driver=driver
    )
    try:
        with anyio.fail_after(connect_timeout):
            port = await port_cm.__aenter__()
    except TimeoutError:
        raise ConnectTimeout(
            f"USB device not opened within {connect_timeout} s", resource=str(resource)
        ) from None
    try:
        yield port
    finally:
        with anyio.CancelScope(shield=True):  # the libusb context must close, even when cancelled
            await port_cm.__aexit__(None, None, None)


# -- registration ---------------------------------------------------------------------------


class UsbOptions(TypedDict, total=False):
    """Options of ``USB::...::INSTR`` resources (see :func:`open_usb_resource`)."""

    quirks: Quirks | Mapping[tuple[int, int | None], Quirks] | None
    driver: str  #: libusb event driver: "auto", "thread" or "pollfd"
    pipeline: bool  #: several bulk transfers in flight for large reads and uploads


def _open_usb(
    resource: ResourceName, settings: LinkSettings, options: Mapping[str, Any]
) -> AbstractAsyncContextManager[UsbtmcTransport]:
    assert isinstance(resource, UsbInstr)
    return open_usb_resource(
        resource,
        connect_timeout=settings.connect_timeout,
        reconnect=settings.reconnect,
        **options,
    )


def _usb_unavailable() -> str | None:
    """Why USB cannot work here: python-libusb1 or libusb missing; None when it can."""
    try:
        import usb1  # noqa: F401
    except ImportError:
        return 'python-libusb1 is not installed: pip install "aiotmc[usb]"'
    from ..._usb.errors import LibusbNotFoundError
    from ..._usb.library import load_libusb

    try:
        load_libusb()
    except LibusbNotFoundError as exc:
        return str(exc)
    return None


async def _list_usb() -> list[FoundResource]:
    """Attached USBTMC interfaces with manufacturer, product and access problems."""
    from ..._usb import discovery

    found = []
    for info in await discovery.alist_usbtmc_devices():
        words = [w for w in (info.manufacturer, info.product) if w] or ["USBTMC instrument"]
        if info.usb488:
            words.append("(USB488)")
        if not info.accessible:
            words.append("(no access: check the udev rules / driver)")
        found.append(FoundResource(info.visa_name, " ".join(words)))
    return found


TRANSPORT: Final = TransportSpec(
    kind="usb",
    summary="USBTMC / USB488 through libusb",
    example="USB0::0x0957::0x1796::MY123::INSTR",
    open=_open_usb,
    options=UsbOptions,
    list_resources=_list_usb,
    unavailable=_usb_unavailable,
)
"""The USBTMC transport's registration (see :mod:`aiotmc.registry`)."""
