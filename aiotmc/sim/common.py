"""The IEEE 488.2 common commands and SCPI system commands every simulated device has."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Final

from .._types import EventStatus, StatusByte
from .arguments import Call
from .patterns import command
from .responses import Later, Response

if TYPE_CHECKING:
    from .messages import Operation

__all__ = ["CommonCommands"]

_RQS: Final = int(StatusByte.RQS)
_OPC: Final = int(EventStatus.OPC)


class CommonCommands:
    """``*IDN?``, ``*RST``, ``*CLS``, ``*ESE``, ``*ESR?``, ``*SRE``, ``*STB?``, ``*OPC``,
    ``*WAI``, ``*TRG``, ``*TST?``, ``*OPT?`` and ``SYSTem:ERRor``/``VERSion``.

    A mixin of :class:`~aiotmc.sim.SimDevice`, which holds the state named here.
    """

    identity: str
    _esr: int
    _ese: int
    _sre: int
    _errors: deque[tuple[int, str]]
    _operations: list[Operation]
    _opc_armed: bool

    def reset(self) -> None:
        """Restore power-on settings (``*RST``)."""

    def handle_trigger(self) -> None:
        """Start the operations waiting for a trigger."""

    def _stb(self) -> int:
        raise NotImplementedError

    @command("*IDN?")
    def _idn(self, call: Call) -> Response:
        return self.identity

    @command("*RST")
    def _rst(self, call: Call) -> Response:
        self.reset()
        return None

    @command("*CLS")
    def _cls(self, call: Call) -> Response:
        self._esr = 0
        self._errors.clear()
        self._opc_armed = False
        return None

    @command("*ESE", args=1)
    def _ese_set(self, call: Call) -> Response:
        self._ese = call.integer(0, minimum=0, maximum=255)
        return None

    @command("*ESE?")
    def _ese_query(self, call: Call) -> Response:
        return self._ese

    @command("*ESR?")
    def _esr_query(self, call: Call) -> Response:
        value, self._esr = self._esr, 0
        return value

    @command("*SRE", args=1)
    def _sre_set(self, call: Call) -> Response:
        self._sre = call.integer(0, minimum=0, maximum=255) & ~_RQS
        return None

    @command("*SRE?")
    def _sre_query(self, call: Call) -> Response:
        return self._sre

    @command("*STB?")
    def _stb_query(self, call: Call) -> Response:
        return self._stb()

    @command("*OPC")
    def _opc_set(self, call: Call) -> Response:
        if self._operations:
            self._opc_armed = True
        else:
            self._esr |= _OPC
        return None

    @command("*OPC?")
    def _opc_query(self, call: Call) -> Response:
        return Later(lambda: 1)

    @command("*WAI")
    def _wai(self, call: Call) -> Response:
        return Later(lambda: None)

    @command("*TRG")
    def _trg(self, call: Call) -> Response:
        self.handle_trigger()
        return None

    @command("*TST?")
    def _tst(self, call: Call) -> Response:
        return 0

    @command("*OPT?")
    def _opt(self, call: Call) -> Response:
        return "0"

    @command("SYSTem:ERRor[:NEXT]?")
    def _syst_err(self, call: Call) -> Response:
        code, message = self._errors.popleft() if self._errors else (0, "No error")
        text = message.replace('"', "'")
        return f'{code:+d},"{text}"'

    @command("SYSTem:ERRor:COUNt?")
    def _syst_err_count(self, call: Call) -> Response:
        return len(self._errors)

    @command("SYSTem:VERSion?")
    def _syst_version(self, call: Call) -> Response:
        return "1999.0"
