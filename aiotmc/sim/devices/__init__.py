"""Ready-made simulated instruments and :func:`create_device` (stdlib only)."""

from __future__ import annotations

from typing import Any, Final

from ..device import SimDevice
from .dmm import SimDmm
from .psu import PsuChannel, SimPsu
from .scope import SimScope
from .wavegen import SimWaveformGenerator, WavegenChannel

__all__ = [
    "MODELS",
    "PsuChannel",
    "SimDmm",
    "SimPsu",
    "SimScope",
    "SimWaveformGenerator",
    "WavegenChannel",
    "create_device",
]

MODELS: Final[dict[str, type[SimDevice]]] = {
    "dmm": SimDmm,
    "psu": SimPsu,
    "scope": SimScope,
    "wavegen": SimWaveformGenerator,
}
"""Model names accepted by :func:`create_device` (and ``aiotmc sim``)."""


def create_device(model: str, **kwargs: Any) -> SimDevice:
    """A new simulated instrument: ``"dmm"``, ``"psu"``, ``"wavegen"`` or ``"scope"``.

    ``kwargs`` go to the model's constructor (``latency=``, ``clock=``, ``seed=``...).
    Raises ``ValueError`` naming the known models for an unknown one.
    """
    try:
        cls = MODELS[model.strip().lower()]
    except KeyError:
        known = ", ".join(sorted(MODELS))
        raise ValueError(f"unknown simulated instrument {model!r}; known models: {known}") from None
    return cls(**kwargs)
