"""Diagnosis of the measurements: what the pods cost beyond the model's step (chapter 06, hypothesis H5).

Model-free readings of the measured points: the time per output token of two
deployments at equal per-instance load, its difference, and the step time a
lone request implies beyond the model's. These are studies of the data, not
terms of the model; the host term they motivate lives in :mod:`servingmodel.host`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .host import oversubscription
from .layout import layout_of
from .roofline import implied_tpot_s


def implied_step_excess_s(per_user_tok_s, ttft_s, osl: int, model_step_s):
    """Time per decode step a measurement spends beyond the model's step (hypothesis H5, chapter 06).

    From a concurrency-1 point: TPOT implied = (OSL / per-user throughput - TTFT) / (OSL - 1),
    with a (predicted or measured) TTFT; the excess is that minus the model's decode-step time.
    """
    return implied_tpot_s(per_user_tok_s, ttft_s, osl) - np.asarray(model_step_s, float)


def implied_penalty_per_process_s(excess_s, tp, cpu_cores, processes_besides_workers: float):
    """Excess step time per unit of oversubscription E x P / C (NaN where no process is beyond the cores)."""
    over = oversubscription(tp, cpu_cores, processes_besides_workers)
    e = np.asarray(excess_s, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(over > 0, e / np.where(over > 0, over, 1.0), np.nan)


def least_squares_penalty_s(excess_s, oversubscription_units) -> float:
    """The penalty per unit of oversubscription that best fits measured excesses: least squares through zero,
    sum(u x e) / sum(u^2) over the pairs (chapter 06's diagnosis of H5)."""
    e = np.asarray(excess_s, float)
    u = np.asarray(oversubscription_units, float)
    if e.shape != u.shape or e.size == 0:
        raise ValueError("excess_s and oversubscription_units must be non-empty and of the same shape")
    if np.any(~np.isfinite(e)) or np.any(~(u >= 0)):
        raise ValueError("excesses must be finite and oversubscription non-negative")
    if not np.dot(u, u) > 0:
        raise ValueError("no pod is oversubscribed: the penalty is not identified")
    return float(np.dot(u, e) / np.dot(u, u))


def per_instance_time_per_token_s(output_tok_s, concurrency, instances):
    """Closed-loop time per output token of one request, at the per-instance load.

    With C requests spread over R instances, min(C, R) instances are busy with
    n = max(C / R, 1) requests each; a busy instance delivers
    ``output_tok_s / min(C, R)``, so each of its requests gets a token every
    n x min(C, R) / ``output_tok_s`` seconds (its prefill included).
    Returns (n, seconds per token).
    """
    x = np.asarray(output_tok_s, float)
    c = np.asarray(concurrency, float)
    r = np.asarray(instances, float)
    if np.any(~(x > 0)) or np.any(~(c >= 1)) or np.any(~(r >= 1)):
        raise ValueError("output_tok_s must be positive, concurrency and instances at least 1")
    n = np.maximum(c / r, 1.0)
    return n, n * np.minimum(c, r) / x


def paired_excess(meas, deployment: str, reference: str):
    """Measured time per output token of ``deployment`` minus ``reference`` at equal per-instance load.

    A model-free look at what a pod's setting costs (hypothesis H5): rows are
    the per-instance concurrencies both deployments were measured at, with
    each one's time per token and the difference, all in seconds.
    """
    tables = []
    for name in (deployment, reference):
        rows = meas[meas["deployment"] == name]
        if rows.empty:
            known = ", ".join(dict.fromkeys(meas["deployment"]))
            raise ValueError(f"unknown deployment {name!r}; measured ones: {known}")
        instances = len(layout_of(rows.iloc[0]).instance_tps())
        n, t = per_instance_time_per_token_s(rows["output_tok_s"], rows["concurrency"], instances)
        tables.append(pd.Series(t, index=pd.Index(n, name="per_instance_concurrency")))
    both = pd.concat(tables, axis=1, keys=["time_per_token_s", "reference_time_per_token_s"], join="inner")
    both = both.sort_index()
    both["excess_s"] = both["time_per_token_s"] - both["reference_time_per_token_s"]
    return both.reset_index()


#: One 4-core standalone pod against llm-d pods (32 cores) of the same TP size, both measured.
CPU_PAIRS = {4: ("TP4 x 1", "1P-TP4 + 3D-TP4"), 8: ("TP8 x 1", "1P-TP8 + 1D-TP8")}


def cpu_pairs(meas: pd.DataFrame, pairs: dict = CPU_PAIRS) -> pd.DataFrame:
    """Measured extra time per output token of the 4-core pods, at equal requests per pod (hypothesis H5).

    One row per TP size and shared per-pod load, with ``tp``, ``deployment``
    and ``reference`` added to the columns of :func:`paired_excess`.
    Model-free: only measured throughputs enter.
    """
    frames = [
        paired_excess(meas, dep, ref).assign(tp=tp, deployment=dep, reference=ref)
        for tp, (dep, ref) in pairs.items()
    ]
    return pd.concat(frames, ignore_index=True)


def lone_request_excess_ms(pairs: pd.DataFrame) -> dict:
    """TP size -> extra ms per output token of the 4-core pod when it serves a single request."""
    lone = pairs[pairs["per_instance_concurrency"] == 1]
    if lone["tp"].duplicated().any() or lone.empty:
        raise ValueError("expected one lone-request row per TP size")
    return {int(tp): 1e3 * float(e) for tp, e in zip(lone["tp"], lone["excess_s"], strict=True)}
