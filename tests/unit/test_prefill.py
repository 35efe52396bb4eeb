"""Prefill (chapter 05): FLOPs by hand for Llama-3.1-70B, the prefill/decode
ratio of hypothesis H2, chunking, TPOT under chunked-prefill interference, the
GPU-time share and the compute-only ceiling, and refusal of bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servingmodel import prefill, queueing
from servingmodel.roofline import linear_flops_per_token
from servingmodel.specs import get_gpu, get_model

MODEL = get_model("Llama-3.1-70B")
GPU = get_gpu("H100-SXM")
FEW = settings(max_examples=40, deadline=None)
ATTN = 2.0 * 80 * 64 * 128  # FLOPs per (query, key) pair for QK^T and PV together, over all layers


def test_prefill_flops_by_hand():
    linear = 2.0 * (70.55e9 - 128256 * 8192)
    assert linear_flops_per_token(MODEL) == pytest.approx(linear)
    assert prefill.prefill_flops(MODEL, 10_000) == pytest.approx(linear * 1e4 + ATTN * 1e8)
    assert prefill.prefill_flops(MODEL, 10_000) == pytest.approx(
        1.52e15, rel=0.01
    )  # the brief's "about 1.5e15"


def test_decode_flops_by_hand():
    linear = linear_flops_per_token(MODEL)
    expected = 1000 * (linear + 2 * ATTN * 10_500)
    assert prefill.decode_flops_per_request(MODEL, 10_000, 1000) == pytest.approx(expected)


def test_prefill_costs_about_ten_times_the_decode():
    ratio = prefill.prefill_decode_flops_ratio(MODEL, 10_000, 1000)
    assert 8.5 < ratio < 10.0
    # without attention the ratio would be exactly ISL / OSL
    assert prefill.prefill_decode_flops_ratio(MODEL, 10, 10) == pytest.approx(1.0, rel=1e-3)


def test_prefill_compute_time_scales_with_tp_and_efficiency():
    t4 = prefill.prefill_compute_time_s(MODEL, GPU, 4, 10_000, compute_efficiency=0.5)
    assert t4 == pytest.approx(prefill.prefill_flops(MODEL, 10_000) / (4 * 989e12 * 0.5))
    assert prefill.prefill_compute_time_s(MODEL, GPU, 8, 10_000, compute_efficiency=0.5) == pytest.approx(
        t4 / 2
    )
    assert prefill.prefill_compute_time_s(MODEL, GPU, 4, 10_000, compute_efficiency=1.0) == pytest.approx(
        t4 / 2
    )


def test_implied_efficiency_inverts_the_compute_time():
    t = prefill.prefill_compute_time_s(MODEL, GPU, 4, 10_000, compute_efficiency=0.63)
    assert prefill.implied_compute_efficiency(MODEL, GPU, 4, 10_000, t) == pytest.approx(0.63)
    np.testing.assert_allclose(
        prefill.implied_compute_efficiency(MODEL, GPU, [4, 8], 10_000, [t, t / 2]), [0.63, 0.63]
    )


@pytest.mark.parametrize(
    "isl, budget, chunks", [(10_000, 8192, 2), (8192, 8192, 1), (1, 8192, 1), (16385, 8192, 3)]
)
def test_prefill_chunks(isl, budget, chunks):
    assert prefill.prefill_chunks(isl, budget) == chunks


def test_interference_tpot_matches_the_closed_loop():
    t_dec, t_pf, osl = 0.02, 0.9, 1000
    tp = prefill.interference_tpot_s(8, t_dec, t_pf, osl)
    assert tp == pytest.approx(0.02 + 7 * 0.9 / 999)
    ss = queueing.closed_loop(8, 40, t_pf, lambda b: np.full(np.shape(b), t_dec), osl, interference=True)
    assert float(ss["tpot_s"]) == pytest.approx(tp)
    assert prefill.interference_tpot_s(1, t_dec, t_pf, osl) == pytest.approx(t_dec)


def test_prefill_time_share_by_hand():
    assert prefill.prefill_time_share(1, 1.0, 0.02, 1001) == pytest.approx(1.0 / 21.0)
    assert prefill.prefill_time_share(40, 1.0, 0.04, 1001) == pytest.approx(40 / 80)


def test_compute_bound_ceiling_by_hand():
    total = prefill.prefill_flops(MODEL, 10_000) + prefill.decode_flops_per_request(MODEL, 10_000, 1000)
    assert prefill.compute_bound_ceiling_tok_s_per_gpu(
        MODEL, GPU, 10_000, 1000, compute_efficiency=0.5
    ) == pytest.approx(1000 * 989e12 * 0.5 / total)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: prefill.prefill_flops(MODEL, 0), "isl must be at least 1"),
        (
            lambda: prefill.prefill_compute_time_s(MODEL, GPU, 4, 10_000, compute_efficiency=0.0),
            "compute_efficiency",
        ),
        (
            lambda: prefill.prefill_compute_time_s(MODEL, GPU, 4, 10_000, compute_efficiency=1.5),
            "compute_efficiency",
        ),
        (lambda: prefill.prefill_chunks(10_000, 0), "max_num_batched_tokens"),
        (lambda: prefill.prefill_decode_flops_ratio(MODEL, 10_000, 0), "osl must be at least 1"),
        (
            lambda: prefill.implied_compute_efficiency(MODEL, GPU, 4, 10_000, 0.0),
            "prefill_s must be positive",
        ),
        (lambda: prefill.implied_compute_efficiency(MODEL, GPU, 0, 10_000, 1.0), "tp must be at least 1"),
        (lambda: prefill.interference_tpot_s(0, 0.02, 1.0, 1000), "batch must be at least 1"),
        (lambda: prefill.interference_tpot_s(2, 0.02, 1.0, 1), "osl must be at least 2"),
        (
            lambda: prefill.compute_bound_ceiling_tok_s_per_gpu(
                MODEL, GPU, 10_000, 1000, compute_efficiency=0
            ),
            "compute_efficiency",
        ),
    ],
)
def test_bad_inputs_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@FEW
@given(st.integers(1, 100_000), st.integers(1, 100_000))
def test_prefill_flops_grow_faster_than_linearly(a, b):
    lo, hi = sorted((a, b))
    f_lo, f_hi = prefill.prefill_flops(MODEL, lo), prefill.prefill_flops(MODEL, hi)
    assert f_hi >= f_lo
    assert f_hi / hi >= f_lo / lo * (1 - 1e-12)  # causal attention: FLOPs per token rise with the prompt


@FEW
@given(st.floats(1, 512), st.floats(1e-3, 0.2), st.floats(0.05, 5.0), st.integers(2, 4000))
def test_time_share_is_a_fraction_that_grows_with_batch(b, t_dec, t_pf, osl):
    s1 = prefill.prefill_time_share(b, t_pf, t_dec, osl)
    s2 = prefill.prefill_time_share(b + 1, t_pf, t_dec, osl)
    assert 0 < s1 < 1
    assert s2 >= s1


@FEW
@given(st.floats(1, 512), st.floats(1e-3, 0.2), st.floats(0.0, 5.0), st.integers(2, 4000))
def test_interference_tpot_is_at_least_the_decode_step(b, t_dec, t_pf, osl):
    assert prefill.interference_tpot_s(b, t_dec, t_pf, osl) >= t_dec
