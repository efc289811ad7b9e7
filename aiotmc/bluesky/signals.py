"""Declaring SCPI signals in one line: ``scpi_signal_r``, ``scpi_signal_rw``, ``scpi_signal_w``.

>>> voltage = scpi_signal_r(link, "MEAS:VOLT:DC?", float, units="V")   # doctest: +SKIP
>>> level = scpi_signal_rw(link, "VOLT", float, units="V")             # VOLT? / VOLT {value}

``link`` is a :class:`ScpiLink` (a device's signals share one) or an open
:class:`~aiotmc.Instrument`. Keyword options are those of :class:`ScpiSignalBackend`.
"""

from __future__ import annotations

from typing import Any

from ophyd_async.core import DEFAULT_TIMEOUT, SignalDatatypeT, SignalR, SignalRW, SignalW

from ..instrument import Instrument
from .backend import ScpiSignalBackend
from .link import ScpiLink

__all__ = ["scpi_signal_r", "scpi_signal_rw", "scpi_signal_w"]


def scpi_signal_r(
    link: ScpiLink | Instrument,
    query: str,
    datatype: type[SignalDatatypeT],
    *,
    name: str = "",
    timeout: float | None = DEFAULT_TIMEOUT,
    **options: Any,
) -> SignalR[SignalDatatypeT]:
    """A read-only signal: ``query`` (``"MEAS:VOLT:DC?"``) is sent on each read.

    ``options``: ``units``, ``precision``, ``monitor``, ``binary``, ``big_endian`` (see
    :class:`ScpiSignalBackend`). ``timeout`` is ophyd-async's per-operation timeout.
    """
    backend = ScpiSignalBackend(datatype, link, read=query, **options)
    return SignalR(backend, timeout=timeout, name=name)


def scpi_signal_rw(
    link: ScpiLink | Instrument,
    command: str,
    datatype: type[SignalDatatypeT],
    *,
    read: str | None = None,
    write: str | None = None,
    name: str = "",
    timeout: float | None = DEFAULT_TIMEOUT,
    **options: Any,
) -> SignalRW[SignalDatatypeT]:
    """A read-write signal on the SCPI setting ``command``: read with ``command?``,
    written with ``command {value}``; ``read=``/``write=`` replace either (a write
    template names ``{value}``, optionally with a format spec: ``"VOLT {value:.3f}"``).

    ``options``: ``units``, ``precision``, ``monitor``, ``wait``, ``check_errors``...
    (see :class:`ScpiSignalBackend`).
    """
    backend = ScpiSignalBackend(
        datatype,
        link,
        read=read or f"{command}?",
        write=write or f"{command} {{value}}",
        **options,
    )
    return SignalRW(backend, timeout=timeout, name=name)


def scpi_signal_w(
    link: ScpiLink | Instrument,
    write: str,
    datatype: type[SignalDatatypeT],
    *,
    name: str = "",
    timeout: float | None = DEFAULT_TIMEOUT,
    **options: Any,
) -> SignalW[SignalDatatypeT]:
    """A write-only signal: ``write`` is a template naming ``{value}``
    (``"DISP:TEXT '{value}'"``)."""
    backend = ScpiSignalBackend(datatype, link, read=None, write=write, **options)
    return SignalW(backend, timeout=timeout, name=name)
