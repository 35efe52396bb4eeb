"""The reader's crude per-GPU model: segments AB and BC (chapter 02).

Assumptions, as the reader made them:

1. each request is served by one GPU, which streams the whole model (its own
   shard plus the shards it gathers from the other GPUs) once per token;
2. with tensor parallelism N, N requests keep all N GPUs busy, and a multiplier
   ``alpha`` of N requests fit before the GPUs saturate.

Segment AB: concurrency C <= alpha*N*replicas; every user gets the single-user
speed, per-GPU throughput grows linearly. Segment BC: beyond that, per-GPU
throughput is flat and per-user throughput falls as 1/C.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import checks
from .specs import GpuSpec, ModelSpec


def crude_single_user_tok_s(model: ModelSpec, gpu: GpuSpec, *, weight_dtype: str = "bf16") -> float:
    """Single-user decode speed if one GPU must stream all weights per token (assumption 1)."""
    return gpu.hbm_bandwidth_bytes_s / model.weight_bytes(weight_dtype)


def crude_curve(concurrency, tp: int, replicas: int, alpha: float, single_user_tok_s: float):
    """Per-GPU and per-user throughput (tok/s) of the crude model at each concurrency.

    Returns ``(tok_s_per_gpu, tok_s_per_user)`` as arrays shaped like ``concurrency``.
    """
    c = np.asarray(concurrency, dtype=float)
    if np.any(c < 1):
        raise ValueError("concurrency must be at least 1")
    if tp < 1 or replicas < 1:
        raise ValueError("tp and replicas must be at least 1")
    if not alpha > 0:
        raise ValueError(f"alpha must be positive, got {alpha!r}")
    if not single_user_tok_s > 0:
        raise ValueError(f"single_user_tok_s must be positive, got {single_user_tok_s!r}")
    gpus = tp * replicas
    knee = alpha * gpus  # point B: the concurrency at which the GPUs saturate
    busy = np.minimum(c, knee)
    output = busy * single_user_tok_s
    return output / gpus, output / c


def fit_alpha(concurrency, tok_s_per_gpu, tp, replicas, single_user_tok_s: float) -> float:
    """Least-squares alpha (on log per-GPU throughput) for one family of curves.

    ``tp`` and ``replicas`` are arrays aligned with ``concurrency``. The search is
    a dense grid over alpha in [0.05, 64], so the result is deterministic.
    """
    c = np.asarray(concurrency, float)
    y = np.asarray(tok_s_per_gpu, float)
    tp = np.asarray(tp, float)
    rep = np.asarray(replicas, float)
    if not (c.shape == y.shape == tp.shape == rep.shape) or c.size == 0:
        raise ValueError("concurrency, tok_s_per_gpu, tp and replicas must be non-empty and aligned")
    checks.positive("measured throughput", y)
    checks.positive("single_user_tok_s", single_user_tok_s)
    checks.whole("tp", tp, 1)
    checks.whole("replicas", rep, 1)
    checks.positive("concurrency", c)
    grid = np.exp(np.linspace(np.log(0.05), np.log(64.0), 4001))
    knees = grid[:, None] * tp[None, :] * rep[None, :]
    pred = np.minimum(c[None, :], knees) * single_user_tok_s / (tp * rep)[None, :]
    sse = ((np.log(pred) - np.log(y)[None, :]) ** 2).sum(axis=1)
    best = int(np.argmin(sse))
    if best in (0, grid.size - 1):
        raise ValueError(
            f"alpha hit the edge of its search grid ({grid[best]:.3g}); the data do not fit this model"
        )
    return float(grid[best])


# --- Applying the crude model to the measurement frame (chapter 02) --------


def _layout(row) -> tuple[int, int]:
    """GPUs of one replica and number of replicas as the crude model sees them.

    Aggregated rows use ``tp`` and ``replicas``. The crude model has no notion of
    prefill/decode disaggregation, so a disaggregated deployment is treated as one
    pool of ``num_gpus`` GPUs (one "replica" of width ``num_gpus``); since the crude
    model depends only on the total number of GPUs, this is the same as any split.
    """
    if row["kind"] == "aggregated":
        return int(row["tp"]), int(row["replicas"])
    return int(row["num_gpus"]), 1


def _per_family(value, family: str, what: str) -> float:
    if isinstance(value, dict):
        if family not in value:
            raise KeyError(f"no {what} for family {family!r}; given for {sorted(value)}")
        return float(value[family])
    return float(value)


def family_single_user_tok_s(df) -> dict[str, float]:
    """Measured single-user speed of each family: mean tok_s_per_user at concurrency 1."""
    one = df[df["concurrency"] == 1]
    missing = sorted(set(df["family"]) - set(one["family"]))
    if missing:
        raise ValueError(f"no concurrency-1 point for family(ies) {missing}")
    return {fam: float(g["tok_s_per_user"].mean()) for fam, g in one.groupby("family", sort=False)}


def fit_family_alphas(df, single_user) -> dict[str, float]:
    """Fit one alpha per family with :func:`fit_alpha` (see :func:`_layout` for P/D rows).

    ``single_user`` is one speed for all families or a mapping family -> speed.
    """
    out = {}
    for fam, g in df.groupby("family", sort=False):
        layout = np.array([_layout(r) for _, r in g.iterrows()], dtype=float)
        out[fam] = fit_alpha(
            g["concurrency"],
            g["tok_s_per_gpu"],
            layout[:, 0],
            layout[:, 1],
            _per_family(single_user, fam, "single-user speed"),
        )
    return out


def crude_predictions(df, alphas, single_user):
    """Crude-model throughput at every row of a measurement-like frame.

    ``df`` needs ``deployment``, ``family``, ``kind``, ``num_gpus``, ``tp``,
    ``replicas`` and ``concurrency``. ``alphas`` and ``single_user`` are a number or
    a mapping family -> number. Returns a frame with the same index holding
    ``deployment``, ``family``, ``concurrency``, ``pred_tok_s_per_gpu`` and
    ``pred_tok_s_per_user``.
    """
    gpu, user = [], []
    for _, r in df.iterrows():
        tp, replicas = _layout(r)
        g, u = crude_curve(
            float(r["concurrency"]),
            tp,
            replicas,
            _per_family(alphas, r["family"], "alpha"),
            _per_family(single_user, r["family"], "single-user speed"),
        )
        gpu.append(float(g))
        user.append(float(u))
    out = df[["deployment", "family", "concurrency"]].copy()
    out["pred_tok_s_per_gpu"] = gpu
    out["pred_tok_s_per_user"] = user
    return out


def crude_corners(df, alphas, single_user):
    """Points A, B and C of each deployment's crude curve, for drawing it exactly.

    In the per-user/per-GPU plane the crude curve is two straight segments, so
    it is drawn exactly by its ends and its knee: A at concurrency 1, B at the
    knee ``alpha * GPUs`` (clipped to the measured range) and C at the largest
    measured concurrency. Returns :func:`crude_predictions` of those points.
    """
    rows = []
    for _, g in df.groupby("deployment", sort=False):
        first = g.iloc[0]
        tp, replicas = _layout(first)
        lo, hi = float(g["concurrency"].min()), float(g["concurrency"].max())
        knee = _per_family(alphas, first["family"], "alpha") * tp * replicas
        for c in (lo, min(max(knee, lo), hi), hi):
            rows.append({**first.to_dict(), "concurrency": c})
    grid = pd.DataFrame(rows).drop_duplicates(["deployment", "concurrency"]).reset_index(drop=True)
    return crude_predictions(grid, alphas, single_user)
