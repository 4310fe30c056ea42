"""Numbers from places batchmap does not control: headers, JSON bodies, saved state."""

from __future__ import annotations

import math


def finite(value: object, *, low: float = -math.inf, high: float = math.inf) -> float | None:
    """`value` as a float in [low, high], or None for anything else (garbage, bool, NaN, inf).

    Text is read as a number ("1e400" overflows to inf, so it is None); JSON never sees inf/nan.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) and low <= number <= high else None
