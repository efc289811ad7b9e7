"""Value objects shared by the sans-IO protocol machines (no I/O, stdlib only)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ControlRequest"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlRequest:
    """A USB control transfer described as data; the transport executes it.

    ``request_type`` is bmRequestType (bit 7 set = device-to-host, ``length`` bytes are
    read); for host-to-device requests ``data`` is sent.
    """

    request_type: int
    request: int
    value: int
    index: int
    length: int = 0
    data: bytes = b""

    @property
    def is_in(self) -> bool:
        """True for a device-to-host (IN) request."""
        return bool(self.request_type & 0x80)
