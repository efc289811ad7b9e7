"""The timeout rule shared by the API and the CLI (docs/instrument.md, "Timeouts").

Timeouts are seconds. ``None`` (or ``math.inf``) waits forever; ``0`` means "at once" (only
what has already arrived); negative and NaN values are refused. Values above
:data:`MAX_TIMEOUT` are refused too: ``timeout=5000`` is PyVISA's millisecond habit, and
silently waiting 83 minutes would be worse than an error. For a longer bound, pass ``None``
and wrap the call in ``anyio.fail_after(...)``.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Final

__all__ = ["MAX_TIMEOUT", "check_timeout"]

MAX_TIMEOUT: Final = 1000.0
"""The largest finite timeout accepted, in seconds (a bit under 17 minutes)."""


def check_timeout(value: object, *, name: str = "timeout") -> float | None:
    """``value`` as a valid timeout in seconds, or :class:`ValueError`/:class:`TypeError`."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number of seconds or None, got {value!r}")
    seconds = float(value)
    if math.isnan(seconds) or seconds < 0:
        raise ValueError(f"{name} must be >= 0 seconds (None: wait forever), got {value!r}")
    if seconds > MAX_TIMEOUT and not math.isinf(seconds):
        raise ValueError(
            f"{name}={value!r} is refused: aiotmc timeouts are in seconds, not milliseconds: "
            f"did you mean {seconds / 1000:g}? (limit {MAX_TIMEOUT:g} s; for longer waits "
            "pass None and bound the call with anyio.fail_after)"
        )
    return seconds
