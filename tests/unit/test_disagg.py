"""Prefill/decode disaggregation (chapter 07): KV transfer by hand, the
queueing pieces, the closed loop of three pools, and the predictor that can
replace ``predict_aggregated``; properties: TTFT covers the prefill compute,
throughput never exceeds the slowest pool."""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servingmodel import calibrate, disagg, fullmodel, kvcache, prefill
from servingmodel.layout import Layout
from servingmodel.measurements import load_measurements
from servingmodel.setup import Features, ModelParams, Setup
from servingmodel.specs import get_gpu, get_model, get_profile

MODEL = get_model("Llama-3.1-70B")
GPU = get_gpu("H100-SXM")
MS = get_profile("llm-d-modelservice")
NOMINAL = ModelParams.nominal()
FEW = settings(max_examples=30, deadline=None)


def linear_step(t0, k):
    return lambda b: t0 + k * np.asarray(b, float)


def test_kv_transfer_bytes_and_time_by_hand():
    assert disagg.kv_transfer_bytes(MODEL, 10_000) == 327_680 * 10_000  # about 3.3 GB
    assert disagg.kv_transfer_time_s(MODEL, 10_000, 50e9) == pytest.approx(3.2768e9 / 50e9)
    np.testing.assert_allclose(disagg.kv_transfer_bytes(MODEL, [1, 2], kv_dtype="fp8"), [163_840, 327_680])


def test_transfer_bandwidths_come_from_the_parameter_file():
    assert disagg.transfer_bandwidth_bytes_s("rdma") == pytest.approx(50e9)
    assert disagg.transfer_bandwidth_bytes_s(" TCP ") == pytest.approx(0.5e9)


def test_erlang_c_by_hand():
    assert disagg.erlang_c(1, 0.3) == pytest.approx(0.3)
    assert disagg.erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert disagg.erlang_c(2, 2.0) == 1.0
    assert disagg.erlang_c(3, 0.0) == 0.0


def _erlang_b_by_definition(c: int, a: Fraction) -> float:
    """B(c, a) = (a^c / c!) / sum_k a^k / k!, in exact rational arithmetic."""
    terms = [a**k / math.factorial(k) for k in range(c + 1)]
    return float(terms[-1] / sum(terms))


@pytest.mark.parametrize("c", [1, 2, 7, 64, 65, 90, 200])
@pytest.mark.parametrize("load", [Fraction(1, 10), Fraction(1, 2), Fraction(9, 10), Fraction(99, 100)])
def test_erlang_b_matches_its_definition_on_both_sides_of_the_switch(c, load):
    # Pools up to ERLANG_RECURSION_MAX_SERVERS take the recursion, larger ones the
    # incomplete-gamma closed form; both must equal the textbook sum.
    a = load * c
    expected = _erlang_b_by_definition(c, a)
    assert disagg.erlang_b(c, float(a)) == pytest.approx(expected, rel=1e-12, abs=1e-300)


def test_erlang_c_on_a_huge_pool_is_finite_and_tends_to_its_limits():
    # At a fixed utilisation below 1 the waiting probability of an M/M/c queue falls to 0 as
    # c grows (economies of scale); at utilisation 1 - beta / sqrt(c) (Halfin-Whitt) it tends to
    # 1 / (1 + beta Phi(beta) / phi(beta)), independent of c.
    assert disagg.erlang_c(10**15, 0.9e15) == 0.0
    beta = 1.0
    phi = math.exp(-(beta**2) / 2) / math.sqrt(2 * math.pi)
    big_phi = 0.5 * (1 + math.erf(beta / math.sqrt(2)))
    limit = 1 / (1 + beta * big_phi / phi)
    for c in (10**6, 10**10, 10**14):
        got = disagg.erlang_c(c, c - beta * math.sqrt(c))
        assert got == pytest.approx(limit, rel=2e-3)


def test_md1_wait_is_pollaczek_khinchine():
    lam, s = 0.5, 1.0
    assert disagg.mdc_wait_s(lam, s, 1) == pytest.approx(lam * s**2 / (2 * (1 - lam * s)))
    assert disagg.mdc_wait_s(1.0, 1.0, 1) == float("inf")
    assert disagg.mdc_wait_s(0.0, 1.0, 2) == 0.0
    assert disagg.mdc_wait_s(1.0, 1.0, 2) < disagg.mdc_wait_s(0.5, 1.0, 1)


