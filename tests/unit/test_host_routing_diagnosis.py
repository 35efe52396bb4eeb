"""Deployment differences (chapter 06): the host penalty of CPU-starved pods,
random routing versus balanced routing, and the per-step excess implied by a
concurrency-1 measurement (hypothesis H5)."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servingmodel import diagnosis, host, routing
from servingmodel.measurements import load_measurements
from servingmodel.roofline import per_user_tok_s
from servingmodel.specs import get_profile

FEW = settings(max_examples=40, deadline=None)
STANDALONE = get_profile("llm-d-standalone")
MODELSERVICE = get_profile("llm-d-modelservice")
IDEAL = get_profile("ideal")


def test_busy_processes_are_workers_plus_server_and_engine():
    np.testing.assert_allclose(host.busy_processes(np.array([2, 4, 8]), 2), [4, 6, 10])


def test_host_penalty_by_hand():
    # 4 cores: TP4 has P = 6 busy processes, E = 2 beyond the cores, E x P / C = 3; TP8: 6 x 10 / 4 = 15
    np.testing.assert_allclose(
        host.host_step_s(
            np.array([2, 4, 8]),
            cpu_cores=STANDALONE.cpu_cores,
            cpu_limited=STANDALONE.cpu_limited,
            host_penalty_s=1e-3,
            processes_besides_workers=2,
        ),
        [0, 3e-3, 15e-3],
    )
    np.testing.assert_allclose(
        host.host_step_s(
            np.array([2, 4, 8]),
            cpu_cores=MODELSERVICE.cpu_cores,
            cpu_limited=MODELSERVICE.cpu_limited,
            host_penalty_s=1e-3,
            processes_besides_workers=2,
        ),
        [0, 0, 0],
    )
    np.testing.assert_allclose(
        host.host_step_s(
            8,
            cpu_cores=IDEAL.cpu_cores,
            cpu_limited=IDEAL.cpu_limited,
            host_penalty_s=1e-3,
            processes_besides_workers=2,
        ),
        0,
    )


def test_balanced_throughput_by_hand():
    def tok(n):
        return 10 * np.asarray(n, float) / (1 + 0.1 * np.asarray(n, float))

    assert routing.balanced_throughput(8, 4, tok) == pytest.approx(4 * tok(2))
    assert routing.balanced_throughput(2, 4, tok) == pytest.approx(2 * tok(1))


def test_occupancy_with_equal_rates_is_uniform():
    p = routing.random_routing_occupancy(2, 2, lambda k: np.ones_like(k))
    np.testing.assert_allclose(p, [1 / 3, 1 / 3, 1 / 3])


@pytest.mark.parametrize("c, r", [(8, 4), (5, 2), (16, 8), (3, 3)])
def test_occupancy_of_independent_requests_is_binomial(c, r):
    # completion rate proportional to k: requests do not slow each other down
    p = routing.random_routing_occupancy(c, r, lambda k: np.asarray(k, float))
    q = 1.0 / r
    np.testing.assert_allclose(p, [comb(c, k) * q**k * (1 - q) ** (c - k) for k in range(c + 1)], rtol=1e-9)


def test_one_replica_holds_every_request():
    np.testing.assert_allclose(routing.random_routing_occupancy(4, 1, lambda k: k), [0, 0, 0, 0, 1])


def test_random_routing_equals_balanced_for_a_linear_instance():
    def tok(n):
        return 30.0 * np.asarray(n, float)

    assert routing.random_routing_throughput(16, 4, tok) == pytest.approx(30.0 * 16)


def test_random_routing_leaves_replicas_idle_at_low_load():
    def tok(n):
        return np.minimum(np.asarray(n, float), 2.0) * 40.0  # saturates at two requests

    rnd = routing.random_routing_throughput(8, 4, tok)
    bal = float(routing.balanced_throughput(8, 4, tok))
    assert rnd < 0.9 * bal


def test_implied_step_excess_by_hand():
    osl, ttft, tpot = 1000, 0.5, 0.025
    u = per_user_tok_s(ttft, tpot, osl)
    assert diagnosis.implied_step_excess_s(u, ttft, osl, 0.010) == pytest.approx(0.015)
    np.testing.assert_allclose(
        diagnosis.implied_step_excess_s([u, u], ttft, osl, [0.025, 0.030]), [0, -0.005], atol=1e-12
    )


def test_implied_penalty_per_process_by_hand():
    out = diagnosis.implied_penalty_per_process_s([0.001, 0.006, 0.030], np.array([2, 4, 8]), 4, 2)
    assert np.isnan(out[0])
    np.testing.assert_allclose(out[1:], [0.002, 0.002])


def test_oversubscription_by_hand():
    np.testing.assert_allclose(host.oversubscription(np.array([1, 2, 4, 8]), 4, 2), [0, 0, 3, 15])
    np.testing.assert_allclose(host.oversubscription(8, 32, 2), 0)
    with pytest.raises(ValueError, match="cpu_cores must be positive"):
        host.oversubscription(8, 0, 2)


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda: host.host_step_s(
                4,
                cpu_cores=STANDALONE.cpu_cores,
                cpu_limited=STANDALONE.cpu_limited,
                host_penalty_s=-1e-3,
                processes_besides_workers=2,
            ),
            "host_penalty_s must be non-negative",
        ),
        (lambda: routing.random_routing_occupancy(0, 2, lambda k: k), "at least 1"),
        (lambda: routing.random_routing_occupancy(4, 0, lambda k: k), "at least 1"),
        (lambda: routing.random_routing_occupancy(4, 2, lambda k: np.zeros_like(k)), "must be positive"),
        (lambda: diagnosis.implied_step_excess_s(0.0, 0.5, 1000, 0.01), "must be positive"),
        (lambda: diagnosis.implied_step_excess_s(40.0, 30.0, 1000, 0.01), "TTFT is longer"),
        (lambda: diagnosis.implied_step_excess_s(40.0, 0.5, 1, 0.01), "osl must be at least 2"),
        (lambda: diagnosis.implied_penalty_per_process_s(0.01, 8, 0, 2), "cpu_cores must be positive"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


CONCAVE = st.tuples(st.floats(1.0, 100.0), st.floats(0.0, 2.0), st.floats(0.3, 1.0), st.floats(1.0, 64.0))


def concave_curve(a, b, power, cap):
    """A concave instance curve through the origin: a n^p / (1 + b n), flattened beyond ``cap`` requests."""

    def tok(n):
        m = np.minimum(np.asarray(n, float), cap)
        return a * m**power / (1.0 + b * m)

    return tok


@FEW
@given(st.integers(1, 64), st.integers(1, 8), st.floats(0.1, 10.0), st.floats(0.0, 1.0))
def test_occupancy_is_a_distribution(c, r, mu1, slope):
    p = routing.random_routing_occupancy(c, r, lambda k: mu1 + slope * np.asarray(k, float))
    assert p.shape == (c + 1,)
    assert np.all(p >= 0)
    assert p.sum() == pytest.approx(1.0)
    assert np.dot(np.arange(c + 1), p) == pytest.approx(c / r, rel=1e-9)


@FEW
@given(st.integers(1, 64), st.integers(1, 8), CONCAVE)
def test_random_routing_never_beats_balanced_for_a_concave_instance(c, r, shape):
    tok = concave_curve(*shape)
    rnd = routing.random_routing_throughput(c, r, tok)
    bal = float(routing.balanced_throughput(c, r, tok))
    assert rnd <= bal * (1 + 1e-9)


def test_time_per_token_at_the_per_instance_load_by_hand():
    n, t = diagnosis.per_instance_time_per_token_s([100.0, 50.0], [8, 1], [4, 2])
    # 8 requests on 4 instances: 2 each, each busy instance gives 25 tok/s, so 2 / 25 s per token
    # 1 request on 2 instances: one busy instance, 1 / 50 s per token
    assert list(n) == [2.0, 1.0] and t == pytest.approx([0.08, 0.02])


@pytest.mark.parametrize("x, c, r", [(0.0, 8, 1), (10.0, 0, 1), (10.0, 8, 0), (np.nan, 8, 1)])
def test_time_per_token_refuses_non_physical_input(x, c, r):
    with pytest.raises(ValueError, match="positive"):
        diagnosis.per_instance_time_per_token_s(x, c, r)


def test_paired_excess_matches_per_instance_load():
    meas = load_measurements()
    same = diagnosis.paired_excess(meas, "TP4 x 1", "TP4 x 1")
    assert (same["excess_s"] == 0).all() and len(same) == 6
    tp8 = diagnosis.paired_excess(meas, "TP8 x 1", "1P-TP8 + 1D-TP8")
    # one TP8 pod against two: equal loads at 1 (a lone request), 32, 64 and 128 requests per pod
    assert list(tp8["per_instance_concurrency"]) == [1.0, 32.0, 64.0, 128.0]
    row = tp8.iloc[1]
    x = meas.set_index(["deployment", "concurrency"])["output_tok_s"]
    assert row["time_per_token_s"] == pytest.approx(32 / x[("TP8 x 1", 32)])
    assert row["reference_time_per_token_s"] == pytest.approx(64 / x[("1P-TP8 + 1D-TP8", 64)])
    with pytest.raises(ValueError, match="unknown deployment 'TP16 x 1'"):
        diagnosis.paired_excess(meas, "TP16 x 1", "TP8 x 1")


def test_least_squares_penalty_by_hand_and_refusals():
    assert diagnosis.least_squares_penalty_s([3e-3, 15e-3], [3.0, 15.0]) == pytest.approx(1e-3)
    # two points off the line: sum(u e) / sum(u^2) = (3 x 2 + 15 x 16) / (9 + 225) ms
    assert diagnosis.least_squares_penalty_s([2e-3, 16e-3], [3.0, 15.0]) == pytest.approx(
        (6 + 240) / 234 * 1e-3
    )
    with pytest.raises(ValueError, match="not identified"):
        diagnosis.least_squares_penalty_s([1e-3], [0.0])
    with pytest.raises(ValueError, match="same shape"):
        diagnosis.least_squares_penalty_s([1e-3, 2e-3], [1.0])


@pytest.mark.parametrize("c, r, knee", [(40, 4, 7), (60, 3, 1), (30, 2, 45), (25, 5, 25)])
def test_occupancy_with_a_saturating_rate_matches_the_direct_convolution(c, r, knee):
    """The running-sum shortcut for a replica whose rate stops growing gives the plain convolution's
    answer.
    """
    rate = lambda k: np.minimum(np.asarray(k, float), knee) ** 0.7  # noqa: E731
    fast = routing.random_routing_occupancy(c, r, rate)
    mu = rate(np.arange(1, c + 1, dtype=float))
    f = np.concatenate([[1.0], np.cumprod(mu.max() / mu)])
    f = f / f.max()
    rest = f.copy()
    for _ in range(r - 2):
        rest = np.convolve(rest, f)[: c + 1]
        rest = rest / rest.max()
    direct = f * rest[::-1]
    np.testing.assert_allclose(fast, direct / direct.sum(), rtol=1e-10, atol=1e-15)


def test_random_routing_in_small_chunks_gives_the_same_throughput(monkeypatch):
    """The random-routing solution evaluates points in chunks that bound its memory; the answer is the
    same whatever the chunk size."""
    from servingmodel import fullmodel
    from servingmodel.calibrated import calibrated_params
    from servingmodel.setup import Setup
    from servingmodel.specs import get_gpu, get_model

    setup = Setup(get_model("Llama-3.1-70B"), get_gpu("H100"), STANDALONE, calibrated_params())
    kw = dict(concurrency=[8, 64, 256, 33], isl=10_000, osl=1_000, tp_a=[4, 2, 4, 8], count_a=[4, 8, 2, 2])
    whole = fullmodel.predict_arrays(setup, **kw)["output_tok_s"]
    monkeypatch.setattr(fullmodel, "RANDOM_ROUTING_CHUNK", 300)
    chunked = fullmodel.predict_arrays(setup, **kw)["output_tok_s"]
    assert list(chunked) == list(whole)
