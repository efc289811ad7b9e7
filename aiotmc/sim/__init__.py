"""Simulated instruments (public): IEEE 488.2 device models and the ways to attach them.

The device models (:class:`SimDevice`, :mod:`aiotmc.sim.devices`) are stdlib only and
sans-IO. :class:`SimServer` / :func:`serve_many` / :func:`serve_forever` serve them on
real TCP sockets and need anyio; they are imported lazily (PEP 562) so that
``import aiotmc.sim`` works without anyio.

>>> from aiotmc.sim import create_device
>>> dmm = create_device("dmm")
>>> dmm.write(b"*IDN?\\n")
>>> dmm.read()
b'aiotmc,SIM-DMM,0001,0.1\\n'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports
from .commands import Block, Call, Later, Raw, Response, ScpiError, command
from .device import Operation, SimDevice, test_pattern
from .devices import (
    MODELS,
    SimDmm,
    SimPsu,
    SimScope,
    SimWaveformGenerator,
    create_device,
)

if TYPE_CHECKING:
    from .server import SimServer, serve_forever, serve_many

_LAZY: dict[str, str] = {
    "SimServer": ".server",
    "serve_many": ".server",
    "serve_forever": ".server",
}

__all__ = [
    "MODELS",
    "Block",
    "Call",
    "Later",
    "Operation",
    "Raw",
    "Response",
    "ScpiError",
    "SimDevice",
    "SimDmm",
    "SimPsu",
    "SimScope",
    "SimServer",
    "SimWaveformGenerator",
    "command",
    "create_device",
    "serve_forever",
    "serve_many",
    "test_pattern",
]


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY, __all__)