def test_decode_rate_and_batch_are_inverse():
    step = linear_step(0.02, 0.0005)
    r = float(disagg.decode_rate_per_instance(20.0, step, 1001))
    assert r == pytest.approx(20 / (1000 * (0.02 + 0.01)))
    assert disagg.decode_batch_for_rate(r, step, 1001, 40.0) == pytest.approx(20.0, rel=1e-9)
    # below one request the instance idles part of the time
    assert float(disagg.decode_rate_per_instance(0.5, step, 1001)) == pytest.approx(0.5 / (1000 * 0.0205))


def test_pool_capacities_by_hand():
    caps = disagg.pool_capacities(1.0, 2, 0.1, 2, linear_step(0.02, 0.0005), 1001, 3, 40.0)
    assert caps["prefill"] == pytest.approx(2.0)
    assert caps["transfer"] == pytest.approx(20.0)
    assert caps["decode"] == pytest.approx(3 * 40 / (1000 * 0.04))


def test_closed_loop_obeys_littles_law():
    kw = dict(
        prefill_s=1.0,
        p_replicas=2,
        transfer_s=0.1,
        links=2,
        decode_step_s=linear_step(0.02, 0.0005),
        osl=1001,
        d_replicas=2,
        max_batch=40.0,
    )
    for c in (1, 8, 32, 200):
        st_ = disagg.closed_loop_pd(c, **kw)
        assert st_.rate * st_.e2e_s == pytest.approx(c, rel=1e-3)


def test_single_request_sees_almost_no_queue():
    st_ = disagg.closed_loop_pd(
        1,
        prefill_s=1.0,
        p_replicas=1,
        transfer_s=0.1,
        links=1,
        decode_step_s=linear_step(0.02, 0.0),
        osl=1001,
        d_replicas=1,
        max_batch=40.0,
    )
    assert st_.rate == pytest.approx(1 / (1.0 + 0.1 + 1000 * 0.02), rel=0.01)
    assert st_.tpot_s == pytest.approx(0.02)


def test_saturation_at_the_slower_pool():
    step = linear_step(0.02, 0.0005)
    slow_prefill = disagg.closed_loop_pd(
        500,
        prefill_s=1.0,
        p_replicas=1,
        transfer_s=0.0,
        links=1,
        decode_step_s=step,
        osl=1001,
        d_replicas=3,
        max_batch=40.0,
    )
    assert slow_prefill.bottleneck == "prefill"
    assert slow_prefill.rate == pytest.approx(1.0, rel=0.01)
    slow_decode = disagg.closed_loop_pd(
        500,
        prefill_s=0.1,
        p_replicas=3,
        transfer_s=0.0,
        links=1,
        decode_step_s=step,
        osl=1001,
        d_replicas=1,
        max_batch=40.0,
    )
    assert slow_decode.bottleneck == "decode"
    assert slow_decode.rate == pytest.approx(slow_decode.decode_capacity)
    assert slow_decode.decode_wait_s > 0
    assert slow_decode.decode_batch == pytest.approx(40.0)


def test_a_slow_network_becomes_the_bottleneck():
    st_ = disagg.closed_loop_pd(
        500,
        prefill_s=1.0,
        p_replicas=2,
        transfer_s=6.5,
        links=2,
        decode_step_s=linear_step(0.02, 0.0005),
        osl=1001,
        d_replicas=2,
        max_batch=40.0,
    )
    assert st_.bottleneck == "transfer"
    assert st_.rate == pytest.approx(2 / 6.5, rel=0.01)


def test_one_tp4_decode_instance_cannot_reach_2420_tok_s():
    inst = fullmodel.make_instance(Setup(MODEL, GPU, MS, NOMINAL), tp=4, isl=10_000, osl=1000)
    assert disagg.decode_pool_ceiling_tok_s(inst) < 2420 * 0.7
    assert disagg.decode_pool_ceiling_tok_s(inst, 3) == pytest.approx(
        3 * disagg.decode_pool_ceiling_tok_s(inst)
    )
    assert disagg.prefill_pool_ceiling_tok_s(inst) == pytest.approx(1000 / float(inst.prefill_s))


