"""How many requests fit: KV-cache capacity of one vLLM instance (chapter 04).

vLLM claims ``gpu_memory_utilization`` of each GPU's memory, loads the weight
shard, keeps a reserve for activations, CUDA graphs and non-torch buffers, and
gives the rest to the paged KV cache. Every token of every running request
occupies ``kv_bytes_per_token_per_gpu`` on each GPU of the instance.
"""

from __future__ import annotations

import numpy as np

from . import checks
from .roofline import kv_bytes_per_token_per_gpu, weight_bytes_per_gpu
from .specs import GpuSpec, ModelSpec


class InsufficientMemoryError(ValueError):
    """A deployment whose GPUs cannot hold the weights, or not even one request's KV cache."""


def kv_budget_bytes_per_gpu(
    model: ModelSpec,
    gpu: GpuSpec,
    tp,
    *,
    gpu_memory_utilization: float,
    memory_reserve_bytes: float,
    weight_dtype: str = "bf16",
):
    """Bytes left for the KV cache on each GPU (negative when the weights and reserve do not fit)."""
    util = np.asarray(gpu_memory_utilization, float)
    if np.any(~((util > 0) & (util <= 1))):
        raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization!r}")
    checks.nonnegative("memory_reserve_bytes", memory_reserve_bytes)
    return (
        gpu.memory_bytes * util
        - weight_bytes_per_gpu(model, tp, weight_dtype=weight_dtype)
        - memory_reserve_bytes
    )


def kv_capacity_tokens(
    model: ModelSpec,
    gpu: GpuSpec,
    tp,
    *,
    gpu_memory_utilization: float,
    memory_reserve_bytes: float,
    weight_dtype: str = "bf16",
    kv_dtype: str = "bf16",
):
    """Tokens of KV cache one instance holds.

    Zero, not negative, where the weights and reserve leave nothing: a cache
    cannot hold fewer than no tokens. Callers that must refuse such a
    deployment use :func:`check_deployment_fits`; the vectorised sweeps flag it.
    """
    budget = kv_budget_bytes_per_gpu(
        model,
        gpu,
        tp,
        gpu_memory_utilization=gpu_memory_utilization,
        memory_reserve_bytes=memory_reserve_bytes,
        weight_dtype=weight_dtype,
    )
    return np.maximum(budget, 0.0) / kv_bytes_per_token_per_gpu(model, tp, kv_dtype=kv_dtype)


def mean_context_tokens(isl, osl):
    """Average context a running request holds: the prompt plus half the output."""
    return checks.positive("isl", isl) + checks.positive("osl", osl) / 2.0


def max_batch(capacity_tokens, isl, osl):
    """Requests the KV cache holds at once on average (capacity over the mean context)."""
    return np.asarray(capacity_tokens, float) / mean_context_tokens(isl, osl)


def full_requests_that_fit(capacity_tokens, isl, osl):
    """Whole requests that fit at their final length (isl + osl tokens each)."""
    return np.floor(np.asarray(capacity_tokens, float) / (np.asarray(isl, float) + np.asarray(osl, float)))


def check_deployment_fits(
    model: ModelSpec,
    gpu: GpuSpec,
    tp: int,
    isl: int,
    osl: int,
    *,
    gpu_memory_utilization: float,
    memory_reserve_bytes: float,
    weight_dtype: str = "bf16",
    kv_dtype: str = "bf16",
) -> float:
    """Return the KV capacity in tokens, or raise :class:`InsufficientMemoryError` saying what does not
    fit.
    """
    memory = dict(gpu_memory_utilization=gpu_memory_utilization, memory_reserve_bytes=memory_reserve_bytes)
    budget = float(kv_budget_bytes_per_gpu(model, gpu, tp, **memory, weight_dtype=weight_dtype))
    w = float(weight_bytes_per_gpu(model, tp, weight_dtype=weight_dtype))
    if budget <= 0:
        raise InsufficientMemoryError(
            f"{model.name} at TP{tp} ({weight_dtype}) does not fit on {gpu.name}: weights need "
            f"{w / 2**30:.1f} GiB per GPU, {gpu_memory_utilization:.2f} x {gpu.memory_bytes / 2**30:.1f} GiB "
            f"minus a {memory_reserve_bytes / 2**30:.1f} GiB reserve leaves {budget / 2**30:.1f} GiB for the "
            "KV cache"
        )
    cap = float(kv_capacity_tokens(model, gpu, tp, **memory, weight_dtype=weight_dtype, kv_dtype=kv_dtype))
    if cap < isl + osl:
        raise InsufficientMemoryError(short_of_tokens(model, gpu, tp, cap, isl + osl))
    return cap


def utilization_needed(
    model: ModelSpec,
    gpu: GpuSpec,
    tp,
    *,
    request_tokens,
    memory_reserve_bytes: float,
    weight_dtype: str = "bf16",
    kv_dtype: str = "bf16",
):
    """The ``gpu_memory_utilization`` at which one instance holds one request of ``request_tokens``:
    (weight shard + reserve + the request's KV cache) / the GPU's memory. Above 1, no utilisation does."""
    kv = np.asarray(request_tokens, float) * kv_bytes_per_token_per_gpu(model, tp, kv_dtype=kv_dtype)
    need = weight_bytes_per_gpu(model, tp, weight_dtype=weight_dtype) + memory_reserve_bytes + kv
    return need / gpu.memory_bytes


def short_of_tokens(
    model: ModelSpec, gpu: GpuSpec, tp: int, capacity_tokens: float, request_tokens: int
) -> str:
    """The message for an instance whose KV cache holds fewer tokens than one request needs."""
    return (
        f"{model.name} at TP{tp} on {gpu.name} holds {capacity_tokens:.0f} KV tokens, fewer than one request "
        f"of {request_tokens} tokens"
    )


def derived_alpha(max_batch_requests, tp):
    """The crude model's alpha implied by KV capacity (chapter 04): alpha x N = the batch that fits."""
    b = np.asarray(max_batch_requests, float)
    t = np.asarray(tp, float)
    if np.any(b < 0) or np.any(t < 1):
        raise ValueError("max_batch must be non-negative and tp at least 1")
    return b / t
