"""aiotmc instruments as ophyd-async devices, for Bluesky (``pip install 'aiotmc[bluesky]'``).

An ophyd-async signal backend reading and writing SCPI values of an
:class:`~aiotmc.Instrument` (:class:`ScpiSignalBackend`), one-line signal declarations
(:func:`scpi_signal_r`, :func:`scpi_signal_rw`, :func:`scpi_signal_w`), monitoring by
service request or polling (:class:`Monitor`), a device base that opens its instrument in
``connect()`` (:class:`ScpiDevice`) and a triggerable DMM (:class:`ScpiDmm`).
See docs/bluesky.md.

asyncio only, as ophyd-async is; ``import aiotmc`` does not import this package.
"""

from __future__ import annotations

try:
    import bluesky  # noqa: F401
    import ophyd_async.core  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        f"aiotmc.bluesky needs ophyd-async and bluesky: pip install 'aiotmc[bluesky]' ({exc})"
    ) from exc

from .backend import ScpiSignalBackend, check_template
from .convert import ScpiConverter, make_converter, scpi_short_form
from .device import ScpiConnector, ScpiDevice
from .dmm import ScpiDmm, TriggerSource
from .link import ScpiLink
from .monitor import Monitor
from .signals import scpi_signal_r, scpi_signal_rw, scpi_signal_w

__all__ = [
    "Monitor",
    "ScpiConnector",
    "ScpiConverter",
    "ScpiDevice",
    "ScpiDmm",
    "ScpiLink",
    "ScpiSignalBackend",
    "TriggerSource",
    "check_template",
    "make_converter",
    "scpi_short_form",
    "scpi_signal_r",
    "scpi_signal_rw",
    "scpi_signal_w",
]
