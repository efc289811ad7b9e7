"""Device quirks as data: what real USBTMC instruments get wrong, and a table of who does.

A :class:`Quirks` value names behaviours, not devices. The host side
(:class:`~aiotmc.protocol.usbtmc.UsbtmcConnection` and the USBTMC transport) honours each
one, and the device emulator (:class:`~aiotmc.sim.usbtmc_device.UsbtmcFunction`) can be
told to misbehave the same way, so every entry is tested against a device that really
does it. :func:`quirks_for` picks the entry for a VID/PID; users add or override entries
with ``extra=`` (build on a known one with :func:`dataclasses.replace`).

Stdlib only; no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from types import MappingProxyType
from typing import Final

from .._exceptions import LocalProtocolError

__all__ = ["KNOWN_QUIRKS", "NO_QUIRKS", "Quirks", "quirks_for"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Quirks:
    """Named misbehaviours of a USBTMC device (all off by default).

    Each field documents what the device does and what the host does about it.
    """

    #: Device: a second REQUEST_DEV_DEP_MSG_IN for the same response restarts it from the
    #: beginning. Host: asks for the whole response (up to ``max_size``) in one request and
    #: never requests again; the end of that transfer ends the message.
    one_request_per_response: bool = False
    #: Device: never sets EOM. Host: a transfer whose last byte is ``terminator`` ends the
    #: message (a definite block ends after its length and terminator).
    eom_unreliable: bool = False
    #: Device: TransferSize is wrong for responses holding a definite-length block, which
    #: arrive as one transfer. Host: trusts the IEEE block length (plus an optional
    #: terminator) instead of TransferSize and EOM.
    transfer_size_wrong_for_blocks: bool = False
    #: Device: sends no zero-length packet after a transfer that is an exact multiple of
    #: wMaxPacketSize (a larger read never completes). Host: reads one packet for the
    #: header, then exactly the rest of the transfer.
    no_short_packet_on_exact_multiple: bool = False
    #: Device: TransferSize counts the alignment bytes (NULs) after the message. Host:
    #: strips up to 3 trailing NULs that follow the terminator.
    transfer_size_includes_padding: bool = False
    #: Device: the first bulk-IN read after a request may be a zero-length packet. Host:
    #: retries that read once instead of reporting a protocol error.
    empty_first_bulk_in_retry: bool = False
    #: Device: DEV_DEP_MSG_IN headers carry a wrong MsgID. Host: checks only bTag.
    msgid_unreliable: bool = False
    #: Device: breaks on transfers larger than this (both directions). Host: caps every
    #: DEV_DEP_MSG_OUT payload and every requested TransferSize at this many bytes.
    max_transfer_size: int | None = None
    #: Like ``max_transfer_size`` for DEV_DEP_MSG_OUT (commands, uploads) only.
    max_out_transfer_size: int | None = None
    #: Device: ignores everything until a USB port reset after it was opened. Host: resets
    #: the device while opening (when the port supports reset).
    reset_on_open: bool = False
    #: Device: claims REN_CONTROL/RL1 but stops answering after REN/GTL/LLO. Host: reports
    #: no remote/local capability and never sends those requests.
    remote_local_broken: bool = False
    #: Device: CHECK_CLEAR_STATUS stays PENDING forever after INITIATE_CLEAR. Host: clears
    #: with the abort sequences and endpoint halts instead of INITIATE_CLEAR.
    clear_hangs: bool = False
    #: Device: drops a REQUEST_DEV_DEP_MSG_IN that arrives sooner than this (seconds) after
    #: the end of a command. Host: waits at least this long between write and read.
    write_read_delay: float = 0.0
    #: The response terminator that ``eom_unreliable`` and
    #: ``transfer_size_includes_padding`` look for.
    terminator: int = 0x0A

    def __post_init__(self) -> None:
        for name in ("max_transfer_size", "max_out_transfer_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise LocalProtocolError(f"Quirks.{name} must be at least 1, got {value}")
        if self.write_read_delay < 0:
            raise LocalProtocolError(
                f"Quirks.write_read_delay must not be negative, got {self.write_read_delay}"
            )
        if not 0 <= self.terminator <= 0xFF:
            raise LocalProtocolError(f"Quirks.terminator must be a byte, got {self.terminator}")

    @property
    def active(self) -> tuple[str, ...]:
        """Names of the fields that differ from the defaults (for logs and details)."""
        return tuple(
            f.name for f in fields(self) if getattr(self, f.name) != getattr(NO_QUIRKS, f.name)
        )

    @property
    def out_transfer_limit(self) -> int | None:
        """The smallest DEV_DEP_MSG_OUT payload cap these quirks ask for, if any."""
        caps = [c for c in (self.max_transfer_size, self.max_out_transfer_size) if c]
        return min(caps) if caps else None


NO_QUIRKS: Final = Quirks()
"""A well-behaved device."""

# Rigol (VID 0x1AB1): one request per response (a second one restarts the transfer), EOM
# always set and TransferSize wrong for big blocks (trust the IEEE block length), no short
# packet after an exact multiple of wMaxPacketSize (reads hang), an empty first bulk-IN
# (retry once), and RL1 claimed although REN/LLO break the instrument.
_RIGOL: Final = Quirks(
    one_request_per_response=True,
    transfer_size_wrong_for_blocks=True,
    no_short_packet_on_exact_multiple=True,
    empty_first_bulk_in_retry=True,
    remote_local_broken=True,
)

# Siglent (VID 0xF4EC): TransferSize includes the alignment padding (strip up to 3 NULs
# after the terminator), needs a USB reset at open, claims RL1 but does not support it.
_SIGLENT: Final = Quirks(
    transfer_size_includes_padding=True,
    reset_on_open=True,
    remote_local_broken=True,
)

KNOWN_QUIRKS: Final[Mapping[tuple[int, int | None], Quirks]] = MappingProxyType(
    {
        # Rigol, every model seen so far (DS2000 0x04B0, DS4000 0x04B1, MSO5000 0x0515 too).
        (0x1AB1, None): _RIGOL,
        # Rigol DS1000Z: INITIATE_CLEAR can hang the instrument.
        (0x1AB1, 0x04CE): replace(_RIGOL, clear_hangs=True),
        # Rigol DS1000E/D (DS1102E): a wrong MsgID in DEV_DEP_MSG_IN headers was reported.
        (0x1AB1, 0x0588): replace(_RIGOL, msgid_unreliable=True),
        # Siglent, every model.
        (0xF4EC, None): _SIGLENT,
        # Siglent SDS1x04X-E: requests longer than 48 bytes are not accepted.
        (0xF4EC, 0xEE38): replace(_SIGLENT, max_out_transfer_size=48),
        # Advantest/ADCMT (also without class 0xFE): 63-byte transfers, EOM never set.
        (0x1334, None): Quirks(max_transfer_size=63, eom_unreliable=True),
        # Yokogawa: advertises RL1 but does not support remote/local.
        (0x0B21, None): Quirks(remote_local_broken=True),
        # Agilent DSO1000 (a rebadged Rigol): advertises RL1 but does not support it.
        (0x0957, 0x0588): Quirks(remote_local_broken=True),
    }
)
"""Known devices: ``(VID, PID)`` or ``(VID, None)`` for a whole vendor -> :class:`Quirks`."""


def quirks_for(
    vid: int | None,
    pid: int | None,
    extra: Mapping[tuple[int, int | None], Quirks] | None = None,
) -> Quirks:
    """The quirks for a device: the first match of ``extra[(vid, pid)]``,
    ``extra[(vid, None)]``, ``KNOWN_QUIRKS[(vid, pid)]``, ``KNOWN_QUIRKS[(vid, None)]``.

    Entries are not merged: an entry replaces the vendor default. Returns
    :data:`NO_QUIRKS` when nothing matches (or ``vid`` is ``None``).
    """
    if vid is None:
        return NO_QUIRKS
    keys: list[tuple[int, int | None]] = [(vid, None)] if pid is None else [(vid, pid), (vid, None)]
    for table in (extra or {}, KNOWN_QUIRKS):
        for key in keys:
            found = table.get(key)
            if found is not None:
                return found
    return NO_QUIRKS
