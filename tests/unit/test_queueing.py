"""Closed-loop queueing (chapter 04): the steady state by hand, Little's law,
the benchmark's ramp and tail, and the shape of the curves as properties of
the composed model."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servingmodel import fullmodel, queueing
from servingmodel.layout import Layout
from servingmodel.setup import LADDER_FEATURES, ModelParams, Setup
from servingmodel.specs import get_gpu, get_model, get_profile

MODEL = get_model("Llama-3.1-70B")
GPU = get_gpu("H100-SXM")
FEW = settings(max_examples=50, deadline=None)


def const(t):
    return lambda b: np.full(np.shape(b), t)


def test_closed_loop_below_the_batch_limit_has_no_queue():
    ss = queueing.closed_loop(2, 4, 1.0, const(0.02), 1001, interference=False)
    assert ss["batch"] == 2
    assert ss["service_s"] == pytest.approx(1.0 + 1000 * 0.02)
    assert ss["queue_wait_s"] == 0
    assert ss["tok_s"] == pytest.approx(2 / 21.0 * 1001)
    assert ss["ttft_s"] == pytest.approx(1.0)
    assert ss["tpot_s"] == pytest.approx(0.02)


def test_closed_loop_beyond_the_batch_limit_queues():
    ss = queueing.closed_loop(10, 4, 1.0, const(0.02), 1001, interference=False)
    rate = 4 / 21.0
    assert ss["batch"] == 4
    assert ss["queue_wait_s"] == pytest.approx(6 / rate)
    assert ss["ttft_s"] == pytest.approx(6 / rate + 1.0)
    assert ss["e2e_s"] == pytest.approx(6 / rate + 21.0)


def test_interference_makes_each_request_wait_for_the_batchs_prefills():
    ss = queueing.closed_loop(4, 4, 1.0, const(0.02), 1001, interference=True)
    assert ss["service_s"] == pytest.approx(4 * 1.0 + 1000 * 0.02)
    assert ss["tpot_s"] == pytest.approx(0.02 + 3 * 1.0 / 1000)


def test_closed_loop_is_vectorised_over_n():
    ss = queueing.closed_loop(np.array([1, 2, 8]), 2.5, 1.0, const(0.02), 1001, interference=False)
    np.testing.assert_allclose(ss["batch"], [1, 2, 2.5])


@pytest.mark.parametrize(
    "n, b_max, osl, match",
    [
        (0, 4, 1000, "n must be at least 1"),
        (2, 0, 1000, "cannot hold one request"),
        (2, 4, 1, "osl must be at least 2"),
    ],
)
def test_closed_loop_refuses_non_physical_inputs(n, b_max, osl, match):
    with pytest.raises(ValueError, match=match):
        queueing.closed_loop(n, b_max, 1.0, const(0.02), osl)


def test_littles_law_population():
    assert queueing.littles_law_population(0.5, 30.0) == pytest.approx(15.0)


def test_queue_wait_per_request_is_one_over_the_completion_rate():
    ss = queueing.closed_loop(np.array([10.0, 11.0]), 4, 1.0, const(0.02), 1001, interference=False)
    slope = queueing.queue_wait_per_request_s(4, 21.0)
    assert slope == pytest.approx(21.0 / 4)
    assert ss["ttft_s"][1] - ss["ttft_s"][0] == pytest.approx(slope)
    with pytest.raises(ValueError):
        queueing.queue_wait_per_request_s(0, 21.0)


def test_prefill_contention_is_md1_wait_and_capped():
    # three other prompts, each 1 s, per 6 s of service: utilisation 0.5 -> wait = 0.5 / (2 x 0.5) x t_pf
    assert queueing.prefill_contention_s(4, 1.0, 6.0) == pytest.approx(0.5)
    # a lone request never waits for the prefill slot
    assert queueing.prefill_contention_s(1, 1.0, 4.0) == 0.0
    # utilisation capped at 0.95
    assert queueing.prefill_contention_s(100, 1.0, 4.0) == pytest.approx(0.95 / 0.1)


def test_first_wave_delay_hand_value():
    assert queueing.first_wave_delay_s(9, 0.8, 10) == pytest.approx(8 / 2 * 0.8 / 10)
    assert queueing.first_wave_delay_s(1, 0.8, 10) == 0


def test_drain_factor_hand_value_and_single_request():
    steady = 10 * 1000 / 100.0
    assert queueing.drain_factor(4, 20.0, 100.0, 10, 1000) == pytest.approx(steady / (steady + 10.0 * 0.75))
    assert queueing.drain_factor(1, 20.0, 100.0, 10, 1000) == pytest.approx(1.0)


# --- properties -----------------------------------------------------------


@FEW
@given(
    n=st.floats(1, 2048),
    b_max=st.floats(0.1, 512),
    t_pf=st.floats(0, 10),
    t_dec=st.floats(1e-4, 0.1),
    osl=st.integers(2, 4000),
    interference=st.booleans(),
)
def test_littles_law_holds_in_the_closed_loop(n, b_max, t_pf, t_dec, osl, interference):
    ss = queueing.closed_loop(n, b_max, t_pf, const(t_dec), osl, interference=interference)
    rate = ss["tok_s"] / osl
    assert queueing.littles_law_population(rate, ss["e2e_s"]) == pytest.approx(n, rel=1e-9)


LAYOUTS = [
    Layout("aggregated", tp=t, replicas=r)
    for t, r in [(2, 1), (2, 4), (2, 8), (4, 1), (4, 2), (4, 4), (8, 1), (8, 2)]
] + [
    Layout("disaggregated", p_tp=4, p_replicas=1, d_tp=4, d_replicas=3),
    Layout("disaggregated", p_tp=4, p_replicas=2, d_tp=8, d_replicas=1),
    Layout("disaggregated", p_tp=8, p_replicas=1, d_tp=8, d_replicas=1),
]


def _predict(layout, c, features):
    profile = get_profile("llm-d-standalone" if layout.kind == "aggregated" else "llm-d-modelservice")
    return fullmodel.predict_aggregated(
        Setup(MODEL, GPU, profile, ModelParams.nominal()),
        layout,
        isl=10_000,
        osl=1000,
        concurrency=float(c),
        features=features,
    )


@FEW
@given(
    layout=st.sampled_from(LAYOUTS),
    c=st.integers(1, 255),
    dc=st.integers(1, 255),
    features=st.sampled_from([f for _, f in LADDER_FEATURES]),
)
def test_more_users_never_lower_per_gpu_nor_raise_per_user(layout, c, dc, features):
    c2 = min(c + dc, 256)
    lo, hi = _predict(layout, c, features), _predict(layout, c2, features)
    assert hi.tok_s_per_gpu >= lo.tok_s_per_gpu * (1 - 1e-12)
    assert hi.tok_s_per_user <= lo.tok_s_per_user * (1 + 1e-12)


@FEW
@given(tp=st.sampled_from([2, 4, 8]), c=st.integers(1, 256))
def test_beyond_the_batch_limit_per_gpu_is_flat_and_per_user_falls_as_one_over_c(tp, c):
    kv_only = LADDER_FEATURES[1][1]
    layout = Layout("aggregated", tp=tp, replicas=1)
    p = _predict(layout, c, kv_only)
    if c >= p.max_batch:
        ref = _predict(layout, 256, kv_only)
        assert p.tok_s_per_gpu == pytest.approx(ref.tok_s_per_gpu)
        assert p.tok_s_per_user * c == pytest.approx(ref.tok_s_per_user * 256)
