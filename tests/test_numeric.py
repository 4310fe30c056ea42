"""One reading of numbers from headers, bodies and saved state: finite and in range, or None."""

from __future__ import annotations

import math

import pytest

from batchmap.numeric import finite


@pytest.mark.parametrize(
    ("value", "low", "high", "expected"),
    [
        (2, -math.inf, math.inf, 2.0),
        ("3.5", -math.inf, math.inf, 3.5),  # header and JSON-key text
        (" 7 ", 0.0, 10.0, 7.0),
        (math.nan, -math.inf, math.inf, None),
        (math.inf, -math.inf, math.inf, None),
        ("1e400", -math.inf, math.inf, None),  # overflows to inf
        ("nan", -math.inf, math.inf, None),
        ("soon", -math.inf, math.inf, None),
        (True, -math.inf, math.inf, None),  # a JSON true is not 1
        (None, -math.inf, math.inf, None),
        ([1], -math.inf, math.inf, None),
        (-1, 0.0, math.inf, None),
        (0.0, 0.0, 1.0, 0.0),
        (1.0, 0.0, 1.0, 1.0),
        (1.5, 0.0, 1.0, None),
        (10**400, -math.inf, math.inf, None),  # an int too large for a float
    ],
)
def test_finite_in_range_or_none(
    value: object, low: float, high: float, expected: float | None
) -> None:
    assert finite(value, low=low, high=high) == expected
