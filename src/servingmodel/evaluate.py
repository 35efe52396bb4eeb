"""How far a model is from the measurements, and the benchmark's metric definitions (chapter 01
onward).

Every chapter that refines the model ends with the same error row: the median
and 90th-percentile absolute relative error of throughput per GPU and
throughput per user over the measured points. The functions here compute it
the same way for every model, so the rows can be compared across chapters.

A prediction frame holds ``pred_tok_s_per_gpu`` and ``pred_tok_s_per_user``
and has the same index as the measurement frame it predicts (as returned by
:func:`servingmodel.crude.crude_predictions`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .measurements import FAMILIES

QUANTITIES = ("tok_s_per_gpu", "tok_s_per_user")
PREFIX = "pred_"
P_HIGH = 90.0


@dataclass(frozen=True)
class Targets:
    """The calibrated model's accuracy targets (issue 5), as absolute relative errors."""

    throughput_median: float = 0.05  # per GPU and per user, over the 114 points
    throughput_p90: float = 0.15
    latency_median: float = 0.15  # measured TTFT and TPOT values
    held_out_median: float = 0.12  # throughput of a family left out of the fit


TARGETS = Targets()


def relative_errors(pred, meas) -> np.ndarray:
    """Signed relative error ``(pred - meas) / meas`` of aligned arrays."""
    p = np.asarray(pred, dtype=float)
    m = np.asarray(meas, dtype=float)
    if p.shape != m.shape:
        raise ValueError(f"prediction shape {p.shape} does not match measurement shape {m.shape}")
    if p.size == 0:
        raise ValueError("no values to compare")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(m))):
        raise ValueError("predictions and measurements must be finite")
    if np.any(m <= 0):
        raise ValueError("measurements must be positive")
    return (p - m) / m


def abs_error_stats(rel) -> tuple[float, float]:
    """Median and 90th percentile of the absolute relative errors ``rel``."""
    a = np.abs(np.asarray(rel, dtype=float))
    if a.size == 0:
        raise ValueError("no errors to summarise")
    return float(np.median(a)), float(np.percentile(a, P_HIGH))


def _check_aligned(df_pred: pd.DataFrame, df_meas: pd.DataFrame) -> None:
    if not df_pred.index.equals(df_meas.index):
        raise ValueError("prediction and measurement frames must have the same index")
    for c in ("deployment", "concurrency"):
        if c in df_pred.columns and c in df_meas.columns:
            if not (df_pred[c].to_numpy() == df_meas[c].to_numpy()).all():
                raise ValueError(f"prediction and measurement frames disagree on {c!r}")
    for q in QUANTITIES:
        if PREFIX + q not in df_pred.columns:
            raise ValueError(f"prediction frame has no column {PREFIX + q!r}")
        if q not in df_meas.columns:
            raise ValueError(f"measurement frame has no column {q!r}")


def error_summary(df_pred: pd.DataFrame, df_meas: pd.DataFrame, by: str = "family") -> pd.DataFrame:
    """Tidy table of absolute relative errors, over all points and per group.

    Columns: ``group`` (``all``, then each value of ``by`` in the book's family
    order), ``quantity`` (``tok_s_per_gpu`` or ``tok_s_per_user``), ``n``,
    ``median`` and ``p90`` (fractions, not percent).
    """
    _check_aligned(df_pred, df_meas)
    if by not in df_meas.columns:
        raise ValueError(f"measurement frame has no column {by!r} to group by")
    groups = [("all", df_meas.index)]
    values = list(dict.fromkeys(df_meas[by]))
    if by == "family":
        values = [f for f in FAMILIES if f in values] + [v for v in values if v not in FAMILIES]
    groups += [(str(v), df_meas.index[df_meas[by] == v]) for v in values]
    rows = []
    for name, idx in groups:
        for q in QUANTITIES:
            rel = relative_errors(df_pred.loc[idx, PREFIX + q], df_meas.loc[idx, q])
            med, p90 = abs_error_stats(rel)
            rows.append({"group": name, "quantity": q, "n": len(idx), "median": med, "p90": p90})
    return pd.DataFrame(rows)


def error_row(df_pred: pd.DataFrame, df_meas: pd.DataFrame, model: str) -> pd.DataFrame:
    """One-row summary over all points, the row each chapter adds to the book's error table.

    Columns: ``model``, ``n``, ``gpu_median``, ``gpu_p90``, ``user_median``,
    ``user_p90`` (fractions).
    """
    s = error_summary(df_pred, df_meas).query("group == 'all'").set_index("quantity")
    return pd.DataFrame(
        [
            {
                "model": model,
                "n": int(s.loc["tok_s_per_gpu", "n"]),
                "gpu_median": float(s.loc["tok_s_per_gpu", "median"]),
                "gpu_p90": float(s.loc["tok_s_per_gpu", "p90"]),
                "user_median": float(s.loc["tok_s_per_user", "median"]),
                "user_p90": float(s.loc["tok_s_per_user", "p90"]),
            }
        ]
    )


