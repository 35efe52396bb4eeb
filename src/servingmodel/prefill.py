"""Prefill: FLOPs of the prompt, chunked prefill, and the share of GPU time it takes (chapter 05).

A 10000-token prompt costs about 2 x params x 10000 FLOPs in the linear layers
plus the causal attention; it is compute-bound. vLLM splits it into chunks of
at most ``max_num_batched_tokens`` tokens that ride along with decode steps.
"""

from __future__ import annotations

import numpy as np

from .roofline import _check_eff, linear_flops_per_token
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
    return o * (linear_flops_per_token(model) + 4.0 * model.num_layers * model.num_heads * model.head_dim * mean_ctx)


def prefill_compute_time_s(model: ModelSpec, gpu: GpuSpec, tp, isl, compute_efficiency: float,
                           compute_dtype: str = "bf16"):
    """Time of the prefill FLOPs split over ``tp`` GPUs at the given model-FLOPs utilisation."""
    _check_eff("compute_efficiency", compute_efficiency)
    return prefill_flops(model, isl) / (np.asarray(tp, float) * gpu.flops(compute_dtype) * compute_efficiency)


def prefill_chunks(isl, max_num_batched_tokens: int):
    """Number of engine steps a prompt needs when at most ``max_num_batched_tokens`` are batched per step."""
    if max_num_batched_tokens < 1:
        raise ValueError("max_num_batched_tokens must be at least 1")
    return np.ceil(np.asarray(isl, float) / max_num_batched_tokens)


def prefill_time_share(batch, prefill_s, decode_step_s, osl):
    """Fraction of an instance's time spent on prefill when ``batch`` requests cycle through it.

    Over one request lifetime the instance runs ``batch`` prefills and
    ``osl - 1`` decode steps: share = B t_pf / (B t_pf + (OSL - 1) t_dec).
    """
    b = np.asarray(batch, float)
    pf = b * np.asarray(prefill_s, float)
    return pf / (pf + (osl - 1) * np.asarray(decode_step_s, float))


def compute_bound_ceiling_tok_s_per_gpu(model: ModelSpec, gpu: GpuSpec, isl, osl, compute_efficiency: float,
                                        compute_dtype: str = "bf16"):
    """Output tok/s/GPU if every FLOP of prefill and decode ran at the given efficiency (no memory limit)."""
    _check_eff("compute_efficiency", compute_efficiency)
    total = prefill_flops(model, isl) + decode_flops_per_request(model, isl, osl)
    return np.asarray(osl, float) * gpu.flops(compute_dtype) * compute_efficiency / total
