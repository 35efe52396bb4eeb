"""A decode step is a memory read (chapter 03).

One decode step at tensor parallelism N and batch B reads every GPU's weight
shard once and the KV cache of every request in the batch, and does
2 x params x B FLOPs split over N GPUs. Its time is the larger of the memory
time and the compute time (a roofline), plus a fixed per-step overhead.
Functions accept numpy arrays for batch and context so sweeps are vectorised.
"""

from __future__ import annotations

import numpy as np

from . import checks
from .specs import GpuSpec, ModelSpec, check_tp, compute_dtype, dtype_bytes


def weight_bytes_per_gpu(model: ModelSpec, tp, *, weight_dtype: str = "bf16"):
    """Bytes of weights each GPU stores and reads once per step (weights split evenly)."""
    check_tp(model, tp)
    return model.weight_bytes(weight_dtype) / np.asarray(tp, float)


def kv_bytes_per_token_per_gpu(model: ModelSpec, tp, *, kv_dtype: str = "bf16"):
    """KV-cache bytes one token occupies on each GPU (KV heads split, replicated beyond num_kv_heads)."""
    check_tp(model, tp)
    heads_per_gpu = np.maximum(model.num_kv_heads / np.asarray(tp, float), 1.0)
    return 2 * model.num_layers * heads_per_gpu * model.head_dim * dtype_bytes(kv_dtype)


def linear_flops_per_token(model: ModelSpec):
    """FLOPs of the matrix multiplications for one token (2 x params, embedding lookup excluded)."""
    return 2.0 * (model.num_params - model.embedding_params())


def attention_flops_per_context_token(model: ModelSpec) -> float:
    """Decode-attention FLOPs of one token per context token it attends to: 4 x layers x heads x head_dim
    (QK^T and AV, a multiply and an add each)."""
    return 4.0 * model.num_layers * model.num_heads * model.head_dim


def decode_flops_per_token(model: ModelSpec, context_tokens):
    """FLOPs of one decode token over ``context_tokens`` of context: linear layers plus attention."""
    return linear_flops_per_token(model) + attention_flops_per_context_token(model) * np.asarray(
        context_tokens, float
    )


def decode_memory_time_s(
    model: ModelSpec,
    gpu: GpuSpec,
    tp,
    batch,
    context_tokens,
    *,
    bandwidth_efficiency: float,
    weight_dtype: str = "bf16",
    kv_dtype: str = "bf16",
    kv_bandwidth_efficiency: float | None = None,
):
    """Time to read the weight shard and the batch's KV cache from HBM.

    The weights stream through the matrix multiplications at
    ``bandwidth_efficiency`` of peak; the KV cache is read by the attention
    kernel, at ``kv_bandwidth_efficiency`` (the same unless given; chapter 09
    separates the two).
    """
    checks.fraction("bandwidth_efficiency", bandwidth_efficiency)
    kv_eff = bandwidth_efficiency if kv_bandwidth_efficiency is None else kv_bandwidth_efficiency
    checks.fraction("kv_bandwidth_efficiency", kv_eff)
    b = checks.nonnegative("batch", batch)
    kv_bytes = (
        b
        * checks.nonnegative("context_tokens", context_tokens)
        * kv_bytes_per_token_per_gpu(model, tp, kv_dtype=kv_dtype)
    )
    return (
        weight_bytes_per_gpu(model, tp, weight_dtype=weight_dtype) / bandwidth_efficiency + kv_bytes / kv_eff
    ) / gpu.hbm_bandwidth_bytes_s


def decode_compute_time_s(
    model: ModelSpec,
    gpu: GpuSpec,
    tp,
    batch,
    context_tokens,
    *,
    compute_efficiency: float,
    compute_dtype: str = "bf16",
):
    """Time of the decode FLOPs: linear layers plus attention over the context."""
    checks.fraction("compute_efficiency", compute_efficiency)
    b = checks.nonnegative("batch", batch)
    flops = b * decode_flops_per_token(model, checks.nonnegative("context_tokens", context_tokens))
    return flops / (np.asarray(tp, float) * gpu.flops(compute_dtype) * compute_efficiency)


