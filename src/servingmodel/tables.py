"""Text for the book's tables and prose: number formats and glue helpers (presentation).

Chapters format every number they print or glue through these helpers, so a
table and the sentence that quotes it show the same digits, and no chapter
defines a formatting helper of its own.
"""

from __future__ import annotations

import math

import pandas as pd
from myst_nb import glue

from .evaluate import percent
from .specs import ParameterFact


def fixed(digits: int, missing: str = ""):
    """A formatter for ``Series.map``: ``digits`` decimals, ``missing`` for NaN or None."""

    def fmt(v) -> str:
        return missing if v is None or pd.isna(v) else f"{v:.{digits}f}"

    return fmt


def finite(digits: int, missing: str = "-", thousands: bool = False):
    """Like :func:`fixed`, but ``missing`` for every non-finite value (NaN and infinities)."""

    def fmt(v) -> str:
        if v is None or not math.isfinite(float(v)):
            return missing
        return f"{v:,.{digits}f}" if thousands else f"{v:.{digits}f}"

    return fmt


def signed_percent(v, digits: int = 0) -> str:
    """The fraction ``v`` as a signed percentage without the % sign (0, never -0 or +0)."""
    return percent(v, digits, sign=True)


def percent_or_blank(v, digits: int = 1) -> str:
    """The fraction ``v`` as a percentage with its sign, blank for NaN."""
    return "" if pd.isna(v) else f"{100 * v:.{digits}f}%"


def span_text(values, fmt=signed_percent) -> str:
    """'between <least> and <greatest>' of ``values``, each written by ``fmt``."""
    values = list(values)
    return f"between {fmt(min(values))} and {fmt(max(values))}"


def glue_text(key: str, value) -> None:
    """Glue ``value`` (already formatted text) under ``key``, for ``{glue:text}`` in the prose."""
    glue(key, value if isinstance(value, str) else str(value), display=False)


def glue_fact(prefix: str, fact: ParameterFact, digits: int, scale: float = 1.0) -> None:
    """Glue a parameter's nominal value, range and source:
    ``<prefix>_<name>_{nominal,low,high,source}``.
    """
    for key, v in (("nominal", fact.nominal), ("low", fact.low), ("high", fact.high)):
        glue_text(f"{prefix}_{fact.name}_{key}", f"{v * scale:.{digits}f}")
    glue_text(f"{prefix}_{fact.name}_source", fact.source)


def glue_column(prefix: str, table: pd.DataFrame, column: str, fmt: str = "{:.1f}", key: str = "{}") -> None:
    """Glue ``column`` of every row of ``table``, formatted by ``fmt``, as ``<prefix>_<key>`` where
    ``key``
    is a format string of the row's index (``"tp{}"`` gives ``tp4`` for index 4)."""
    for idx, v in table[column].items():
        glue_text(f"{prefix}_{key.format(idx)}", fmt.format(v))
