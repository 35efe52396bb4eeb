"""Input checks shared by the package: each raises ``ValueError`` naming the quantity and the bad value.

Every public function that takes a physical quantity refuses a value that
cannot be physical (negative, NaN, infinite, fractional where a count is
meant) instead of computing with it, so a wrong input never turns silently
into a plausible-looking number. Scalars take a fast path (the model's inner
loops call these checks on single numbers); arrays are checked element-wise.
"""

from __future__ import annotations

import math

import numpy as np


def _arr(value) -> np.ndarray:
    return np.asarray(value, dtype=float)


def nonnegative(name: str, value, *, allow_inf: bool = False) -> np.ndarray:
    """``value`` as a float array; every element finite (or +inf if allowed) and >= 0."""
    a = _arr(value)
    if a.ndim == 0:
        v = float(a)
        ok = v >= 0 and (math.isfinite(v) or (allow_inf and v == math.inf))
    else:
        ok = bool(((a >= 0) & (np.isfinite(a) | (allow_inf & (a == np.inf)))).all())
    if not ok:
        raise ValueError(f"{name} must be non-negative and finite, got {value!r}")
    return a


def positive(name: str, value, *, allow_inf: bool = False) -> np.ndarray:
    """``value`` as a float array; every element finite (or +inf if allowed) and > 0."""
    a = _arr(value)
    if a.ndim == 0:
        v = float(a)
        ok = v > 0 and (math.isfinite(v) or (allow_inf and v == math.inf))
    else:
        ok = bool(((a > 0) & (np.isfinite(a) | (allow_inf & (a == np.inf)))).all())
    if not ok:
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return a


def whole(name: str, value, minimum: int) -> np.ndarray:
    """``value`` as a float array of whole numbers >= ``minimum``."""
    a = _arr(value)
    if a.ndim == 0:
        v = float(a)
        ok = math.isfinite(v) and v == round(v) and v >= minimum
    else:
        ok = bool((np.isfinite(a) & (a == np.round(a)) & (a >= minimum)).all())
    if not ok:
        raise ValueError(f"{name} must be whole numbers, at least {minimum}, got {value!r}")
    return a


def fraction(name: str, value) -> np.ndarray:
    """``value`` as a float array in (0, 1]."""
    a = _arr(value)
    ok = (0 < float(a) <= 1) if a.ndim == 0 else bool(((a > 0) & (a <= 1)).all())
    if not ok:
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")
    return a