def decode_step_time_s(
    model: ModelSpec,
    gpu: GpuSpec,
    tp,
    batch,
    context_tokens,
    *,
    bandwidth_efficiency: float,
    compute_efficiency: float,
    step_overhead_s: float = 0.0,
    weight_dtype: str = "bf16",
    kv_dtype: str = "bf16",
    kv_bandwidth_efficiency: float | None = None,
):
    """Roofline time of one decode step: overhead + max(memory time, compute time)."""
    checks.nonnegative("step_overhead_s", step_overhead_s)
    b = np.asarray(batch, float)
    if not np.all(np.isfinite(b) & (b >= 1)):
        raise ValueError(f"batch must be at least 1 and finite, got {batch!r}")
    mem = decode_memory_time_s(
        model,
        gpu,
        tp,
        b,
        context_tokens,
        bandwidth_efficiency=bandwidth_efficiency,
        weight_dtype=weight_dtype,
        kv_dtype=kv_dtype,
        kv_bandwidth_efficiency=kv_bandwidth_efficiency,
    )
    comp = decode_compute_time_s(
        model,
        gpu,
        tp,
        b,
        context_tokens,
        compute_efficiency=compute_efficiency,
        compute_dtype=compute_dtype(weight_dtype),
    )
    return step_overhead_s + np.maximum(mem, comp)


def arithmetic_intensity(
    model: ModelSpec, tp, batch, context_tokens, *, weight_dtype: str = "bf16", kv_dtype: str = "bf16"
):
    """FLOPs per byte read in one decode step on one GPU."""
    b = np.asarray(batch, float)
    flops = b * decode_flops_per_token(model, context_tokens) / np.asarray(tp, float)
    bytes_read = weight_bytes_per_gpu(model, tp, weight_dtype=weight_dtype) + b * np.asarray(
        context_tokens, float
    ) * kv_bytes_per_token_per_gpu(model, tp, kv_dtype=kv_dtype)
    return flops / bytes_read


def ridge_point(
    gpu: GpuSpec,
    *,
    weight_dtype: str = "bf16",
    compute_efficiency: float = 1.0,
    bandwidth_efficiency: float = 1.0,
) -> float:
    """FLOPs per byte at which a kernel turns compute-bound: achieved FLOP/s over achieved bytes/s (peaks by
    default).
    """
    checks.fraction("compute_efficiency", compute_efficiency)
    checks.fraction("bandwidth_efficiency", bandwidth_efficiency)
    flops = gpu.flops(compute_dtype(weight_dtype))
    return float(compute_efficiency * flops / (bandwidth_efficiency * gpu.hbm_bandwidth_bytes_s))


def critical_batch(
    model: ModelSpec,
    gpu: GpuSpec,
    context_tokens: float = 0.0,
    *,
    weight_dtype: str = "bf16",
    kv_dtype: str = "bf16",
    max_batch: int = 100_000,
) -> float:
    """Smallest batch at which a decode step becomes compute-bound (peak FLOPs vs peak bandwidth).

    Returns ``inf`` when even an unbounded batch stays below the ridge point
    (the KV reads grow as fast as the FLOPs at this context length), and
    raises if the crossing lies beyond ``max_batch``.
    """
    ctx = float(checks.nonnegative("context_tokens", context_tokens))
    ridge = ridge_point(gpu, weight_dtype=weight_dtype)
    b = np.arange(1, max_batch + 1, dtype=float)
    ai = arithmetic_intensity(model, 1, b, ctx, weight_dtype=weight_dtype, kv_dtype=kv_dtype)
    hit = np.flatnonzero(ai >= ridge)
    if hit.size:
        return float(b[hit[0]])
    # the intensity rises with the batch towards FLOPs / KV bytes of one request
    kv = ctx * kv_bytes_per_token_per_gpu(model, 1, kv_dtype=kv_dtype)
    limit = np.inf if kv == 0 else float(decode_flops_per_token(model, ctx)) / kv
    if limit <= ridge:
        return float("inf")
    raise ValueError(f"decode becomes compute-bound beyond max_batch={max_batch}; raise max_batch")


def per_user_tok_s(ttft_s, tpot_s, osl: int):
    """Per-user throughput as the benchmark defines it: OSL / (TTFT + (OSL - 1) x TPOT)."""
    return osl / (np.asarray(ttft_s, float) + (osl - 1) * np.asarray(tpot_s, float))


