"""Tensor-parallel communication (chapter 06): the alpha-beta all-reduce by
hand, activations versus gathered weights, latency- and bandwidth-bound
regimes, and properties of the communication time."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servingmodel import comm
from servingmodel.specs import get_gpu, get_model

MODEL = get_model("Llama-3.1-70B")
GPU = get_gpu("H100-SXM")
FEW = settings(max_examples=50, deadline=None)
LINK = 450e9 * 0.8


def test_allreduce_time_by_hand():
    msg = 64 * 8192 * 2
    # TP4: log2(4) = 2 latency rounds, plus the ring's bytes
    assert comm.allreduce_time_s(GPU, 4, msg, latency_s=10e-6, link_efficiency=0.8) == pytest.approx(
        2 * 10e-6 + 2 * 3 / 4 * msg / LINK
    )
    assert comm.allreduce_time_s(GPU, 1, msg, latency_s=10e-6, link_efficiency=0.8) == 0.0


def test_two_allreduces_per_layer():
    assert comm.allreduces_per_step(MODEL) == 160


def test_decode_comm_is_latency_bound_and_grows_with_log2_tp():
    t = comm.decode_comm_time_s(MODEL, GPU, np.array([2, 4, 8]), 1, latency_s=10e-6, link_efficiency=0.8)
    rounds = np.array([1, 2, 3])
    assert np.all(t >= 160 * 10e-6 * rounds)
    assert np.all(t < 160 * 10e-6 * rounds * 1.01)


def test_latency_rounds():
    np.testing.assert_allclose(comm.latency_rounds([1, 2, 4, 8]), [0, 1, 2, 3])
    with pytest.raises(ValueError, match="tp must be at least 1"):
        comm.latency_rounds(0)


def test_prefill_comm_by_hand():
    n, s = 8, 10_000
    bw = 2 * (n - 1) / n * s * 8192 * 2 / LINK
    expected = 160 * (2 * 3 * 10e-6 + bw)  # 2 chunks x log2(8) = 3 latency rounds
    assert comm.prefill_comm_time_s(
        MODEL, GPU, n, s, max_num_batched_tokens=8192, latency_s=10e-6, link_efficiency=0.8
    ) == pytest.approx(expected)
    assert (
        comm.prefill_comm_time_s(
            MODEL, GPU, 1, s, max_num_batched_tokens=8192, latency_s=10e-6, link_efficiency=0.8
        )
        == 0.0
    )


def test_message_bytes_are_hidden_activations_in_bf16():
    assert comm.allreduce_message_bytes(MODEL, 1) == 16_384
    np.testing.assert_allclose(comm.allreduce_message_bytes(MODEL, [0, 8192]), [0, 8192 * 16_384])


def test_activations_are_far_smaller_than_gathered_weights():
    ar = comm.bytes_per_token_allreduce(MODEL, np.array([2, 4, 8]))
    ag = comm.bytes_per_token_allgather_weights(MODEL, np.array([2, 4, 8]))
    np.testing.assert_allclose(ar, 160 * 2 * np.array([1 / 2, 3 / 4, 7 / 8]) * 16_384)
    np.testing.assert_allclose(ag, 141.1e9 * np.array([1 / 2, 3 / 4, 7 / 8]), rtol=1e-3)
    assert np.all(ag / ar > 1e4)
    assert comm.bytes_per_token_allreduce(MODEL, 1) == 0
    assert comm.bytes_per_token_allgather_weights(MODEL, 1) == 0


def test_time_terms_add_up():
    terms = comm.allreduce_time_terms_s(GPU, np.array([1, 2, 8]), 1e6, latency_s=10e-6, link_efficiency=0.8)
    np.testing.assert_allclose(terms["latency_s"], [0, 10e-6, 3 * 10e-6])
    # ring all-reduce by hand: 2 (N - 1) / N x bytes over the achieved link bandwidth; nothing at TP1
    link = GPU.link_bytes_s * 0.8
    np.testing.assert_allclose(terms["bandwidth_s"], [0, 2 * 1 / 2 * 1e6 / link, 2 * 7 / 8 * 1e6 / link])
    np.testing.assert_allclose(
        terms["total_s"],
        comm.allreduce_time_s(GPU, np.array([1, 2, 8]), 1e6, latency_s=10e-6, link_efficiency=0.8),
    )


def test_crossover_message_has_equal_latency_and_bandwidth_terms():
    m = comm.latency_bandwidth_crossover_bytes(GPU, 8, latency_s=10e-6, link_efficiency=0.8)
    terms = comm.allreduce_time_terms_s(GPU, 8, m, latency_s=10e-6, link_efficiency=0.8)
    assert terms["bandwidth_s"] == pytest.approx(terms["latency_s"])
    assert np.isinf(comm.latency_bandwidth_crossover_bytes(GPU, 1, latency_s=10e-6, link_efficiency=0.8))
    # a decode batch of 64 is below the crossover, an 8192-token prefill chunk far above it
    assert comm.allreduce_message_bytes(MODEL, 64) < m < comm.allreduce_message_bytes(MODEL, 8192) / 10


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda: comm.allreduce_time_s(GPU, 4, 1e6, latency_s=-1e-6, link_efficiency=0.8),
            "latency_s must be non-negative",
        ),
        (lambda: comm.allreduce_time_s(GPU, 4, 1e6, latency_s=1e-5, link_efficiency=0.0), "link_efficiency"),
        (
            lambda: comm.allreduce_time_s(GPU, 4, -1.0, latency_s=1e-5, link_efficiency=0.8),
            "message_bytes must be non-negative",
        ),
        (lambda: comm.allreduce_message_bytes(MODEL, -1), "tokens must be non-negative"),
        (
            lambda: comm.latency_bandwidth_crossover_bytes(GPU, 0, latency_s=1e-5, link_efficiency=0.8),
            "tp must be at least 1",
        ),
        (
            lambda: comm.latency_bandwidth_crossover_bytes(GPU, 4, latency_s=-1e-5, link_efficiency=0.8),
            "latency_s must be non-negative",
        ),
        (
            lambda: comm.latency_bandwidth_crossover_bytes(GPU, 4, latency_s=1e-5, link_efficiency=1.5),
            "link_efficiency",
        ),
        (lambda: comm.bytes_per_token_allgather_weights(MODEL, 3), "must divide"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@FEW
@given(
    st.sampled_from([1, 2, 4, 8]),
    st.floats(0, 1e10),
    st.floats(0, 1e10),
    st.floats(0, 1e-4),
    st.floats(0.05, 1.0),
)
def test_allreduce_time_is_non_negative_and_non_decreasing_in_bytes(tp, a, b, lat, eff):
    lo, hi = sorted((a, b))
    t_lo = comm.allreduce_time_s(GPU, tp, lo, latency_s=lat, link_efficiency=eff)
    t_hi = comm.allreduce_time_s(GPU, tp, hi, latency_s=lat, link_efficiency=eff)
    assert t_lo >= 0
    assert t_hi >= t_lo


@FEW
@given(st.sampled_from([2, 4, 8]), st.integers(1, 4096), st.floats(0, 1e-4))
def test_latency_per_call_does_not_shrink_with_tp(tp, batch, lat):
    msg = comm.allreduce_message_bytes(MODEL, batch)
    assert comm.allreduce_time_s(
        GPU, 2 * tp if tp < 8 else tp, msg, latency_s=lat, link_efficiency=0.8
    ) >= comm.allreduce_time_s(GPU, tp, msg, latency_s=lat, link_efficiency=0.8) * (1 - 1e-12)


@FEW
@given(st.sampled_from([2, 4, 8]), st.integers(1, 100_000), st.integers(1, 100_000))
def test_prefill_comm_is_non_decreasing_in_prompt_length(tp, a, b):
    lo, hi = sorted((a, b))
    assert comm.prefill_comm_time_s(
        MODEL, GPU, tp, hi, max_num_batched_tokens=8192, latency_s=1e-5, link_efficiency=0.8
    ) >= comm.prefill_comm_time_s(
        MODEL, GPU, tp, lo, max_num_batched_tokens=8192, latency_s=1e-5, link_efficiency=0.8
    )