def test_predictor_matches_aggregated_for_aggregated_layouts():
    lay = Layout("aggregated", tp=4, replicas=2)
    a = fullmodel.predict_aggregated(
        Setup(MODEL, GPU, MS, NOMINAL), lay, isl=10_000, osl=1000, concurrency=16
    )
    b = disagg.predict_disaggregated(
        Setup(MODEL, GPU, MS, NOMINAL), lay, isl=10_000, osl=1000, concurrency=16
    )
    assert a == b


def test_predictor_for_a_pd_layout():
    lay = Layout("disaggregated", p_tp=4, p_replicas=3, d_tp=4, d_replicas=1)
    p = disagg.predict_disaggregated(
        Setup(MODEL, GPU, MS, NOMINAL), lay, isl=10_000, osl=1000, concurrency=256
    )
    inst = fullmodel.make_instance(Setup(MODEL, GPU, MS, NOMINAL), tp=4, isl=10_000, osl=1000)
    assert p.output_tok_s <= disagg.decode_pool_ceiling_tok_s(inst) * (1 + 1e-9)
    assert p.tok_s_per_gpu == pytest.approx(p.output_tok_s / 16)
    assert p.tok_s_per_user == pytest.approx(p.output_tok_s / 256)
    slow = disagg.predict_disaggregated(
        Setup(MODEL, GPU, MS, NOMINAL), lay, isl=10_000, osl=1000, concurrency=1, transfer_bytes_s=0.5e9
    )
    fast = disagg.predict_disaggregated(
        Setup(MODEL, GPU, MS, NOMINAL), lay, isl=10_000, osl=1000, concurrency=1
    )
    assert slow.ttft_s - fast.ttft_s == pytest.approx(3.2768e9 / 0.5e9 - 3.2768e9 / 50e9, rel=0.02)


def test_predictor_runs_on_the_measurement_frame():
    df = load_measurements()
    dd = df[df["kind"] == "disaggregated"]
    pred = fullmodel.predict_measurements(dd, NOMINAL, Features(), predictor=disagg.predict_disaggregated)
    assert pred["pred_tok_s_per_gpu"].notna().all()
    assert (pred["pred_tok_s_per_gpu"] > 0).all()


def test_tp2_decode_instance_that_cannot_hold_a_request_is_refused():
    lay = Layout("disaggregated", p_tp=4, p_replicas=1, d_tp=2, d_replicas=1)
    with pytest.raises(kvcache.InsufficientMemoryError, match="cannot hold one request"):
        disagg.predict_disaggregated(Setup(MODEL, GPU, MS, NOMINAL), lay, isl=10_000, osl=1000, concurrency=4)


