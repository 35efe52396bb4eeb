"""KV-cache capacity (chapter 04): hand-computed budgets for TP2/TP4/TP8 on
H100, deployments that cannot hold one request, and capacity growing with TP
and memory."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servingmodel import kvcache
from servingmodel.specs import GIB, get_gpu, get_model

MODEL = get_model("Llama-3.1-70B")
GPU = get_gpu("H100-SXM")
RESERVE = 5.39 * GIB
MEM = 79.2 * GIB
FEW = settings(max_examples=50, deadline=None)


def budget(tp, util, reserve=RESERVE):
    return util * MEM - 70.55e9 * 2 / tp - reserve


def test_kv_budget_tp4_hand_value():
    got = kvcache.kv_budget_bytes_per_gpu(
        MODEL, GPU, 4, gpu_memory_utilization=0.95, memory_reserve_bytes=RESERVE
    )
    assert got == pytest.approx(budget(4, 0.95))
    assert got / GIB == pytest.approx(75.24 - 35.275e9 / GIB - 5.39)


def test_kv_budget_is_negative_when_the_weights_do_not_fit():
    assert (
        kvcache.kv_budget_bytes_per_gpu(
            MODEL, GPU, 1, gpu_memory_utilization=0.9, memory_reserve_bytes=RESERVE
        )
        < 0
    )


@pytest.mark.parametrize("util", [0.0, -0.5, 1.01])
def test_memory_utilisation_outside_0_1_is_refused(util):
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        kvcache.kv_budget_bytes_per_gpu(
            MODEL, GPU, 4, gpu_memory_utilization=util, memory_reserve_bytes=RESERVE
        )


def test_negative_reserve_is_refused():
    with pytest.raises(ValueError, match="memory_reserve_bytes"):
        kvcache.kv_budget_bytes_per_gpu(MODEL, GPU, 4, gpu_memory_utilization=0.9, memory_reserve_bytes=-1.0)


@pytest.mark.parametrize("tp, kv_per_token", [(2, 163_840), (4, 81_920), (8, 40_960)])
def test_capacity_tokens_is_budget_over_kv_bytes_per_gpu(tp, kv_per_token):
    assert kvcache.kv_capacity_tokens(
        MODEL, GPU, tp, gpu_memory_utilization=0.95, memory_reserve_bytes=RESERVE
    ) == pytest.approx(budget(tp, 0.95) / kv_per_token)


def test_capacity_is_zero_not_negative_when_nothing_is_left():
    assert (
        kvcache.kv_capacity_tokens(MODEL, GPU, 1, gpu_memory_utilization=0.95, memory_reserve_bytes=RESERVE)
        == 0.0
    )


def test_mean_context_is_prompt_plus_half_the_output():
    assert kvcache.mean_context_tokens(10_000, 1000) == 10_500
    np.testing.assert_allclose(kvcache.mean_context_tokens([100, 200], [10, 20]), [105, 210])


def test_max_batch_and_whole_requests():
    assert kvcache.max_batch(21_000, 10_000, 1000) == pytest.approx(2.0)
    assert kvcache.full_requests_that_fit(21_000, 10_000, 1000) == 1.0
    assert kvcache.full_requests_that_fit(22_000, 10_000, 1000) == 2.0


def test_tp2_standalone_holds_between_two_and_three_requests():
    cap = kvcache.kv_capacity_tokens(MODEL, GPU, 2, gpu_memory_utilization=0.95, memory_reserve_bytes=RESERVE)
    assert 2 < kvcache.max_batch(cap, 10_000, 1000) < 3
    assert kvcache.full_requests_that_fit(cap, 10_000, 1000) == 2


def test_check_deployment_fits_returns_the_capacity():
    cap = kvcache.check_deployment_fits(
        MODEL, GPU, 4, 10_000, 1000, gpu_memory_utilization=0.95, memory_reserve_bytes=RESERVE
    )
    assert cap == pytest.approx(budget(4, 0.95) / 81_920)


def test_weights_that_do_not_fit_raise_with_the_numbers():
    with pytest.raises(
        kvcache.InsufficientMemoryError, match=r"does not fit on H100-SXM: weights need 131\.4 GiB"
    ):
        kvcache.check_deployment_fits(
            MODEL, GPU, 1, 10_000, 1000, gpu_memory_utilization=0.9, memory_reserve_bytes=RESERVE
        )


def test_small_memory_raises_insufficient_memory():
    small = dataclasses.replace(GPU, name="small-gpu", memory_bytes=24 * GIB)
    with pytest.raises(kvcache.InsufficientMemoryError, match="small-gpu"):
        kvcache.check_deployment_fits(
            MODEL, small, 2, 10_000, 1000, gpu_memory_utilization=0.9, memory_reserve_bytes=RESERVE
        )


def test_tp2_at_default_utilisation_cannot_hold_one_request():
    with pytest.raises(
        kvcache.InsufficientMemoryError, match=r"fewer than one request of 11000 tokens"
    ) as info:
        kvcache.check_deployment_fits(
            MODEL, GPU, 2, 10_000, 1000, gpu_memory_utilization=0.9, memory_reserve_bytes=RESERVE
        )
    assert isinstance(info.value, ValueError)


def test_derived_alpha_is_batch_over_tp():
    assert kvcache.derived_alpha(46.0, 4) == pytest.approx(11.5)
    np.testing.assert_allclose(kvcache.derived_alpha(np.array([2.0, 8.0]), np.array([2, 8])), [1.0, 1.0])
    with pytest.raises(ValueError):
        kvcache.derived_alpha(3.0, 0)
    with pytest.raises(ValueError):
        kvcache.derived_alpha(-1.0, 2)


# --- properties -----------------------------------------------------------


@FEW
@given(i=st.integers(0, 5), util=st.floats(0.5, 1.0), reserve_gib=st.floats(0, 8))
def test_capacity_never_decreases_with_tp(i, util, reserve_gib):
    tps = [1, 2, 4, 8, 16, 32, 64]
    lo, hi = (
        kvcache.kv_capacity_tokens(
            MODEL, GPU, t, gpu_memory_utilization=util, memory_reserve_bytes=reserve_gib * GIB
        )
        for t in tps[i : i + 2]
    )
    assert hi >= lo


@FEW
@given(
    tp=st.sampled_from([1, 2, 4, 8]),
    mem_gib=st.floats(16, 200),
    extra_gib=st.floats(0, 100),
    util=st.floats(0.5, 1.0),
)
def test_capacity_never_decreases_with_memory(tp, mem_gib, extra_gib, util):
    a = dataclasses.replace(GPU, memory_bytes=mem_gib * GIB)
    b = dataclasses.replace(GPU, memory_bytes=(mem_gib + extra_gib) * GIB)
    assert kvcache.kv_capacity_tokens(
        MODEL, b, tp, gpu_memory_utilization=util, memory_reserve_bytes=RESERVE
    ) >= kvcache.kv_capacity_tokens(MODEL, a, tp, gpu_memory_utilization=util, memory_reserve_bytes=RESERVE)
