"""What tensor parallelism costs: all-reduce communication (chapter 06).

vLLM's Megatron-style layers (column-parallel then row-parallel) need two
all-reduces of the activations per layer, one after attention and one after
the MLP. An alpha-beta model prices each: a latency log2(N) x ``latency_s``
(the round count of a tree or recursive-doubling all-reduce, one at TP2), plus
the ring all-reduce's 2(N-1)/N x message bytes over the achieved link bandwidth.
The log2(N) is an empirical form for how the fixed cost grows with N, not
vLLM's algorithm: for decode-sized messages vLLM's own all-reduce is a one-shot
or two-shot kernel whose latency is a barrier across the N GPUs plus the peer
reads (chapter 06).
"""

from __future__ import annotations

import numpy as np

from . import checks
from .roofline import weight_bytes_per_gpu
from .specs import GpuSpec, ModelSpec, dtype_bytes

ACTIVATION_BYTES = dtype_bytes("bf16")  # activations are all-reduced in bf16


def latency_rounds(tp):
    """Latency units an all-reduce pays: log2(N), the rounds of a tree all-reduce (1 at TP2, 3 at TP8, 0 at
    TP1).
    """
    n = np.asarray(tp, float)
    if np.any(n < 1):
        raise ValueError(f"tp must be at least 1, got {tp!r}")
    return np.log2(n)


def allreduce_time_s(gpu: GpuSpec, tp, message_bytes, *, latency_s: float, link_efficiency: float):
    """Time of one all-reduce of ``message_bytes`` among ``tp`` GPUs (zero for tp = 1).

    ``latency_s`` is the latency of one round; the call pays log2(tp) rounds.
    """
    checks.fraction("link_efficiency", link_efficiency)
    checks.nonnegative("latency_s", latency_s)
    n = checks.whole("tp", tp, 1)
    m = checks.nonnegative("message_bytes", message_bytes)
    t = latency_s * latency_rounds(n) + 2.0 * (n - 1.0) / n * m / (gpu.link_bytes_s * link_efficiency)
    return np.where(n > 1, t, 0.0)


def allreduces_per_step(model: ModelSpec) -> int:
    """Two all-reduces per transformer layer (after attention and after the MLP)."""
    return 2 * model.num_layers


def decode_comm_time_s(
    model: ModelSpec, gpu: GpuSpec, tp, batch, *, latency_s: float, link_efficiency: float
):
    """All-reduce time of one decode step: messages of batch x hidden activations."""
    msg = np.asarray(batch, float) * model.hidden_size * ACTIVATION_BYTES
    return allreduces_per_step(model) * allreduce_time_s(
        gpu, tp, msg, latency_s=latency_s, link_efficiency=link_efficiency
    )


def prefill_comm_time_s(
    model: ModelSpec,
    gpu: GpuSpec,
    tp,
    isl,
    *,
    max_num_batched_tokens: int,
    latency_s: float,
    link_efficiency: float,
):
    """All-reduce time of one chunked prefill: every chunk pays the latencies, all tokens pay the bytes."""
    checks.fraction("link_efficiency", link_efficiency)
    checks.nonnegative("latency_s", latency_s)
    s = checks.nonnegative("isl", isl)
    chunks = np.ceil(s / checks.whole("max_num_batched_tokens", max_num_batched_tokens, 1))
    n = checks.whole("tp", tp, 1)
    lat = chunks * latency_s * latency_rounds(n)
    bw = 2.0 * (n - 1.0) / n * s * model.hidden_size * ACTIVATION_BYTES / (gpu.link_bytes_s * link_efficiency)
    return np.where(n > 1, allreduces_per_step(model) * (lat + bw), 0.0)


def bytes_per_token_allgather_weights(model: ModelSpec, tp, *, weight_dtype: str = "bf16"):
    """Bytes one GPU would receive per token if it gathered the other shards (the crude model's scheme)."""
    n = np.asarray(tp, float)
    return weight_bytes_per_gpu(model, tp, weight_dtype=weight_dtype) * (n - 1.0)


def bytes_per_token_allreduce(model: ModelSpec, tp):
    """Bytes one GPU sends per token with two ring all-reduces of the activations per layer."""
    n = np.asarray(tp, float)
    return allreduces_per_step(model) * 2.0 * (n - 1.0) / n * model.hidden_size * ACTIVATION_BYTES


def allreduce_message_bytes(model: ModelSpec, tokens):
    """Bytes of one all-reduce message: the hidden-state activations of ``tokens`` tokens in bf16."""
    t = np.asarray(tokens, float)
    if np.any(t < 0):
        raise ValueError(f"tokens must be non-negative, got {tokens!r}")
    return t * model.hidden_size * ACTIVATION_BYTES


def allreduce_time_terms_s(
    gpu: GpuSpec, tp, message_bytes, *, latency_s: float, link_efficiency: float
) -> dict:
    """The two parts of :func:`allreduce_time_s`: the latency of its log2(N) rounds and the ring's
    ``bandwidth_s``.
    """
    total = allreduce_time_s(gpu, tp, message_bytes, latency_s=latency_s, link_efficiency=link_efficiency)
    n = np.asarray(tp, float)
    lat = np.where(n > 1, latency_s * latency_rounds(n), 0.0) + np.zeros_like(total)
    return {"latency_s": lat, "bandwidth_s": total - lat, "total_s": total}


def latency_bandwidth_crossover_bytes(gpu: GpuSpec, tp, *, latency_s: float, link_efficiency: float):
    """Message size at which the ring's bandwidth term equals the call's latency (infinite for tp = 1).

    Smaller messages are latency-bound (decode), larger ones bandwidth-bound (prefill chunks).
    """
    checks.fraction("link_efficiency", link_efficiency)
    if latency_s < 0:
        raise ValueError(f"latency_s must be non-negative, got {latency_s!r}")
    n = np.asarray(tp, float)
    if np.any(n < 1):
        raise ValueError(f"tp must be at least 1, got {tp!r}")
    with np.errstate(divide="ignore"):
        return np.where(
            n > 1,
            latency_s
            * latency_rounds(n)
            * gpu.link_bytes_s
            * link_efficiency
            * n
            / (2.0 * np.maximum(n - 1.0, 1e-300)),
            np.inf,
        )
