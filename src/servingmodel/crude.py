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

from .specs import GpuSpec, ModelSpec


def crude_single_user_tok_s(gpu: GpuSpec, model: ModelSpec, weight_dtype: str = "bf16") -> float:
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
    if np.any(y <= 0):
        raise ValueError("measured throughput must be positive")
    grid = np.exp(np.linspace(np.log(0.05), np.log(64.0), 4001))
    knees = grid[:, None] * tp[None, :] * rep[None, :]
    pred = np.minimum(c[None, :], knees) * single_user_tok_s / (tp * rep)[None, :]
    sse = ((np.log(pred) - np.log(y)[None, :]) ** 2).sum(axis=1)
    return float(grid[int(np.argmin(sse))])
