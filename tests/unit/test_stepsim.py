"""The step-level replay (chapter 08): hand-computed runs, vLLM's scheduling rules, and the
agreement with the mean-field model where both must agree."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servingmodel import calibrate, fullmodel, replaystudy, stepsim
from servingmodel.layout import Layout
from servingmodel.setup import Setup
from servingmodel.specs import get_gpu, get_model, get_profile

MODEL = get_model("Llama-3.1-70B")
GPU = get_gpu("H100-SXM")
PARAMS = calibrate.calibrated_params()
STANDALONE = get_profile("llm-d-standalone")


def toy(isl=100, osl=11, pf=0.001, idle=0.005, dec=0.01, capacity=10_000, max_running=8, budget=150):
    """An engine with round numbers: a prefill token costs ``pf``, a decode step ``dec`` at any batch."""
    return stepsim.Engine(isl, osl, pf, idle, (0.0,) + (dec,) * max_running, capacity, max_running, budget)


def test_a_lone_request_pays_its_chunked_prefill_then_one_step_per_token():
    e = toy()
    run = stepsim.replay([e], 1, 1)
    # chunks of 100 tokens fit one step of the 150-token budget: TTFT = idle step + 100 prefill tokens
    assert run.mean_ttft_s == pytest.approx(0.005 + 100 * 0.001)
    assert run.mean_tpot_s == pytest.approx(0.01)
    assert run.duration_s == pytest.approx(0.105 + 10 * 0.01)
    assert run.output_tok_s == pytest.approx(11 / run.duration_s)
    assert run.preemptions == 0


def test_a_prompt_longer_than_the_budget_is_split_over_steps():
    e = toy(isl=400, budget=150)  # 150 + 150 + 100 tokens: three steps, each paying the idle overhead
    run = stepsim.replay([e], 1, 1)
    assert run.mean_ttft_s == pytest.approx(3 * 0.005 + 400 * 0.001)


def test_simultaneous_prompts_queue_for_the_budget_first_come_first_served():
    e = toy(isl=100, budget=101)  # a step has room for one prompt and one more token
    run = stepsim.replay([e], 3, 3)
    ttft = np.sort(run.ttft_s)
    s1 = 0.005 + 0.101  # prompt 1, and the first token of prompt 2 in the budget left over
    s2 = 0.01 + 0.100  # request 1 decodes; prompt 2's other 99 tokens and prompt 3's first
    s3 = 0.01 + 0.099  # two decodes; prompt 3's other 99 tokens
    assert ttft == pytest.approx([s1, s1 + s2, s1 + s2 + s3])


def test_after_the_first_wave_prompts_straddle_two_steps():
    """Requests of equal length finish one prefill apart, so later prompts arrive one prefill apart.

    They no longer queue as the first wave did, but each shares its steps with
    its neighbours' prompts and the running decodes: it spans two full steps.
    """
    e = toy(isl=100, osl=50, budget=100)
    run = stepsim.replay([e], 4, 40)
    order = np.argsort(run.arrival_s, kind="stable")
    ttft = run.ttft_s[order].reshape(10, 4)
    first, later = ttft[0], ttft[1:]
    assert first.max() == pytest.approx(0.005 + 0.1 + 3 * (0.01 + 0.1), rel=0.05)  # four prompts in a row
    assert later.mean() < first.mean()
    full_step = 0.01 + 0.1
    assert np.all(later > 0.1 + 0.01) and np.all(later <= 2 * full_step + 1e-9)


def test_the_kv_cache_limits_the_batch_and_the_rest_wait():
    e = toy(isl=100, osl=11, capacity=250, budget=1000)  # two whole prompts fit, not three
    run = stepsim.replay([e], 3, 3)
    ttft = np.sort(run.ttft_s)
    assert ttft[2] > 10 * 0.01  # the third waits until one of the first two completes
    assert run.preemptions == 0
    assert run.peak_running == 2


def test_peak_running_counts_the_requests_one_instance_holds_at_once():
    e = toy(isl=100, osl=11, capacity=10_000, budget=1000, max_running=8)
    assert stepsim.replay([e], 5, 5).peak_running == 5  # all five prompts fit in one step's budget
    assert stepsim.replay([e, e], 4, 4, routing="balanced").peak_running == 2  # two per instance
    assert stepsim.replay([toy(max_running=3, budget=1000)], 5, 5).peak_running == 3  # max_num_seqs caps it


def test_decode_growth_beyond_the_cache_preempts_the_newest_request():
    # two prompts of 100 fit in 230 tokens, but not once each has generated 16 tokens
    e = toy(isl=100, osl=40, capacity=230, budget=1000)
    run = stepsim.replay([e], 2, 2)
    assert run.preemptions >= 1
    assert len(run.ttft_s) == 2  # both still complete


def test_routing_balanced_spreads_a_burst_evenly():
    e = toy()
    balanced = stepsim.replay([e, e], 2, 2, routing="balanced")
    assert balanced.mean_ttft_s == pytest.approx(0.105)  # each instance takes one prompt


def test_random_routing_is_deterministic_for_a_seed_and_varies_across_seeds():
    e = toy()
    a = stepsim.replay([e] * 4, 8, 80, routing="random", seed=1)
    b = stepsim.replay([e] * 4, 8, 80, routing="random", seed=1)
    assert a.mean_ttft_s == b.mean_ttft_s and np.array_equal(a.ttft_s, b.ttft_s)
    others = {stepsim.replay([e] * 4, 8, 80, routing="random", seed=s).mean_ttft_s for s in range(2, 6)}
    assert len(others) > 1


def test_a_replayed_lone_request_matches_the_mean_field_model():
    """At concurrency 1 there is nothing to replay: both models must give the lone prefill and decode."""
    lay = Layout("aggregated", tp=4, replicas=1)
    run = stepsim.replay_point(
        Setup(MODEL, GPU, STANDALONE, PARAMS), lay, isl=10_000, osl=1000, concurrency=1
    )
    mf = fullmodel.predict_aggregated(
        Setup(MODEL, GPU, STANDALONE, PARAMS), lay, isl=10_000, osl=1000, concurrency=1
    )
    assert run.mean_ttft_s == pytest.approx(mf.ttft_s, rel=0.02)
    assert run.mean_tpot_s == pytest.approx(mf.tpot_s, rel=0.02)
    assert run.output_tok_s == pytest.approx(mf.output_tok_s, rel=0.03)


def test_below_the_kv_limit_replay_and_mean_field_throughputs_agree():
    lay = Layout("aggregated", tp=4, replicas=1)
    for c in (8, 32):
        run = stepsim.replay_point(
            Setup(MODEL, GPU, STANDALONE, PARAMS), lay, isl=10_000, osl=1000, concurrency=c
        )
        mf = fullmodel.predict_aggregated(
            Setup(MODEL, GPU, STANDALONE, PARAMS), lay, isl=10_000, osl=1000, concurrency=c
        )
        assert run.output_tok_s == pytest.approx(mf.output_tok_s, rel=0.08)
        assert run.mean_ttft_s > mf.ttft_s  # the replay sees the chunk straddling the mean field misses


def test_replayed_ttft_grows_with_load():
    lay = Layout("aggregated", tp=4, replicas=1)
    ttft = [
        stepsim.replay_point(
            Setup(MODEL, GPU, STANDALONE, PARAMS), lay, isl=10_000, osl=1000, concurrency=c
        ).mean_ttft_s
        for c in (1, 8, 32)
    ]
    assert ttft[0] < ttft[1] < ttft[2]


def test_with_replayed_ttft_replaces_only_the_ttft(tmp_path):
    import pandas as pd

    pred = pd.DataFrame({"pred_ttft_ms": [1.0, 2.0], "pred_tpot_ms": [3.0, 4.0]})
    rep = pd.DataFrame({"replay_ttft_ms": [10.0, 20.0]})
    out = stepsim.with_replayed_ttft(pred, rep)
    assert out["pred_ttft_ms"].tolist() == [10.0, 20.0] and out["pred_tpot_ms"].tolist() == [3.0, 4.0]
    with pytest.raises(ValueError, match="same points"):
        stepsim.with_replayed_ttft(pred, rep.iloc[:1])


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: toy(isl=0), "isl >= 1"),
        (lambda: toy(osl=1), "osl >= 2"),
        (lambda: toy(budget=0), "max_num_batched_tokens"),
        (lambda: toy(pf=-1.0), "prefill_s_per_token"),
        (lambda: toy(idle=float("nan")), "idle_step_s"),
        (lambda: toy(capacity=50), "fewer than one request"),
        (lambda: stepsim.Engine(100, 11, 0.001, 0.005, (0.0, 0.01), 10_000, 2, 150), "every batch"),
        (lambda: stepsim.replay([], 1, 1), "at least one engine"),
        (lambda: stepsim.replay([toy()], 2, 1), "concurrency <= prompts"),
        (lambda: stepsim.replay([toy()], 1, 1, routing="round-robin"), "unknown routing"),
        (lambda: stepsim.replay([toy(), toy(isl=50)], 1, 1), "same workload"),
        (
            lambda: stepsim.replay_point(
                Setup(MODEL, GPU, STANDALONE, PARAMS),
                Layout("aggregated", tp=4, replicas=1),
                isl=10_000,
                osl=1000,
                concurrency=1.5,
            ),
            "whole number",
        ),
    ],
)
def test_bad_input_is_refused_with_a_message_that_names_it(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_as_prediction_scores_the_replay_like_the_mean_field():
    import pandas as pd

    meas = pd.DataFrame({"deployment": ["TP4 x 2"], "family": ["TP4"], "concurrency": [8], "num_gpus": [8]})
    rep = pd.DataFrame({"replay_output_tok_s": [400.0], "replay_ttft_ms": [900.0], "replay_tpot_ms": [25.0]})
    out = stepsim.as_prediction(rep, meas)
    assert out.loc[0, "pred_tok_s_per_gpu"] == 50.0 and out.loc[0, "pred_tok_s_per_user"] == 50.0
    assert out.loc[0, "pred_ttft_ms"] == 900.0
    with pytest.raises(ValueError, match="same points"):
        stepsim.as_prediction(rep, meas.iloc[:0])


def test_a_budget_of_a_whole_prompt_removes_the_straddle():
    """With room for a whole prompt and the decodes in one step, later prompts no longer span two full
    steps.
    """
    lay = Layout("aggregated", tp=4, replicas=1)
    default = stepsim.replay_point(
        Setup(MODEL, GPU, STANDALONE, PARAMS), lay, isl=10_000, osl=1000, concurrency=8
    )
    wide = stepsim.replay_point(
        Setup(MODEL, GPU, STANDALONE, PARAMS),
        lay,
        isl=10_000,
        osl=1000,
        concurrency=8,
        max_num_batched_tokens=16_384,
    )
    assert wide.mean_ttft_s < default.mean_ttft_s
    lone = stepsim.replay_point(
        Setup(MODEL, GPU, STANDALONE, PARAMS),
        lay,
        isl=10_000,
        osl=1000,
        concurrency=1,
        max_num_batched_tokens=16_384,
    )
    base = stepsim.replay_point(
        Setup(MODEL, GPU, STANDALONE, PARAMS), lay, isl=10_000, osl=1000, concurrency=1
    )
    # one chunk instead of two: the lone prefill saves one step's fixed cost and nothing else
    assert base.mean_ttft_s - lone.mean_ttft_s == pytest.approx(
        PARAMS.step_overhead_for(MODEL)
        + float(
            fullmodel.make_instance(
                Setup(MODEL, GPU, STANDALONE, PARAMS), tp=4, isl=10_000, osl=1000
            ).host_step_s
        ),
        rel=1e-6,
    )


def test_replay_runs_gives_one_run_per_seed_only_when_routing_is_random():
    one = stepsim.replay_runs(
        Setup(MODEL, GPU, STANDALONE, PARAMS),
        Layout("aggregated", tp=4, replicas=1),
        isl=10_000,
        osl=1000,
        concurrency=8,
        seeds=3,
    )
    many = stepsim.replay_runs(
        Setup(MODEL, GPU, STANDALONE, PARAMS),
        Layout("aggregated", tp=4, replicas=2),
        isl=10_000,
        osl=1000,
        concurrency=8,
        seeds=3,
    )
    assert len(one) == 1 and len(many) == 3
    with pytest.raises(ValueError, match="seeds must be at least 1"):
        stepsim.replay_runs(
            Setup(MODEL, GPU, STANDALONE, PARAMS),
            Layout("aggregated", tp=4, replicas=2),
            isl=10_000,
            osl=1000,
            concurrency=8,
            seeds=0,
        )


@settings(max_examples=60, deadline=None)
@given(
    isl=st.integers(1, 400),
    osl=st.integers(2, 60),
    budget=st.integers(1, 500),
    clients=st.integers(1, 12),
    per_client=st.integers(1, 4),
    extra_cache=st.integers(0, 3000),
    instances=st.integers(1, 3),
    routing=st.sampled_from(stepsim.ROUTINGS),
)
def test_every_replay_completes_every_request_and_respects_the_physics(
    isl, osl, budget, clients, per_client, extra_cache, instances, routing
):
    e = toy(isl=isl, osl=osl, budget=budget, capacity=isl + osl + extra_cache)
    prompts = clients * per_client
    run = stepsim.replay([e] * instances, clients, prompts, routing=routing, seed=7)
    assert run.requests == prompts and len(run.ttft_s) == prompts
    # no first token before the prompt's own tokens were computed
    assert np.all(run.ttft_s >= isl * e.prefill_s_per_token - 1e-12)
    assert run.mean_tpot_s >= e.decode_step_s[1] - 1e-12
    assert run.output_tok_s * run.duration_s == pytest.approx(prompts * osl)
    # the instances together cannot prefill faster than their compute allows
    assert run.duration_s * instances >= prompts * isl * e.prefill_s_per_token - 1e-9


def test_step_time_is_the_decode_step_plus_the_prompt_tokens():
    e = toy()
    assert e.step_s(0, 100) == pytest.approx(0.005 + 0.1)
    assert e.step_s(3, 0) == pytest.approx(0.01)
    assert e.step_s(3, 50) == pytest.approx(0.01 + 0.05)
    with pytest.raises(ValueError, match="n_decode"):
        e.step_s(9, 0)


def test_ttft_by_arrival_orders_the_record_by_send_time():
    e = toy(isl=100, budget=101)
    run = stepsim.replay([e], 3, 6)
    t = run.ttft_by_arrival_s()
    assert sorted(t.tolist()) == sorted(run.ttft_s.tolist())
    assert t[:3].tolist() == pytest.approx([0.106, 0.216, 0.325])  # the first wave, in the order it was sent


def test_reserve_staircase_steps_down_as_the_reserve_grows():
    lay = Layout("aggregated", tp=2, replicas=1)
    tab = replaystudy.reserve_staircase(
        Setup(MODEL, GPU, STANDALONE, PARAMS),
        lay,
        isl=10_000,
        osl=1000,
        concurrency=32,
        reserves_gib=(4.0, 6.0),
    )
    small, large = tab.iloc[0], tab.iloc[1]
    assert small["peak_running"] > large["peak_running"]  # less reserve, more cache, more requests at once
    assert small["meanfield_tok_s_per_gpu"] > large["meanfield_tok_s_per_gpu"]
    # the mean-field batch at the same reserve, replayed: whole requests never exceed the fractional limit + 1
    inst = fullmodel.make_instance(
        Setup(MODEL, GPU, STANDALONE, calibrate.replace_params(PARAMS, memory_reserve_gib=6.0)),
        tp=2,
        isl=10_000,
        osl=1000,
    )
    assert large["peak_running"] <= np.floor(float(inst.max_batch)) + 1
    with pytest.raises(ValueError, match="aggregated"):
        replaystudy.reserve_staircase(
            Setup(MODEL, GPU, STANDALONE, PARAMS),
            Layout("disaggregated", p_tp=4, p_replicas=1, d_tp=4, d_replicas=1),
            isl=10_000,
            osl=1000,
            concurrency=8,
            reserves_gib=(5.0,),
        )


def test_a_herding_stale_router_sends_a_burst_to_one_instance():
    e = toy()
    burst = stepsim.replay([e, e], 4, 4, routing="stale-herd", refresh_s=0.05)
    alone = stepsim.replay([e], 4, 4)
    assert burst.peak_running == 4  # the router's snapshot does not see its own choices
    assert burst.mean_ttft_s == pytest.approx(alone.mean_ttft_s)
    assert stepsim.replay([e, e], 4, 4, routing="balanced").peak_running == 2


def test_a_stale_router_without_herding_spreads_a_burst_over_tied_instances():
    e = toy(max_running=40, capacity=100_000, budget=10_000)
    spread = stepsim.replay([e] * 4, 40, 40, routing="stale", refresh_s=0.05, seed=3)
    assert spread.peak_running < 40  # ties broken request by request, so the burst does not pile up
    herd = stepsim.replay([e] * 4, 40, 40, routing="stale-herd", refresh_s=0.05, seed=3)
    assert herd.peak_running == 40


def test_stale_routing_refreshes_its_snapshot_only_after_refresh_s():
    e = toy()
    # a snapshot that never ages: every request of the run lands on the first target
    frozen = stepsim.replay([e, e], 2, 8, routing="stale-herd", refresh_s=1e9)
    assert frozen.peak_running == 2 and frozen.output_tok_s == pytest.approx(
        stepsim.replay([e], 2, 8).output_tok_s
    )
    # a fresh snapshot per arrival time: later arrivals spread, so the run is faster than on one instance
    fresh = stepsim.replay([e, e], 2, 8, routing="stale-herd", refresh_s=1e-6)
    assert fresh.output_tok_s > frozen.output_tok_s
    for routing in ("stale", "stale-herd"):
        for bad in (0.0, -1.0, float("nan")):
            with pytest.raises(ValueError, match="refresh_s"):
                stepsim.replay([e, e], 2, 2, routing=routing, refresh_s=bad)


def test_stale_router_keeps_its_snapshot_until_it_is_refresh_s_old():
    for herd in (False, True):
        router = stepsim.StaleRouter(0.05, np.random.default_rng(0), herd=herd)
        assert router.pick(0.0, [3, 1, 2]) == 1
        assert router.pick(0.0499, [3, 9, 0]) == 1  # the router does not see the new loads yet
        assert router.pick(0.05, [3, 9, 0]) == 2  # a snapshot exactly refresh_s old is renewed
        assert router.pick(0.06, [0, 9, 9]) == 2  # the window restarts at the renewal, not on a fixed clock
        assert router.pick(0.10, [0, 9, 9]) == 0
    # with herding a tie is broken once per snapshot; without, request by request
    herding = stepsim.StaleRouter(1.0, np.random.default_rng(1), herd=True)
    assert len({herding.pick(0.0, [0, 0, 0, 0]) for _ in range(20)}) == 1
    spreading = stepsim.StaleRouter(1.0, np.random.default_rng(1))
    assert len({spreading.pick(0.0, [0, 0, 0, 0]) for _ in range(20)}) > 1


def test_refresh_s_is_refused_without_stale_routing():
    with pytest.raises(ValueError, match="stale routing only"):
        stepsim.replay([toy(), toy()], 2, 2, routing="balanced", refresh_s=0.05)


def test_the_herding_router_can_be_told_where_the_opening_burst_lands():
    fast, slow = toy(dec=0.01), toy(dec=0.02)
    on_fast = stepsim.replay([fast, slow], 4, 4, routing="stale-herd", burst_target=0)
    on_slow = stepsim.replay([fast, slow], 4, 4, routing="stale-herd", burst_target=1)
    assert on_fast.duration_s < on_slow.duration_s  # the whole burst runs on the instance it names
    assert on_fast.mean_ttft_s == pytest.approx(stepsim.replay([fast], 4, 4).mean_ttft_s)
    with pytest.raises(ValueError, match="stale-herd routing only"):
        stepsim.replay([fast, slow], 4, 4, routing="stale", burst_target=0)
    with pytest.raises(ValueError, match="one of the 2 instances"):
        stepsim.replay([fast, slow], 4, 4, routing="stale-herd", burst_target=2)
    router = stepsim.StaleRouter(0.05, np.random.default_rng(0), herd=True, first_target=0)
    with pytest.raises(ValueError, match="not among the least-loaded"):
        router.pick(0.0, [1, 0])


def test_replay_runs_average_the_herding_router_over_every_burst_target():
    lay = Layout("disaggregated", p_tp=4, p_replicas=2, d_tp=8, d_replicas=1)
    llmd = get_profile("llm-d-modelservice")
    runs = stepsim.replay_runs(
        Setup(MODEL, GPU, llmd, PARAMS),
        lay,
        isl=10_000,
        osl=1000,
        concurrency=8,
        seeds=2,
        routing="stale-herd",
    )
    assert len(runs) == 3 * 2  # three pods, two seeds each
    assert (
        len(
            stepsim.replay_runs(
                Setup(MODEL, GPU, llmd, PARAMS),
                lay,
                isl=10_000,
                osl=1000,
                concurrency=8,
                seeds=2,
                routing="stale",
            )
        )
        == 2
    )
    # the interval reaches the replay: a snapshot that never ages sends every request to the burst's pod
    frozen = stepsim.replay_point(
        Setup(MODEL, GPU, llmd, PARAMS),
        lay,
        isl=10_000,
        osl=1000,
        concurrency=8,
        seeds=1,
        routing="stale-herd",
        refresh_s=1e9,
    )
    fresh = stepsim.replay_point(
        Setup(MODEL, GPU, llmd, PARAMS),
        lay,
        isl=10_000,
        osl=1000,
        concurrency=8,
        seeds=1,
        routing="stale-herd",
        refresh_s=1e-3,
    )
    assert frozen.output_tok_s < fresh.output_tok_s
