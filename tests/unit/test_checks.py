"""Non-physical inputs are refused with an error that names the quantity, across the package.

Each case below once returned a plausible-looking number (or silently
truncated, clipped or dropped its input); now it must raise.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from servingmodel import (
    calibrate,
    checks,
    comm,
    crude,
    disagg,
    fullmodel,
    host,
    kvcache,
    prefill,
    queueing,
    roofline,
    routing,
    stepsim,
    whatif,
)
from servingmodel.calibrate import calibrated_params
from servingmodel.layout import Layout
from servingmodel.paths import DATA_DIR
from servingmodel.setup import Setup
from servingmodel.specs import SpecError, get_gpu, get_model, get_profile

M, G = get_model("Llama-3.1-70B"), get_gpu("H100")
P = calibrated_params()
KW = dict(bandwidth_efficiency=0.8, compute_efficiency=0.5)
AR = dict(max_num_batched_tokens=8192, latency_s=1e-5, link_efficiency=0.8)
MS = get_profile("llm-d-modelservice")
SETUP = Setup(M, G, MS, P)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: roofline.critical_batch(M, G, -500.0), "context_tokens"),
        (
            lambda: roofline.critical_batch(M, G, 0.999 * roofline.critical_context_tokens(M, G)),
            "beyond max_batch",
        ),
        (lambda: roofline.decode_step_time_s(M, G, 4, 8, -1e6, **KW), "context_tokens"),
        (lambda: roofline.decode_step_time_s(M, G, 4, np.nan, 1e4, **KW), "batch"),
        (lambda: roofline.decode_compute_time_s(M, G, 4, -5, 1e4, compute_efficiency=0.5), "batch"),
        (lambda: roofline.implied_tpot_s(48.0, np.nan, 1000), "TTFT"),
        (lambda: comm.allreduce_time_s(G, np.nan, 1e6, latency_s=1e-5, link_efficiency=0.8), "tp"),
        (lambda: comm.prefill_comm_time_s(M, G, 4, 10_000, **{**AR, "latency_s": -1e-5}), "latency_s"),
        (
            lambda: comm.prefill_comm_time_s(M, G, 4, 10_000, **{**AR, "link_efficiency": 5.0}),
            "link_efficiency",
        ),
        (lambda: comm.prefill_comm_time_s(M, G, 4, -10_000, **AR), "isl"),
        (
            lambda: comm.prefill_comm_time_s(M, G, 4, 10_000, **{**AR, "max_num_batched_tokens": 0}),
            "max_num_batched_tokens",
        ),
        (lambda: prefill.prefill_chunks(10_000, np.nan), "max_num_batched_tokens"),
        (lambda: prefill.prefill_time_share(8, -1.0, 0.02, 1000), "prefill_s"),
        (lambda: kvcache.mean_context_tokens(-5, -10), "isl"),
        (
            lambda: kvcache.kv_budget_bytes_per_gpu(
                M, G, 4, gpu_memory_utilization=0.9, memory_reserve_bytes=np.nan
            ),
            "memory_reserve_bytes",
        ),
        (lambda: queueing.closed_loop(np.nan, 10, 0.5, lambda b: 0.02 + 0 * b, 1000), "n must be at least 1"),
        (lambda: queueing.closed_loop(4, 10, -5.0, lambda b: 0.02 + 0 * b, 1000), "prefill_s"),
        (lambda: queueing.first_wave_delay_s(9, 0.8, 0), "prompts_per_slot"),
        (lambda: queueing.prefill_contention_s(4, 0.5, 0.0), "service_s"),
        (lambda: host.oversubscription(-8, 4, 2), "tp"),
        (
            lambda: host.host_step_s(
                8, cpu_cores=4, cpu_limited=True, host_penalty_s=np.nan, processes_besides_workers=2
            ),
            "host_penalty_s",
        ),
        (
            lambda: host.host_step_s(
                8, cpu_cores=4, cpu_limited=0.5, host_penalty_s=1e-3, processes_besides_workers=2
            ),
            "cpu_limited",
        ),
        (lambda: routing.random_routing_throughput(3.9, 2, lambda k: k), "concurrency"),
        (lambda: routing.random_routing_occupancy(4, 1.7, lambda k: k), "replicas"),
        (lambda: disagg.mdc_wait_s(1.0, 1.0, 0), "servers"),
        (lambda: disagg.pool_capacities(0.0, 1, 0.1, 1, lambda b: 0.02, 1000, 1, 40.0), "prefill_s"),
        (lambda: Layout("aggregated", tp=4, replicas=1.5), "replicas"),
        (
            lambda: fullmodel.predict_aggregated(
                SETUP, Layout("aggregated", tp=4, replicas=2), isl=10_000, osl=1_000, concurrency=7.5
            ),
            "concurrency",
        ),
        (
            lambda: fullmodel.predict_arrays(
                SETUP, concurrency=np.nan, isl=10_000, osl=1_000, tp_a=4, count_a=1
            ),
            "concurrency",
        ),
        (
            lambda: fullmodel.predict_arrays(
                SETUP, concurrency=8, isl=10_000, osl=1_000, tp_a=4, count_a=1, cpu_cores=4, cpu_limited=-1.0
            ),
            "cpu_limited",
        ),
        (lambda: whatif.saturating_concurrency(np.nan, 1), "max_batch"),
        (lambda: whatif.saturating_concurrency(40.0, -1), "instances"),
        (
            lambda: whatif.meets_objective(
                pd.DataFrame({"fits": [True], "tok_s_per_gpu": [1.0], "ttft_ms": [1.0]}), max_ttft_ms=np.nan
            ),
            "max_ttft_ms",
        ),
        (lambda: whatif.candidates(SETUP, isl=10_000, osl=1_000, tps=(3, 6)), "must divide"),
        (lambda: crude.fit_alpha([1, 8], [30.0, 200.0], [4, 4], [1, 1], 0.0), "single_user_tok_s"),
        (lambda: crude.fit_alpha([1, 8], [30.0, np.nan], [4, 4], [1, 1], 35.0), "measured throughput"),
        (lambda: crude.fit_alpha([1, 10_000], [1.0, 1e6], [1, 1], [1, 1], 1.0), "edge of its search grid"),
    ],
)
def test_non_physical_input_is_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_engine_refuses_non_physical_step_times():
    good = stepsim.engine_from_instance(
        fullmodel.make_instance(SETUP, tp=4, isl=10_000, osl=1_000), 8192, 1024
    )
    bad = list(good.decode_step_s)
    bad[1] = -0.01
    with pytest.raises(ValueError, match="decode_step_s must be finite and positive"):
        stepsim.Engine(**{**good.__dict__, "decode_step_s": tuple(bad)})


def test_critical_batch_is_infinite_only_when_no_batch_reaches_the_ridge():
    crit = roofline.critical_context_tokens(M, G)
    assert roofline.critical_batch(M, G, 1.01 * crit) == np.inf
    assert np.isfinite(roofline.critical_batch(M, G, 0.999 * crit, max_batch=10**7))


def test_checks_accept_physical_values_and_name_the_quantity():
    assert checks.whole("tp", [1, 2, 8], 1).tolist() == [1.0, 2.0, 8.0]
    assert checks.positive("x", np.inf, allow_inf=True) == np.inf
    with pytest.raises(ValueError, match="^x must be positive"):
        checks.positive("x", np.inf)
    with pytest.raises(ValueError, match="in \\(0, 1\\]"):
        checks.fraction("eta", 0.0)


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda t: t.assign(fitted=t["fitted"].where(t["parameter"] != "bandwidth_efficiency", "abc")),
            "row 2.*not a number",
        ),
        (lambda t: t.rename(columns={"fitted": "value"}), "no column 'fitted'"),
        (
            lambda t: t.assign(fitted=t["fitted"].where(t["parameter"] != "memory_reserve_gib", "50")),
            "outside its plausible",
        ),
        (lambda t: pd.concat([t, t.iloc[:1]]), "given twice"),
    ],
)
def test_bad_calibrated_file_is_refused(tmp_path, edit, message):
    table = pd.read_csv(DATA_DIR / calibrate.CALIBRATED_FILE, dtype=str, keep_default_na=False)
    path = tmp_path / "cal.csv"
    edit(table).to_csv(path, index=False)
    with pytest.raises(SpecError, match=message):
        calibrate.calibrated_params(path)
