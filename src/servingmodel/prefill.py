"""Prefill: FLOPs of the prompt, chunked prefill, and the share of GPU time it takes (chapter 05).

A 10000-token prompt costs about 2 x params x 10000 FLOPs in the linear layers
plus the causal attention; it is compute-bound. vLLM splits it into chunks of
at most ``max_num_batched_tokens`` tokens that ride along with decode steps.
"""

from __future__ import annotations

import numpy as np

from . import checks
from .roofline import decode_flops_per_token, linear_flops_per_token
from .specs import GpuSpec, ModelSpec


def prefill_flops(model: ModelSpec, isl):
    """FLOPs of one prefill of ``isl`` tokens: linear layers plus causal attention (QK^T and PV)."""
    s = np.asarray(isl, float)
    if np.any(s < 1):
        raise ValueError(f"isl must be at least 1, got {isl!r}")
    attention = 2.0 * model.num_layers * model.num_heads * model.head_dim * s**2
    return linear_flops_per_token(model) * s + attention


def decode_flops_per_request(model: ModelSpec, isl, osl):
    """FLOPs of all decode steps of one request (linear layers plus attention over the growing context)."""
    s, o = np.asarray(isl, float), np.asarray(osl, float)
    mean_ctx = s + o / 2.0
    return o * decode_flops_per_token(model, mean_ctx)


def prefill_compute_time_s(
    model: ModelSpec, gpu: GpuSpec, tp, isl, *, compute_efficiency: float, compute_dtype: str = "bf16"
):
    """Time of the prefill FLOPs split over ``tp`` GPUs at the given model-FLOPs utilisation."""
    checks.fraction("compute_efficiency", compute_efficiency)
    return prefill_flops(model, isl) / (np.asarray(tp, float) * gpu.flops(compute_dtype) * compute_efficiency)


def prefill_chunks(isl, max_num_batched_tokens: int):
    """Number of engine steps a prompt needs when at most ``max_num_batched_tokens`` are batched per step."""
    budget = checks.whole("max_num_batched_tokens", max_num_batched_tokens, 1)
    return np.ceil(checks.nonnegative("isl", isl) / budget)


def prefill_time_share(batch, prefill_s, decode_step_s, osl):
    """Fraction of an instance's time spent on prefill when ``batch`` requests cycle through it.

    Over one request lifetime the instance runs ``batch`` prefills and
    ``osl - 1`` decode steps: share = B t_pf / (B t_pf + (OSL - 1) t_dec).
    """
    if osl < 2:
        raise ValueError(f"osl must be at least 2, got {osl!r}")
    pf = checks.nonnegative("batch", batch) * checks.nonnegative("prefill_s", prefill_s)
    return pf / (pf + (osl - 1) * checks.positive("decode_step_s", decode_step_s))


def compute_bound_ceiling_tok_s_per_gpu(
    model: ModelSpec, gpu: GpuSpec, isl, osl, *, compute_efficiency: float, compute_dtype: str = "bf16"
):
    """Output tok/s/GPU if every FLOP of prefill and decode ran at the given efficiency (no memory limit)."""
    checks.fraction("compute_efficiency", compute_efficiency)
    total = prefill_flops(model, isl) + decode_flops_per_request(model, isl, osl)
    return np.asarray(osl, float) * gpu.flops(compute_dtype) * compute_efficiency / total


def prefill_decode_flops_ratio(model: ModelSpec, isl, osl):
    """How many times the FLOPs of a request's whole decode its prefill costs (hypothesis H2, chapter 05)."""
    o = np.asarray(osl, float)
    if np.any(o < 1):
        raise ValueError(f"osl must be at least 1, got {osl!r}")
    return prefill_flops(model, isl) / decode_flops_per_request(model, isl, osl)


def implied_compute_efficiency(
    model: ModelSpec, gpu: GpuSpec, tp, isl, prefill_s, *, compute_dtype: str = "bf16"
):
    """Model-FLOPs utilisation at which the prefill of ``isl`` tokens on ``tp`` GPUs takes ``prefill_s``."""
    t = np.asarray(prefill_s, float)
    if np.any(~(t > 0)):
        raise ValueError(f"prefill_s must be positive, got {prefill_s!r}")
    n = np.asarray(tp, float)
    if np.any(n < 1):
        raise ValueError(f"tp must be at least 1, got {tp!r}")
    return prefill_flops(model, isl) / (n * gpu.flops(compute_dtype) * t)


def interference_tpot_s(batch, decode_step_s, prefill_s, osl):
    """TPOT with chunked prefill: each request's decode waits for the other B - 1 prompts' prefill chunks.

    Over a request's OSL - 1 decode steps the instance also prefills the
    B - 1 requests that replace finished ones: TPOT = t_dec + (B - 1) t_pf / (OSL - 1).
    """
    b = np.asarray(batch, float)
    if np.any(b < 1):
        raise ValueError(f"batch must be at least 1, got {batch!r}")
    if np.any(np.asarray(osl, float) < 2):
        raise ValueError(f"osl must be at least 2, got {osl!r}")
    return np.asarray(decode_step_s, float) + (b - 1.0) * np.asarray(prefill_s, float) / (
        np.asarray(osl, float) - 1.0
    )