def decode_time_terms_s(
    model: ModelSpec,
    gpu: GpuSpec,
    tp,
    batch,
    context_tokens,
    *,
    bandwidth_efficiency: float,
    compute_efficiency: float,
    step_overhead_s: float = 0.0,
    weight_dtype: str = "bf16",
    kv_dtype: str = "bf16",
    kv_bandwidth_efficiency: float | None = None,
) -> dict:
    """The parts of one decode step (chapter 03), each in seconds.

    ``weights_s`` and ``kv_s`` are the two HBM reads (``memory_s`` is their
    sum), ``compute_s`` the FLOP time, ``overhead_s`` the fixed per-step time
    and ``step_s`` their roofline combination, equal to :func:`decode_step_time_s`.
    """
    step = decode_step_time_s(
        model,
        gpu,
        tp,
        batch,
        context_tokens,
        bandwidth_efficiency=bandwidth_efficiency,
        compute_efficiency=compute_efficiency,
        step_overhead_s=step_overhead_s,
        weight_dtype=weight_dtype,
        kv_dtype=kv_dtype,
        kv_bandwidth_efficiency=kv_bandwidth_efficiency,
    )
    kv_eff = bandwidth_efficiency if kv_bandwidth_efficiency is None else kv_bandwidth_efficiency
    weights = weight_bytes_per_gpu(model, tp, weight_dtype=weight_dtype) / (
        gpu.hbm_bandwidth_bytes_s * bandwidth_efficiency
    )
    kv = (
        np.asarray(batch, float)
        * np.asarray(context_tokens, float)
        * kv_bytes_per_token_per_gpu(model, tp, kv_dtype=kv_dtype)
        / (gpu.hbm_bandwidth_bytes_s * kv_eff)
    )
    comp = decode_compute_time_s(
        model,
        gpu,
        tp,
        batch,
        context_tokens,
        compute_efficiency=compute_efficiency,
        compute_dtype=compute_dtype(weight_dtype),
    )
    return {
        "weights_s": weights,
        "kv_s": kv,
        "memory_s": weights + kv,
        "compute_s": comp,
        "overhead_s": step_overhead_s,
        "step_s": step,
    }


def asymptotic_intensity(model: ModelSpec, context_tokens, *, kv_dtype: str = "bf16"):
    """Arithmetic intensity of a decode step as the batch grows without bound (chapter 03).

    Once the KV reads of the batch dwarf the weight read, every request adds
    its FLOPs and its KV bytes in a fixed ratio:
    (2 x params + 4 x layers x heads x head_dim x context) / (context x KV bytes per token).
    Infinite at zero context (weights only, which the batch shares).
    """
    c = np.asarray(context_tokens, float)
    if np.any(c < 0):
        raise ValueError(f"context_tokens must be non-negative, got {context_tokens!r}")
    flops = decode_flops_per_token(model, c)
    with np.errstate(divide="ignore"):
        return flops / (c * model.kv_bytes_per_token(kv_dtype))


def critical_context_tokens(
    model: ModelSpec, gpu: GpuSpec, *, weight_dtype: str = "bf16", kv_dtype: str = "bf16"
) -> float:
    """Context length beyond which no batch makes a decode step compute-bound (chapter 03).

    Solves :func:`asymptotic_intensity` = peak FLOPs / peak bandwidth for the
    context. ``inf`` when attention alone is intense enough that long contexts
    never keep decode memory-bound.
    """
    ridge = ridge_point(gpu, weight_dtype=weight_dtype)
    denom = ridge * model.kv_bytes_per_token(kv_dtype) - attention_flops_per_context_token(model)
    return float(linear_flops_per_token(model) / denom) if denom > 0 else float("inf")


def implied_tpot_s(per_user_tok_s, ttft_s, osl: int):
    """Time per output token implied by a measured per-user throughput and TTFT (inverse of
    :func:`per_user_tok_s`).
    """
    if osl < 2:
        raise ValueError(f"osl must be at least 2, got {osl!r}")
    u = checks.positive("per-user throughput", per_user_tok_s)
    t = checks.nonnegative("TTFT", ttft_s)
    decode = osl / u - t
    if np.any(decode <= 0):
        raise ValueError("TTFT is longer than the whole request implied by the per-user throughput")
    return decode / (osl - 1)
