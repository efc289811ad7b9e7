"""Serial line settings with PyVISA's option names and values, applied with termios.

``baud_rate`` (any standard rate the platform's termios knows), ``data_bits`` (5-8),
``parity`` (``"none"``, ``"odd"``, ``"even"``, ``"mark"``, ``"space"`` or PyVISA's
``Parity`` values 0-4), ``stop_bits`` (1, 1.5, 2 or PyVISA's ``StopBits`` values 10, 15,
20) and ``flow_control`` (``"none"``, ``"xon_xoff"``, ``"rts_cts"`` or PyVISA's
``ControlFlow`` values 0, 1, 2; DTR/DSR (4) is not available through termios). The line is
put in raw mode: no echo, no line editing, no character translation, reads that return at
once (VMIN = 1, VTIME = 0 on a non-blocking fd).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

__all__ = ["SerialSettings"]

_PARITY: Final = {"none": 0, "odd": 1, "even": 2, "mark": 3, "space": 4}
_STOP_BITS: Final = {1: 1.0, 1.5: 1.5, 2: 2.0, 10: 1.0, 15: 1.5, 20: 2.0}
_FLOW: Final = {"none": 0, "xon_xoff": 1, "xonxoff": 1, "rts_cts": 2, "rtscts": 2, "dtr_dsr": 4}


@dataclass(frozen=True, slots=True, kw_only=True)
class SerialSettings:
    """A validated serial configuration (see the module docstring for the values)."""

    baud_rate: int = 9600
    data_bits: int = 8
    parity: int = 0  #: PyVISA ``Parity`` value
    stop_bits: float = 1.0
    flow_control: int = 0  #: PyVISA ``ControlFlow`` value

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> SerialSettings:
        """Validate PyVISA-style options (``ValueError`` naming the bad one)."""
        baud = options.get("baud_rate", 9600)
        if not isinstance(baud, int) or isinstance(baud, bool) or baud <= 0:
            raise ValueError(f"baud_rate must be a positive integer, got {baud!r}")
        bits = options.get("data_bits", 8)
        if bits not in (5, 6, 7, 8) or isinstance(bits, bool):
            raise ValueError(f"data_bits must be 5, 6, 7 or 8, got {bits!r}")
        return cls(
            baud_rate=baud,
            data_bits=bits,
            parity=_choice("parity", options.get("parity", 0), _PARITY),
            stop_bits=_stop_bits(options.get("stop_bits", 1)),
            flow_control=_choice("flow_control", options.get("flow_control", 0), _FLOW),
        )

    def apply(self, attrs: list[Any]) -> list[Any]:
        """``termios.tcgetattr`` attributes changed to these settings, in raw mode."""
        import termios

        speed = getattr(termios, f"B{self.baud_rate}", None)
        if speed is None:
            raise ValueError(f"baud_rate {self.baud_rate} is not a standard rate on this system")
        iflag, oflag, cflag, lflag, _, _, cc = attrs
        iflag &= ~(
            termios.IGNBRK
            | termios.BRKINT
            | termios.PARMRK
            | termios.ISTRIP
            | termios.INLCR
            | termios.IGNCR
            | termios.ICRNL
            | termios.IXON
            | termios.IXOFF
            | termios.IXANY
            | termios.INPCK
        )
        oflag &= ~termios.OPOST
        lflag &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG | termios.IEXTEN)
        cmspar = getattr(termios, "CMSPAR", 0)
        cflag &= ~(
            termios.CSIZE | termios.PARENB | termios.PARODD | termios.CSTOPB | termios.CRTSCTS
        )
        cflag &= ~cmspar
        cflag |= termios.CREAD | termios.CLOCAL
        cflag |= {5: termios.CS5, 6: termios.CS6, 7: termios.CS7, 8: termios.CS8}[self.data_bits]
        if self.parity:
            if self.parity in (3, 4) and not cmspar:
                raise ValueError("mark and space parity are not available on this system")
            cflag |= termios.PARENB
            if self.parity in (1, 3):  # odd, mark
                cflag |= termios.PARODD
            if self.parity in (3, 4):
                cflag |= cmspar
            iflag |= termios.INPCK
        if self.stop_bits != 1.0:
            if (self.stop_bits == 1.5) != (self.data_bits == 5):
                raise ValueError(
                    f"{self.stop_bits:g} stop bits with {self.data_bits} data bits is not possible"
                    " (1.5 needs 5 data bits, 2 needs 6-8)"
                )
            cflag |= termios.CSTOPB
        if self.flow_control == 1:
            iflag |= termios.IXON | termios.IXOFF
        elif self.flow_control == 2:
            cflag |= termios.CRTSCTS
        elif self.flow_control == 4:
            raise ValueError("DTR/DSR flow control is not available through termios")
        cc = list(cc)
        cc[termios.VMIN] = 1  # with O_NONBLOCK: EAGAIN when empty, 0 bytes only on hang-up
        cc[termios.VTIME] = 0
        return [iflag, oflag, cflag, lflag, speed, speed, cc]


def _choice(name: str, value: object, names: dict[str, int]) -> int:
    if isinstance(value, str):
        key = value.strip().lower().replace("/", "_").replace("-", "_")
        if key in names:
            return names[key]
    elif isinstance(value, int) and not isinstance(value, bool) and value in names.values():
        return value
    accepted = ", ".join(repr(k) for k in names)
    raise ValueError(f"{name} must be one of {accepted} (or PyVISA's values), got {value!r}")


def _stop_bits(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and value in _STOP_BITS:
        return _STOP_BITS[value]
    raise ValueError(f"stop_bits must be 1, 1.5 or 2 (or PyVISA's 10, 15, 20), got {value!r}")
