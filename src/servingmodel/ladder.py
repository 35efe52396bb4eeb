"""The error ladder: every refinement of the model with the error it leaves (chapter 09).

Each rung is computed from the data by the same code the chapters use: the
crude model with its alpha fitted per family (chapter 02), the physical model
at nominal (sourced) parameters with one more refinement switched on per rung
(chapters 03 to 07), the calibrated model (chapter 09), and last the
calibrated model with the TTFT of the step-level replay (chapter 08).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import crude, evaluate, stepsim
from .fullmodel import predict_measurements
from .setup import LADDER_FEATURES, Features, ModelParams

CRUDE = "crude model"
CALIBRATED = "+ calibration"
REPLAYED = "+ step replay (TTFT)"


def ladder_predictions(
    meas: pd.DataFrame,
    calibrated: ModelParams,
    nominal: ModelParams | None = None,
    replayed: pd.DataFrame | None = None,
) -> dict[str, pd.DataFrame]:
    """Predictions of every rung, in order, keyed by rung name.

    The last rung is the book's final model: the calibrated mean field with the
    TTFT of the step-level replay (chapter 08); ``replayed`` is
    :func:`servingmodel.stepsim.replay_measurements` of ``meas``, computed here if not given.
    """
    nominal = nominal or ModelParams.nominal()
    single = crude.family_single_user_tok_s(meas)
    out = {CRUDE: crude.crude_predictions(meas, crude.fit_family_alphas(meas, single), single)}
    for name, feats in LADDER_FEATURES:
        out[name] = predict_measurements(meas, nominal, feats)
    out[CALIBRATED] = predict_measurements(meas, calibrated, Features())
    if replayed is None:
        replayed = stepsim.replay_measurements(meas, calibrated)
    out[REPLAYED] = stepsim.with_replayed_ttft(out[CALIBRATED], replayed)
    return out


def _latency_median(pred: pd.DataFrame, meas: pd.DataFrame, pcol: str, mcol: str) -> float:
    if pcol not in pred.columns:
        return float("nan")
    has = meas[mcol].notna()
    err = np.abs(pred.loc[has, pcol].to_numpy(float) / meas.loc[has, mcol].to_numpy(float) - 1)
    return float(np.median(err)) if np.all(np.isfinite(err)) else float("nan")


def error_ladder(
    meas: pd.DataFrame,
    calibrated: ModelParams,
    nominal: ModelParams | None = None,
    replayed: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per rung and group (all points, then each family): median and p90 errors.

    Columns: ``rung``, ``group``, ``gpu_median``, ``gpu_p90``, ``user_median``,
    ``user_p90``, plus ``ttft_median`` and ``tpot_median`` over the points
    where the benchmark published them (group ``all`` only; NaN for the crude
    model, which predicts no latencies).
    """
    rows = []
    for rung, pred in ladder_predictions(meas, calibrated, nominal, replayed).items():
        summ = evaluate.error_summary(pred, meas)
        for group in dict.fromkeys(summ["group"]):
            g = summ[summ["group"] == group].set_index("quantity")
            row = {
                "rung": rung,
                "group": group,
                "gpu_median": g.loc["tok_s_per_gpu", "median"],
                "gpu_p90": g.loc["tok_s_per_gpu", "p90"],
                "user_median": g.loc["tok_s_per_user", "median"],
                "user_p90": g.loc["tok_s_per_user", "p90"],
            }
            if group == "all":
                row["ttft_median"] = _latency_median(pred, meas, "pred_ttft_ms", "mean_ttft_ms")
                row["tpot_median"] = _latency_median(pred, meas, "pred_tpot_ms", "mean_tpot_ms")
            rows.append(row)
    return pd.DataFrame(rows)
