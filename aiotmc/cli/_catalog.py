"""The simulated models that ``list``, ``sim`` and ``demo`` offer, and creating one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._errors import UsageError

if TYPE_CHECKING:
    from ..sim.device import SimDevice

SIM_MODELS: dict[str, str] = {
    "dmm": "digital multimeter",
    "psu": "DC power supply",
    "wavegen": "waveform generator",
    "scope": "oscilloscope",
}
"""Simulated models shipped with aiotmc and what they are (``SIM::<model>``)."""


def _sim_models() -> list[str]:
    from ..sim.devices import MODELS

    return [m for m in SIM_MODELS if m in MODELS] + sorted(m for m in MODELS if m not in SIM_MODELS)


def sim_device(model: str, **kwargs: Any) -> SimDevice:
    from ..sim.devices import MODELS, create_device

    if model not in MODELS:
        raise UsageError(f"unknown simulated model {model!r}, expected {', '.join(_sim_models())}")
    return create_device(model, **kwargs)