def test_a_fit_of_a_parameter_subset_recovers_known_parameters():
    df = load_measurements()
    df = df[df["family"] == "TP4"].copy()
    # within one TP size the weight-read efficiency and the all-reduce latency both set a fixed cost per
    # step, so the latency stays at its nominal value; the KV-read efficiency grows with the batch instead
    truth = dataclasses.replace(
        ModelParams.nominal(), bandwidth_efficiency=0.7, kv_bandwidth_efficiency=0.65, compute_efficiency=0.6
    )
    synth = fullmodel.predict_measurements(df, truth)
    df["output_tok_s"] = synth["pred_output_tok_s"].to_numpy()
    for col in ("ttft", "tpot"):  # synthetic latencies where the benchmark measured them
        has = df[f"mean_{col}_ms"].notna()
        df.loc[has, f"mean_{col}_ms"] = synth.loc[has, f"pred_{col}_ms"]
    got = calibrate.fit(
        df, priors={}, names=("bandwidth_efficiency", "kv_bandwidth_efficiency", "compute_efficiency")
    ).params
    assert got.bandwidth_efficiency == pytest.approx(0.7, rel=0.02)
    assert got.kv_bandwidth_efficiency == pytest.approx(0.65, rel=0.02)
    assert got.compute_efficiency == pytest.approx(0.6, rel=0.02)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: disagg.transfer_bandwidth_bytes_s("carrier pigeon"), "unknown transfer kind"),
        (lambda: disagg.kv_transfer_bytes(MODEL, 0), "isl must be at least 1"),
        (lambda: disagg.kv_transfer_time_s(MODEL, 10_000, 0.0), "transfer_bytes_s must be a positive"),
        (lambda: disagg.erlang_c(0, 1.0), "servers must be a whole number"),
        (lambda: disagg.erlang_c(2, -1.0), "offered_load"),
        (lambda: disagg.erlang_b(2, 2.0), "below servers"),
        (lambda: disagg.mdc_wait_s(-1.0, 1.0, 1), "rate must be"),
        (lambda: disagg.mdc_wait_s(1.0, 0.0, 1), "service_s must be positive"),
        (
            lambda: disagg.decode_rate_per_instance(-1, linear_step(0.02, 0), 1000),
            "batch must be non-negative",
        ),
        (lambda: disagg.decode_rate_per_instance(1, linear_step(0.02, 0), 1), "osl must be at least 2"),
        (lambda: disagg.decode_batch_for_rate(1e6, linear_step(0.02, 0), 1000, 10.0), "exceeds"),
        (lambda: disagg.decode_batch_for_rate(1.0, linear_step(0.02, 0), 1000, np.inf), "batch_cap"),
        (
            lambda: disagg.closed_loop_pd(
                0,
                prefill_s=1.0,
                p_replicas=1,
                transfer_s=0.1,
                links=1,
                decode_step_s=linear_step(0.02, 0),
                osl=1000,
                d_replicas=1,
                max_batch=4,
            ),
            "concurrency must be at least 1",
        ),
        (
            lambda: disagg.closed_loop_pd(
                4,
                prefill_s=1.0,
                p_replicas=0,
                transfer_s=0.1,
                links=1,
                decode_step_s=linear_step(0.02, 0),
                osl=1000,
                d_replicas=1,
                max_batch=4,
            ),
            "p_replicas must be a whole number",
        ),
        (
            lambda: disagg.closed_loop_pd(
                4,
                prefill_s=0.0,
                p_replicas=1,
                transfer_s=0.1,
                links=1,
                decode_step_s=linear_step(0.02, 0),
                osl=1000,
                d_replicas=1,
                max_batch=4,
            ),
            "prefill_s must be positive",
        ),
        (
            lambda: disagg.closed_loop_pd(
                4,
                prefill_s=1.0,
                p_replicas=1,
                transfer_s=-1.0,
                links=1,
                decode_step_s=linear_step(0.02, 0),
                osl=1000,
                d_replicas=1,
                max_batch=4,
            ),
            "transfer_s must be non-negative",
        ),
        (
            lambda: disagg.closed_loop_pd(
                4,
                prefill_s=1.0,
                p_replicas=1,
                transfer_s=0.1,
                links=1,
                decode_step_s=linear_step(0.02, 0),
                osl=1000,
                d_replicas=1,
                max_batch=0,
            ),
            "max_batch must be positive",
        ),
        (
            lambda: disagg.decode_pool_ceiling_tok_s(
                fullmodel.make_instance(
                    Setup(MODEL, GPU, MS, NOMINAL),
                    tp=4,
                    isl=10_000,
                    osl=1000,
                    features=Features(kv_limit=False),
                )
            ),
            "finite, positive KV batch limit",
        ),
        (
            lambda: disagg.predict_disaggregated(
                Setup(MODEL, GPU, MS, NOMINAL),
                Layout("disaggregated", p_tp=4, p_replicas=1, d_tp=4, d_replicas=1),
                isl=10_000,
                osl=1000,
                concurrency=0.5,
            ),
            "concurrency must be at least 1",
        ),
        (lambda: calibrate.fit(pd.DataFrame(), names=("bandwidth_efficiency",)), "no measurements"),
        (lambda: calibrate.fit(load_measurements(), names=("link_efficiency",)), "subset"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


LAYOUTS = st.sampled_from([(4, 1, 4, 3), (4, 2, 4, 2), (4, 3, 4, 1), (4, 2, 8, 1), (8, 1, 8, 1)])


@FEW
@given(LAYOUTS, st.integers(1, 512), st.sampled_from([0.5e9, 5e9, 50e9]), st.booleans())
def test_ttft_is_at_least_the_prefill_compute_time(lay, c, bw, deploy):
    p_tp, p_r, d_tp, d_r = lay
    layout = Layout("disaggregated", p_tp=p_tp, p_replicas=p_r, d_tp=d_tp, d_replicas=d_r)
    feats = Features(deployment=deploy)
    p = disagg.predict_disaggregated(
        Setup(MODEL, GPU, MS, NOMINAL),
        layout,
        isl=10_000,
        osl=1000,
        concurrency=c,
        features=feats,
        transfer_bytes_s=bw,
    )
    floor = prefill.prefill_compute_time_s(
        MODEL, GPU, p_tp, 10_000, compute_efficiency=NOMINAL.compute_efficiency
    )
    assert p.ttft_s >= floor
    assert p.ttft_s >= floor + disagg.kv_transfer_time_s(MODEL, 10_000, bw)


@FEW
@given(
    st.floats(1, 2000),
    st.floats(0.05, 5.0),
    st.integers(1, 4),
    st.floats(0.0, 10.0),
    st.integers(1, 4),
    st.floats(1e-3, 0.05),
    st.floats(0.0, 2e-3),
    st.floats(0.5, 200.0),
    st.integers(2, 3000),
)
def test_pd_throughput_never_exceeds_the_slower_pool(c, t_pf, p_r, t_x, d_r, t0, k, bmax, osl):
    step = linear_step(t0, k)
    links = min(p_r, d_r)
    st_ = disagg.closed_loop_pd(
        c,
        prefill_s=t_pf,
        p_replicas=p_r,
        transfer_s=t_x,
        links=links,
        decode_step_s=step,
        osl=osl,
        d_replicas=d_r,
        max_batch=bmax,
    )
    caps = disagg.pool_capacities(t_pf, p_r, t_x, links, step, osl, d_r, bmax)
    assert 0 < st_.rate <= min(caps.values()) * (1 + 1e-9)
    assert st_.ttft_s >= t_pf + t_x
    assert st_.decode_batch <= bmax * (1 + 1e-9)


def test_a_lone_user_on_unequal_pods_gets_the_harmonic_mean_speed():
    """Below one request per pod each request lands on any pod with equal chance: the user's throughput is
    OSL over the mean request time, and the latencies are plain per-request means (not
    throughput-weighted)."""
    lay = Layout("disaggregated", p_tp=4, p_replicas=2, d_tp=8, d_replicas=1)
    mixed = fullmodel.predict_aggregated(
        Setup(MODEL, GPU, MS, NOMINAL), lay, isl=10_000, osl=1000, concurrency=1
    )
    one = {
        tp: fullmodel.predict_aggregated(
            Setup(MODEL, GPU, MS, NOMINAL),
            Layout("aggregated", tp=tp, replicas=1),
            isl=10_000,
            osl=1000,
            concurrency=1,
        )
        for tp in (4, 8)
    }
    assert one[8].tok_s_per_user > 1.2 * one[4].tok_s_per_user  # unequal enough to tell the means apart
    assert mixed.tok_s_per_user == pytest.approx(3 / (2 / one[4].tok_s_per_user + 1 / one[8].tok_s_per_user))
    assert mixed.ttft_s == pytest.approx((2 * one[4].ttft_s + one[8].ttft_s) / 3)
    assert mixed.tpot_s == pytest.approx((2 * one[4].tpot_s + one[8].tpot_s) / 3)


@pytest.mark.parametrize("p_r, d_r", [(2, 2), (1, 3), (3, 1)])
def test_beyond_saturation_more_users_never_lower_pd_throughput(p_r, d_r):
    """Queued requests keep the pools busy until they start, so only those in service drain slowly at the
    end of a run: throughput must not fall as the concurrency (and the queue) grows."""
    lay = Layout("disaggregated", p_tp=4, p_replicas=p_r, d_tp=4, d_replicas=d_r)
    tok = [
        disagg.predict_disaggregated(
            Setup(MODEL, GPU, MS, NOMINAL), lay, isl=10_000, osl=1000, concurrency=c
        ).output_tok_s
        for c in (32, 64, 128, 256, 1024, 8192)
    ]
    assert all(b >= a * (1 - 1e-9) for a, b in zip(tok, tok[1:], strict=False))