def format_percent(frame: pd.DataFrame, columns, digits: int = 1) -> pd.DataFrame:
    """Copy of ``frame`` with the fraction ``columns`` written as percent strings."""
    out = frame.copy()
    for c in columns:
        out[c] = [_percent(v, digits) for v in out[c]]
    return out


def _percent(v, digits: int) -> str:
    return percent(v, digits) + "%"


def percent(v, digits: int = 0, sign: bool = False) -> str:
    """The fraction ``v`` in percent, without the % sign; ``sign`` writes a + on positive values.

    A value that rounds to zero is written as 0, never -0 or +0.
    """
    s = f"{100 * float(v):{'+' if sign else ''}.{digits}f}"
    return s.lstrip("+-") if float(s) == 0 else s


def per_user_from_latencies(osl, ttft_s, tpot_s):
    """Throughput per user of one request: ``osl / (ttft + (osl - 1) * tpot)`` (tok/s).

    This is the benchmark's per-user metric at concurrency 1: it includes the
    time to first token, so it is lower than the decode speed ``1 / tpot``.
    """
    osl = np.asarray(osl, dtype=float)
    ttft = np.asarray(ttft_s, dtype=float)
    tpot = np.asarray(tpot_s, dtype=float)
    if np.any(osl < 1) or np.any(ttft < 0) or np.any(tpot <= 0):
        raise ValueError("need osl >= 1, ttft >= 0 and tpot > 0")
    return osl / (ttft + (osl - 1) * tpot)


def median_errors_by_deployment(
    preds: dict, meas: pd.DataFrame, quantity: str = "tok_s_per_gpu"
) -> pd.DataFrame:
    """Median absolute relative error per deployment for several predictions (one column each).

    ``preds`` maps a name to a prediction frame aligned with ``meas``; two
    extra rows give the median and the 90th percentile over all points.
    """
    out = {}
    for name, p in preds.items():
        rel = pd.Series(np.abs(relative_errors(p[PREFIX + quantity], meas[quantity])), index=meas.index)
        col = rel.groupby(meas["deployment"], sort=False).median()
        col["all (median)"] = rel.median()
        col["all (p90)"] = rel.quantile(P_HIGH / 100)
        out[name] = col
    return pd.DataFrame(out)


def family_error_table(df_pred: pd.DataFrame, df_meas: pd.DataFrame) -> pd.DataFrame:
    """The per-family error table of chapters 03 to 05: one row for all points, then one per family.

    Columns ``n``, ``per-GPU median``, ``per-GPU p90``, ``per-user median``
    and ``per-user p90`` (fractions), indexed by group in the book's family order.
    """
    summary = error_summary(df_pred, df_meas)
    wide = summary.pivot(index="group", columns="quantity", values=["median", "p90"])
    groups = list(dict.fromkeys(summary["group"]))
    return pd.DataFrame(
        {
            "n": summary.groupby("group", sort=False)["n"].first(),
            "per-GPU median": wide[("median", "tok_s_per_gpu")],
            "per-GPU p90": wide[("p90", "tok_s_per_gpu")],
            "per-user median": wide[("median", "tok_s_per_user")],
            "per-user p90": wide[("p90", "tok_s_per_user")],
        }
    ).loc[groups]


def family_gpu_errors(df_pred: pd.DataFrame, df_meas: pd.DataFrame) -> pd.DataFrame:
    """Median and p90 absolute relative error of throughput per GPU, for all points and per
    family.
    """
    table = family_error_table(df_pred, df_meas)
    return table[["per-GPU median", "per-GPU p90"]].set_axis(["median", "p90"], axis=1)


def latency_error_table(meas: pd.DataFrame, cases) -> pd.DataFrame:
    """Median absolute relative error of a latency, one row per case (chapter 09).

    ``cases`` holds ``(name, prediction frame, "ttft" or "tpot", loaded only, in the fit)``; each row
    scores ``pred_<latency>_ms`` against ``mean_<latency>_ms`` on the points that published it
    (only those at a concurrency above 1 when ``loaded only``). Columns ``points``,
    ``median |error|`` (text, percent) and ``in the fit``, indexed by ``metric``.
    """
    rows = []
    for name, pred, latency, loaded_only, in_fit in cases:
        if latency not in ("ttft", "tpot"):
            raise ValueError(f"latency must be 'ttft' or 'tpot', got {latency!r}")
        has = meas[f"mean_{latency}_ms"].notna() & ((meas["concurrency"] > 1) if loaded_only else True)
        err = pred.loc[has, f"pred_{latency}_ms"] / meas.loc[has, f"mean_{latency}_ms"] - 1
        rows.append(
            {
                "metric": name,
                "points": int(has.sum()),
                "median |error|": f"{100 * err.abs().median():.1f}%",
                "in the fit": in_fit,
            }
        )
    return pd.DataFrame(rows).set_index("metric")
