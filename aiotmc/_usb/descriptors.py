"""USB descriptors as plain data, and finding USBTMC interfaces (no usb1 here).

A USBTMC interface has bInterfaceClass 0xFE (application specific), bInterfaceSubClass
0x03, bInterfaceProtocol 0 (USBTMC) or 1 (USB488); one bulk-OUT, one bulk-IN and an
optional interrupt-IN endpoint.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

__all__ = [
    "USBTMC_CLASS",
    "USBTMC_SUBCLASS",
    "EndpointDescriptor",
    "InterfaceDescriptor",
    "UsbtmcInterface",
    "find_usbtmc_interfaces",
]

USBTMC_CLASS: Final = 0xFE
USBTMC_SUBCLASS: Final = 0x03
USB488_PROTOCOL: Final = 0x01

_TRANSFER_TYPE_MASK: Final = 0x03
_BULK: Final = 0x02
_INTERRUPT: Final = 0x03


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointDescriptor:
    address: int  #: bEndpointAddress (bit 7 set = IN)
    attributes: int  #: bmAttributes (bits 0-1 = transfer type)
    max_packet_size: int  #: wMaxPacketSize (bits 0-10; high-bandwidth bits stripped)

    @property
    def is_in(self) -> bool:
        return bool(self.address & 0x80)

    @property
    def transfer_type(self) -> int:
        return self.attributes & _TRANSFER_TYPE_MASK


@dataclass(frozen=True, slots=True, kw_only=True)
class InterfaceDescriptor:
    number: int
    alt_setting: int
    interface_class: int
    interface_subclass: int
    interface_protocol: int
    endpoints: tuple[EndpointDescriptor, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class UsbtmcInterface:
    """The endpoints of one USBTMC interface, as the port needs them."""

    number: int
    alt_setting: int
    protocol: int  #: 0 = USBTMC, 1 = USB488
    bulk_out: int
    bulk_in: int
    interrupt_in: int | None
    max_packet_size: int  #: wMaxPacketSize of bulk-IN
    bulk_out_max_packet_size: int
    interrupt_max_packet_size: int

    @property
    def usb488(self) -> bool:
        return self.protocol == USB488_PROTOCOL


def _usbtmc_from(interface: InterfaceDescriptor) -> UsbtmcInterface | None:
    bulk_in = bulk_out = interrupt_in = None
    for ep in interface.endpoints:
        if ep.transfer_type == _BULK:
            if ep.is_in and bulk_in is None:
                bulk_in = ep
            elif not ep.is_in and bulk_out is None:
                bulk_out = ep
        elif ep.transfer_type == _INTERRUPT and ep.is_in and interrupt_in is None:
            interrupt_in = ep
    if bulk_in is None or bulk_out is None:
        return None
    return UsbtmcInterface(
        number=interface.number,
        alt_setting=interface.alt_setting,
        protocol=interface.interface_protocol,
        bulk_out=bulk_out.address,
        bulk_in=bulk_in.address,
        interrupt_in=interrupt_in.address if interrupt_in else None,
        max_packet_size=bulk_in.max_packet_size & 0x7FF or 64,
        bulk_out_max_packet_size=bulk_out.max_packet_size & 0x7FF or 64,
        interrupt_max_packet_size=(interrupt_in.max_packet_size & 0x7FF or 8)
        if interrupt_in
        else 0,
    )


def find_usbtmc_interfaces(
    interfaces: Iterable[InterfaceDescriptor],
) -> list[UsbtmcInterface]:
    """USBTMC interfaces (class 0xFE/0x03, protocol 0 or 1) with bulk endpoints.

    One entry per interface number (its first matching alternate setting), sorted.
    """
    found: dict[int, UsbtmcInterface] = {}
    for interface in interfaces:
        if (
            interface.interface_class != USBTMC_CLASS
            or interface.interface_subclass != USBTMC_SUBCLASS
            or interface.interface_protocol not in (0, USB488_PROTOCOL)
            or interface.number in found
        ):
            continue
        usbtmc = _usbtmc_from(interface)
        if usbtmc is not None:
            found[interface.number] = usbtmc
    return [found[number] for number in sorted(found)]
