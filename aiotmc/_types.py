"""Small shared value types: status register flags, service-request events, defaults."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, TypeAlias

__all__ = [
    "DEFAULT",
    "BytesLike",
    "Default",
    "EventStatus",
    "RenMode",
    "ServiceRequest",
    "StatusByte",
]


#: Any buffer of bytes the library sends without copying it first.
BytesLike: TypeAlias = bytes | bytearray | memoryview


class StatusByte(enum.IntFlag):
    """IEEE 488.2 status byte (``*STB?``, serial poll, USB488 READ_STATUS_BYTE)."""

    NONE = 0
    BIT0 = 0x01
    BIT1 = 0x02
    EAV = 0x04  #: error/event queue not empty (SCPI)
    QUES = 0x08  #: questionable status summary (SCPI)
    MAV = 0x10  #: message available in the output queue
    ESB = 0x20  #: event status bit (an enabled ESR bit is set)
    RQS = 0x40  #: request service (MSS when read with ``*STB?``)
    OPER = 0x80  #: operation status summary (SCPI)


class EventStatus(enum.IntFlag):
    """IEEE 488.2 standard event status register (``*ESR?``, enabled by ``*ESE``)."""

    NONE = 0
    OPC = 0x01  #: operation complete
    RQC = 0x02  #: request control
    QYE = 0x04  #: query error
    DDE = 0x08  #: device-dependent error
    EXE = 0x10  #: execution error
    CME = 0x20  #: command error
    URQ = 0x40  #: user request
    PON = 0x80  #: power on


class RenMode(enum.IntEnum):
    """Remote-enable line operations, with VISA's values (PyVISA ``RENLineOperation``).

    ``Instrument.control_ren(mode)`` takes these (or the same integers). On USB488 there
    is no addressing: the ``ADDRESS`` variants act like their unaddressed forms.
    """

    DEASSERT = 0  #: REN off: every device goes to local
    ASSERT = 1  #: REN on: the device goes remote when next addressed
    DEASSERT_GTL = 2  #: go to local, then REN off
    ASSERT_ADDRESS = 3  #: REN on and address the device (remote now)
    ASSERT_LLO = 4  #: REN on and local lockout (front panel locked)
    ASSERT_ADDRESS_LLO = 5  #: REN on, address the device, local lockout
    ADDRESS_GTL = 6  #: address the device and send go-to-local (REN stays on)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceRequest:
    """One service request: the status byte the instrument sent, and when it arrived.

    ``monotonic`` is ``time.monotonic()`` (for intervals), ``wall`` is ``time.time()``
    (for logs and CSV), ``source`` names the resource.
    """

    status: StatusByte
    monotonic: float
    wall: float
    source: str = ""


class Default(enum.Enum):
    """Sentinel type: "use the instrument's configured value"."""

    token = 0


DEFAULT: Final = Default.token
