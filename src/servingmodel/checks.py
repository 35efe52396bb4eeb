"""Input checks shared by the package: each raises ``ValueError`` naming the quantity and the bad value.

Every public function that takes a physical quantity refuses a value that
cannot be physical (negative, NaN, infinite, fractional where a count is
meant) instead of computing with it, so a wrong input never turns silently
into a plausible-looking number.
"""

from __future__ import annotations

import numpy as np


def _arr(value) -> np.ndarray:
    return np.asarray(value, dtype=float)


def nonnegative(name: str, value, *, allow_inf: bool = False) -> np.ndarray:
    """``value`` as a float array; every element finite (or +inf if allowed) and >= 0."""
    a = _arr(value)
    ok = (a >= 0) & (np.isfinite(a) | (allow_inf & (a == np.inf)))
    if not np.all(ok):
        raise ValueError(f"{name} must be non-negative and finite, got {value!r}")
    return a


def positive(name: str, value, *, allow_inf: bool = False) -> np.ndarray:
    """``value`` as a float array; every element finite (or +inf if allowed) and > 0."""
    a = _arr(value)
    ok = (a > 0) & (np.isfinite(a) | (allow_inf & (a == np.inf)))
    if not np.all(ok):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return a


def whole(name: str, value, minimum: int) -> np.ndarray:
    """``value`` as a float array of whole numbers >= ``minimum``."""
    a = _arr(value)
    if not np.all(np.isfinite(a) & (a == np.round(a)) & (a >= minimum)):
        raise ValueError(f"{name} must be whole numbers, at least {minimum}, got {value!r}")
    return a


def fraction(name: str, value) -> np.ndarray:
    """``value`` as a float array in (0, 1]."""
    a = _arr(value)
    if not np.all((a > 0) & (a <= 1)):
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")
    return a
