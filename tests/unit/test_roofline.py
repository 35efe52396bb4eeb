"""The decode roofline (chapter 03): hand-computed values for Llama-3.1-70B on
H100, refusal of non-physical inputs, and the bandwidth bound as a property of
the composed model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servingmodel import fullmodel, queueing, roofline
from servingmodel.layout import Layout
from servingmodel.setup import LADDER_FEATURES, ModelParams, Setup
from servingmodel.specs import GpuSpec, SpecError, get_gpu, get_model, get_profile

MODEL = get_model("Llama-3.1-70B")
GPU = get_gpu("H100-SXM")
BW = 3.35e12
PEAK = 989e12
PARAMS = 70.55e9
EMBED = 128256 * 8192
LINEAR = 2 * (PARAMS - EMBED)
ATTN_PER_CTX = 4 * 80 * 64 * 128  # decode attention FLOPs per token of context
KV_PER_TOKEN = 2 * 80 * 8 * 128 * 2  # bytes, whole model
FEW = settings(max_examples=50, deadline=None)


# --- sizes ----------------------------------------------------------------


@pytest.mark.parametrize("tp", [1, 2, 4, 8])
def test_weight_bytes_per_gpu_is_the_bf16_model_split_evenly(tp):
    assert roofline.weight_bytes_per_gpu(MODEL, tp) == pytest.approx(PARAMS * 2 / tp)


def test_weight_bytes_per_gpu_tp4_hand_value_and_fp8_halves_it():
    assert roofline.weight_bytes_per_gpu(MODEL, 4) == pytest.approx(35.275e9)
    assert roofline.weight_bytes_per_gpu(MODEL, 4, weight_dtype="fp8") == pytest.approx(35.275e9 / 2)


@pytest.mark.parametrize(
    "tp, expected", [(1, 327_680), (2, 163_840), (4, 81_920), (8, 40_960), (16, 40_960), (64, 40_960)]
)
def test_kv_bytes_per_token_per_gpu_splits_kv_heads_then_replicates(tp, expected):
    # Beyond 8 GPUs the 8 KV heads are replicated: each GPU keeps one head.
    assert roofline.kv_bytes_per_token_per_gpu(MODEL, tp) == pytest.approx(expected)


def test_kv_bytes_fp8_halves_and_array_tp_is_vectorised():
    assert roofline.kv_bytes_per_token_per_gpu(MODEL, 8, kv_dtype="fp8") == pytest.approx(20_480)
    np.testing.assert_allclose(
        roofline.kv_bytes_per_token_per_gpu(MODEL, np.array([2, 4, 8])), [163_840, 81_920, 40_960]
    )


@pytest.mark.parametrize("tp", [0, -2, 3, 2.5, 128])
def test_tp_must_be_a_whole_divisor_of_the_heads(tp):
    with pytest.raises(ValueError, match="tensor-parallel size"):
        roofline.weight_bytes_per_gpu(MODEL, tp)


def test_linear_flops_per_token_excludes_the_embedding_lookup():
    assert roofline.linear_flops_per_token(MODEL) == pytest.approx(LINEAR)
    assert roofline.linear_flops_per_token(MODEL) == pytest.approx(138.9987e9, rel=1e-6)


# --- times ----------------------------------------------------------------


def test_decode_memory_time_tp4_one_request_at_10500_tokens():
    expected = (35.275e9 + 10_500 * 81_920) / (BW * 0.8)
    got = roofline.decode_memory_time_s(MODEL, GPU, 4, 1, 10_500, bandwidth_efficiency=0.8)
    assert got == pytest.approx(expected)
    assert got == pytest.approx(13.4833e-3, rel=1e-4)


def test_decode_memory_time_batch_zero_is_the_weight_read():
    assert roofline.decode_memory_time_s(MODEL, GPU, 2, 0, 10_500, bandwidth_efficiency=1.0) == pytest.approx(
        70.55e9 / BW
    )


def test_decode_compute_time_hand_value():
    expected = 32 * (LINEAR + ATTN_PER_CTX * 10_500) / (8 * PEAK * 0.5)
    assert roofline.decode_compute_time_s(MODEL, GPU, 8, 32, 10_500, compute_efficiency=0.5) == pytest.approx(
        expected
    )


def test_decode_step_is_overhead_plus_the_larger_of_memory_and_compute():
    kw = dict(bandwidth_efficiency=0.8, compute_efficiency=0.5)
    mem = roofline.decode_memory_time_s(MODEL, GPU, 4, 16, 10_500, bandwidth_efficiency=0.8)
    comp = roofline.decode_compute_time_s(MODEL, GPU, 4, 16, 10_500, compute_efficiency=0.5)
    assert mem > comp  # long contexts keep decode memory-bound
    assert roofline.decode_step_time_s(
        MODEL, GPU, 4, 16, 10_500, step_overhead_s=0.002, **kw
    ) == pytest.approx(0.002 + mem)
    # at zero context and a huge batch the FLOPs win
    big = roofline.decode_step_time_s(MODEL, GPU, 1, 5000, 0, **kw)
    assert big == pytest.approx(
        roofline.decode_compute_time_s(MODEL, GPU, 1, 5000, 0, compute_efficiency=0.5)
    )


def test_decode_time_terms_add_up_to_the_step():
    t = roofline.decode_time_terms_s(
        MODEL, GPU, 4, 1, 10_500, bandwidth_efficiency=0.8, compute_efficiency=0.5, step_overhead_s=0.002
    )
    assert t["weights_s"] == pytest.approx(35.275e9 / (BW * 0.8))
    assert t["kv_s"] == pytest.approx(10_500 * 81_920 / (BW * 0.8))
    assert t["memory_s"] == pytest.approx(t["weights_s"] + t["kv_s"])
    assert t["step_s"] == pytest.approx(t["overhead_s"] + max(t["memory_s"], t["compute_s"]))
    assert t["step_s"] == pytest.approx(15.4833e-3, rel=1e-4)


def test_zero_bandwidth_is_refused_by_the_gpu_spec():
    kw = {f.name: getattr(GPU, f.name) for f in dataclasses.fields(GPU)}
    with pytest.raises(SpecError, match="hbm_bandwidth_bytes_s must be a positive number"):
        GpuSpec(**{**kw, "hbm_bandwidth_bytes_s": 0.0})


@pytest.mark.parametrize("eff", [0.0, -0.1, 1.2, float("nan")])
def test_bandwidth_efficiency_outside_0_1_is_refused(eff):
    with pytest.raises(ValueError, match=r"bandwidth_efficiency must be in \(0, 1\]"):
        roofline.decode_memory_time_s(MODEL, GPU, 4, 1, 10_500, bandwidth_efficiency=eff)


def test_compute_efficiency_above_one_is_refused():
    with pytest.raises(ValueError, match=r"compute_efficiency must be in \(0, 1\]"):
        roofline.decode_compute_time_s(MODEL, GPU, 4, 1, 10_500, compute_efficiency=1.5)


@pytest.mark.parametrize("batch", [0, 0.5, -3])
def test_decode_step_needs_at_least_one_request(batch):
    with pytest.raises(ValueError, match="batch must be at least 1"):
        roofline.decode_step_time_s(
            MODEL, GPU, 4, batch, 10_500, bandwidth_efficiency=0.8, compute_efficiency=0.5
        )


def test_negative_batch_and_negative_overhead_are_refused():
    with pytest.raises(ValueError, match="non-negative"):
        roofline.decode_memory_time_s(MODEL, GPU, 4, -1, 10_500, bandwidth_efficiency=0.8)
    with pytest.raises(ValueError, match="step_overhead_s"):
        roofline.decode_step_time_s(
            MODEL, GPU, 4, 1, 10_500, bandwidth_efficiency=0.8, compute_efficiency=0.5, step_overhead_s=-1e-3
        )


# --- intensity ------------------------------------------------------------


def test_arithmetic_intensity_of_one_token_without_context_is_about_one_flop_per_byte():
    assert roofline.arithmetic_intensity(MODEL, 1, 1, 0) == pytest.approx(LINEAR / (2 * PARAMS))
    # independent of TP up to 8 GPUs: FLOPs and bytes both split
    assert roofline.arithmetic_intensity(MODEL, 8, 64, 10_500) == pytest.approx(
        roofline.arithmetic_intensity(MODEL, 1, 64, 10_500)
    )


def test_critical_batch_without_context_is_the_ridge_point():
    ridge = PEAK / BW  # 295 FLOP/byte
    expected = np.ceil(ridge * 2 * PARAMS / LINEAR)
    assert roofline.critical_batch(MODEL, GPU, 0) == expected == 300


def test_critical_batch_is_infinite_at_the_benchmarks_context():
    assert roofline.critical_batch(MODEL, GPU, 10_500) == float("inf")


def test_asymptotic_intensity_hand_value_and_zero_context():
    expected = (LINEAR + ATTN_PER_CTX * 10_500) / (10_500 * KV_PER_TOKEN)
    assert roofline.asymptotic_intensity(MODEL, 10_500) == pytest.approx(expected)
    assert roofline.asymptotic_intensity(MODEL, 0) == float("inf")
    with pytest.raises(ValueError, match="non-negative"):
        roofline.asymptotic_intensity(MODEL, -1)


def test_critical_context_separates_finite_from_infinite_critical_batch():
    c = roofline.critical_context_tokens(MODEL, GPU)
    assert c == pytest.approx(LINEAR / (PEAK / BW * KV_PER_TOKEN - ATTN_PER_CTX))
    assert 1400 < c < 1500
    assert np.isfinite(roofline.critical_batch(MODEL, GPU, 0.9 * c))
    assert roofline.critical_batch(MODEL, GPU, 1.01 * c) == float("inf")


def test_critical_context_is_infinite_when_attention_alone_is_compute_bound():
    slow = dataclasses.replace(GPU, name="slow-flops", bf16_flops=1e12)
    assert roofline.critical_context_tokens(MODEL, slow) == float("inf")


# --- per-user throughput --------------------------------------------------


def test_per_user_includes_the_first_token_wait():
    # TP4 at concurrency 1: TTFT 697 ms, TPOT 20.0 ms -> 48.4 tok/s, not 1/TPOT = 50
    assert roofline.per_user_tok_s(0.69707, 0.0200024, 1000) == pytest.approx(48.357, abs=1e-3)
    assert roofline.per_user_tok_s(0.0, 0.02, 1000) == pytest.approx(1000 / (999 * 0.02))


def test_implied_tpot_inverts_per_user():
    u = roofline.per_user_tok_s(0.611, 0.0157, 1000)
    assert roofline.implied_tpot_s(u, 0.611, 1000) == pytest.approx(0.0157)


@pytest.mark.parametrize(
    "u, ttft, osl", [(0.0, 0.5, 1000), (48.0, -0.1, 1000), (48.0, 0.5, 1), (48.0, 30.0, 1000)]
)
def test_implied_tpot_refuses_impossible_inputs(u, ttft, osl):
    with pytest.raises(ValueError):
        roofline.implied_tpot_s(u, ttft, osl)


# --- properties -----------------------------------------------------------


@FEW
@given(
    tp=st.sampled_from([1, 2, 4, 8]),
    b_max=st.floats(1, 512),
    n=st.floats(1, 1024),
    ctx=st.floats(0, 20_000),
    bw_eff=st.floats(0.5, 1.0),
    overhead=st.floats(0, 0.01),
    prefill_s=st.floats(0, 5),
    interference=st.booleans(),
)
def test_closed_loop_never_beats_the_bandwidth_bound(
    tp, b_max, n, ctx, bw_eff, overhead, prefill_s, interference
):
    osl = 1000

    def step(b):
        return roofline.decode_step_time_s(
            MODEL,
            GPU,
            tp,
            b,
            ctx,
            bandwidth_efficiency=bw_eff,
            compute_efficiency=0.5,
            step_overhead_s=overhead,
        )

    ss = queueing.closed_loop(n, b_max, prefill_s, step, osl, interference=interference)
    b = float(ss["batch"])
    bound = (
        b
        * osl
        / (
            (osl - 1)
            * float(roofline.decode_memory_time_s(MODEL, GPU, tp, b, ctx, bandwidth_efficiency=bw_eff))
        )
    )
    assert float(ss["tok_s"]) / tp <= bound / tp * (1 + 1e-12)


@FEW
@given(
    tp=st.sampled_from([2, 4, 8]),
    concurrency=st.integers(1, 256),
    features=st.sampled_from([f for _, f in LADDER_FEATURES]),
)
def test_model_per_gpu_never_beats_the_bandwidth_bound(tp, concurrency, features):
    p = ModelParams.nominal()
    pred = fullmodel.predict_aggregated(
        Setup(MODEL, GPU, get_profile("llm-d-standalone"), p),
        Layout("aggregated", tp=tp, replicas=1),
        isl=10_000,
        osl=1000,
        concurrency=float(concurrency),
        features=features,
    )
    b = min(concurrency, pred.max_batch)
    t_mem = float(
        roofline.decode_memory_time_s(MODEL, GPU, tp, b, 10_500, bandwidth_efficiency=p.bandwidth_efficiency)
    )
    assert pred.tok_s_per_gpu <= b * 1000 / (999 * t_mem) / tp * (1 + 1e-12)


def test_ridge_point_by_hand():
    assert roofline.ridge_point(GPU) == pytest.approx(989e12 / 3.35e12)
    assert roofline.ridge_point(GPU, weight_dtype="fp8") == pytest.approx(1979e12 / 3.35e12)
    # achieved FLOPs fall further below peak than achieved bandwidth: the ridge moves down
    assert roofline.ridge_point(GPU, compute_efficiency=0.5, bandwidth_efficiency=0.8) == pytest.approx(
        0.5 * 989e12 / (0.8 * 3.35e12)
    )
    with pytest.raises(ValueError, match="compute_efficiency"):
        roofline.ridge_point(GPU, compute_efficiency=1.5)


def test_decode_flops_per_token_by_hand():
    # 80 layers x 64 heads x 128 dims x 4 = 2,621,440 FLOPs per context token
    assert roofline.attention_flops_per_context_token(MODEL) == 4 * 80 * 64 * 128
    assert roofline.decode_flops_per_token(MODEL, 0) == pytest.approx(roofline.linear_flops_per_token(MODEL))
    assert roofline.decode_flops_per_token(MODEL, 10_500) == pytest.approx(
        roofline.linear_flops_per_token(MODEL) + 4 * 80 * 64 * 128 * 10_500
    )
