"""Calibration, the error ladder and the answers' numbers (chapters 09 and 10)."""

import dataclasses
import shutil

import numpy as np
import pandas as pd
import pytest

from servingmodel import answers, calibrate, diagnosis, fullmodel, ladder, paths, replaystudy, stepsim
from servingmodel.layout import layout_of
from servingmodel.measurements import load_measurements
from servingmodel.setup import FITTED_PARAMETERS, LADDER_FEATURES, ModelParams, Setup
from servingmodel.specs import SpecError, get_gpu, get_model, get_profile, parameter_facts


@pytest.fixture(scope="module")
def meas():
    return load_measurements()


@pytest.fixture(scope="module")
def fitted(meas):
    """The full calibration, refitted (slow tests only)."""
    return calibrate.fit(meas)


@pytest.fixture(scope="module")
def calibrated():
    """The stored calibration (``make calibrate``); the slow staleness test keeps it equal to a refit."""
    return calibrate.calibrated_params()


@pytest.mark.slow
def test_stored_calibration_is_the_current_fit(fitted):
    stored = calibrate.calibrated_params()
    for name in FITTED_PARAMETERS:
        assert getattr(stored, name) == pytest.approx(getattr(fitted.params, name), rel=1e-4), name


@pytest.mark.slow
def test_no_fitted_parameter_at_a_bound_and_all_inside_ranges(fitted):
    facts = parameter_facts()
    assert fitted.success
    assert fitted.at_bound == ()
    for name in FITTED_PARAMETERS:
        v = getattr(fitted.params, name)
        assert facts[name].low < v < facts[name].high
        assert 0 < fitted.stderr[name] < (facts[name].high - facts[name].low)


@pytest.mark.slow
def test_fit_recovers_known_parameters_from_synthetic_data(meas):
    truth = ModelParams.nominal().with_fitted([0.85, 0.7, 0.6, 15e-6, 4.5, 0.002])
    synth = fullmodel.predict_measurements(meas, truth)
    fake = meas.copy()
    fake["output_tok_s"] = synth["pred_output_tok_s"].to_numpy()
    for col in ("tpot", "ttft"):
        has = fake[f"mean_{col}_ms"].notna()
        fake.loc[has, f"mean_{col}_ms"] = synth.loc[has, f"pred_{col}_ms"]
    got = calibrate.fit(fake).params
    for name in FITTED_PARAMETERS:
        assert getattr(got, name) == pytest.approx(getattr(truth, name), rel=0.02), name


def test_residuals_count_points_and_latencies(meas, calibrated):
    pred = fullmodel.predict_measurements(meas, calibrated)
    lone = int((meas["mean_ttft_ms"].notna() & (meas["concurrency"] == 1)).sum())
    assert lone == 3  # TP4 x 1 and two llm-d deployments published a TTFT at concurrency 1
    r = calibrate.residuals(pred, meas)
    assert r.size == len(meas) + int(meas["mean_tpot_ms"].notna().sum()) + lone
    r0 = calibrate.residuals(pred, meas, ttft_weight=0.0)
    assert r0.size == r.size - lone


@pytest.mark.slow
def test_an_unservable_point_is_a_large_miss_and_counted_at_the_solution(meas, fitted):
    assert fitted.unserved == 0  # every measured point is served at the calibrated parameters
    pred = fullmodel.predict_measurements(meas, fitted.params)
    broken = pred.copy()
    broken.iloc[0, broken.columns.get_loc("pred_output_tok_s")] = (
        0.0  # a deployment that cannot hold the model
    )
    raw = calibrate.log_residuals(broken, meas)
    assert not np.isfinite(raw[0]) and np.isfinite(raw[1:]).all()
    assert calibrate.residuals(broken, meas)[0] == calibrate.UNSERVED_RESIDUAL
    # a reserve that leaves TP2 no KV cache: the fit would report those points as unserved
    huge = calibrate.replace_params(fitted.params, memory_reserve_gib=60.0)
    raw = calibrate.log_residuals(fullmodel.predict_measurements(meas, huge), meas)
    assert (~np.isfinite(raw)).sum() >= int((meas["family"] == "TP2").sum())


def test_calibrated_params_reports_a_missing_file(tmp_path):
    with pytest.raises(SpecError, match="make calibrate"):
        calibrate.calibrated_params(tmp_path / "none.csv")


def test_calibrated_params_reports_a_missing_parameter(tmp_path):
    path = tmp_path / "cal.csv"
    pd.DataFrame({"parameter": ["bandwidth_efficiency"], "fitted": [0.9]}).to_csv(path, index=False)
    with pytest.raises(SpecError, match="missing calibrated parameter"):
        calibrate.calibrated_params(path)


@pytest.fixture(scope="module")
def cv(meas):
    return calibrate.cross_validate(meas)


@pytest.mark.slow
def test_cross_validation_has_one_row_per_family(meas, cv):
    assert list(cv["held_out"]) == list(dict.fromkeys(meas["family"]))
    assert (cv["median_abs_rel_err"] > 0).all() and (cv["p90_abs_rel_err"] >= cv["median_abs_rel_err"]).all()
    assert (cv["unserved"] == 0).all()


@pytest.mark.slow
def test_ladder_rungs_in_order_and_calibration_best(meas, fitted):
    lad = ladder.error_ladder(meas, fitted.params)
    rungs = list(dict.fromkeys(lad["rung"]))
    assert rungs[0] == ladder.CRUDE and rungs[-2:] == [ladder.CALIBRATED, ladder.REPLAYED]
    assert len(rungs) == 3 + len(LADDER_FEATURES)
    overall = lad[lad["group"] == "all"].set_index("rung")
    assert overall["gpu_median"].idxmin() == ladder.CALIBRATED
    # the replay changes only the TTFT, and lowers its error
    assert overall.loc[ladder.REPLAYED, "gpu_median"] == overall.loc[ladder.CALIBRATED, "gpu_median"]
    assert overall.loc[ladder.REPLAYED, "ttft_median"] < overall.loc[ladder.CALIBRATED, "ttft_median"]
    assert np.isnan(overall.loc[ladder.CRUDE, "ttft_median"])


@pytest.mark.slow
def test_cross_validation_reports_each_refit(cv):
    for name in FITTED_PARAMETERS:
        assert cv[name].notna().all() and (cv[name + "_stderr"] > 0).all()


def test_prior_residuals_by_hand():
    x = [0.9, 0.6, 0.6, 1e-5, 6.0, 1e-3]
    r = calibrate.prior_residuals(x, {"memory_reserve_gib": (5.0, 2.0)}, noise=0.1)
    assert r == pytest.approx([0.1 * (6.0 - 5.0) / 2.0])
    with pytest.raises(ValueError, match="unknown parameter"):
        calibrate.prior_residuals(x, {"step_overhead_s": (0.0, 1.0)}, noise=0.1)
    with pytest.raises(ValueError, match="must be positive"):
        calibrate.prior_residuals(x, {"memory_reserve_gib": (5.0, 0.0)}, noise=0.1)


def test_the_sourced_prior_is_the_reserve_only():
    facts = parameter_facts()
    assert calibrate.sourced_priors() == {
        "memory_reserve_gib": (facts["memory_reserve_gib"].nominal, facts["memory_reserve_gib"].prior_sd)
    }


@pytest.mark.slow
def test_prior_barely_moves_the_full_fit(meas, fitted):
    bare = calibrate.fit(meas, priors={})
    assert bare.priors == {} and fitted.priors == calibrate.sourced_priors()
    for name in FITTED_PARAMETERS:
        assert abs(getattr(fitted.params, name) - getattr(bare.params, name)) < 0.5 * bare.stderr[name], name


@pytest.mark.slow
def test_prior_pins_the_reserve_where_the_data_do_not(meas, cv):
    """Without TP2 the reserve is barely identified; the prior pulls it to its source and shrinks its
    error.
    """
    sens = calibrate.prior_sensitivity(meas, "TP2", "memory_reserve_gib", [1.0, np.inf])
    with_prior, without = sens.iloc[0], sens.iloc[1]
    nominal = parameter_facts()["memory_reserve_gib"].nominal
    assert abs(with_prior["value"] - nominal) < abs(without["value"] - nominal)
    assert with_prior["stderr"] < without["stderr"]
    tp2 = cv.set_index("held_out").loc["TP2"]
    assert tp2["memory_reserve_gib"] == pytest.approx(with_prior["value"], rel=1e-6)
    assert tp2["median_abs_rel_err"] == pytest.approx(with_prior["median_abs_rel_err"], rel=1e-6)


def test_prior_sensitivity_rejects_unknown_names(meas):
    with pytest.raises(ValueError, match="unknown family"):
        calibrate.prior_sensitivity(meas, "TP16", "memory_reserve_gib", [1.0])
    with pytest.raises(ValueError, match="not a fitted parameter"):
        calibrate.prior_sensitivity(meas, "TP2", "link_efficiency", [1.0])


def test_model_curves_cover_every_deployment(meas, calibrated):
    curves = fullmodel.model_curves(meas, calibrated)
    assert set(curves["deployment"]) == set(meas["deployment"])
    assert len(curves) == meas["deployment"].nunique() * len(fullmodel.CURVE_CONCURRENCIES)
    for _, g in curves.groupby("deployment"):
        g = g.sort_values("concurrency")
        assert np.all(np.diff(g["pred_tok_s_per_user"].to_numpy()) <= 1e-9)


def test_decode_step_breakdown_adds_up(calibrated):
    model, gpu = get_model("Llama-3.1-70B"), get_gpu("H100-SXM")
    for tp in (2, 4, 8):
        parts = fullmodel.decode_step_breakdown(
            Setup(model, gpu, get_profile("llm-d-standalone"), calibrated),
            tp=tp,
            batch=1,
            isl=10000,
            osl=1000,
        )
        total = sum(v for k, v in parts.items() if k != "step_s")
        assert parts["step_s"] == pytest.approx(total, rel=1e-9)
    assert parts["host_s"] > 0
    ms = fullmodel.decode_step_breakdown(
        Setup(model, gpu, get_profile("llm-d-modelservice"), calibrated),
        tp=8,
        batch=1,
        isl=10000,
        osl=1000,
    )
    assert ms["host_s"] == 0


def test_ceilings_and_host_penalty_removal(meas, calibrated):
    c = answers.ceilings(meas, calibrated).set_index("tp")
    assert (c["model_without_host_penalty"] >= c["model"] - 1e-9).all()
    assert c.loc[2, "model_without_host_penalty"] == pytest.approx(c.loc[2, "model"])  # TP2 fits the 4 cores
    assert c.loc[2, "max_batch"] < 3 < c.loc[4, "max_batch"] < c.loc[8, "max_batch"]


def test_concurrency_one_matches_per_user_definition(meas, calibrated):
    one = answers.concurrency_one(meas, calibrated)
    osl = 1000
    per_user = osl / (one["predicted_ttft_ms"] / 1e3 + (osl - 1) * one["predicted_tpot_ms"] / 1e3)
    np.testing.assert_allclose(per_user, one["predicted_tok_s_per_user"], rtol=1e-6)
    # the nominal column is the same model with nothing fitted: no host penalty, so both TP8 pods agree
    nom = one.set_index("deployment")["nominal_tok_s_per_user"]
    assert nom["TP8 x 1"] == pytest.approx(nom["1P-TP8 + 1D-TP8"], rel=0.01)
    assert nom["TP8 x 1"] > one.set_index("deployment").loc["TP8 x 1", "predicted_tok_s_per_user"]


def test_dashed_readings_prefer_aggregated(meas, calibrated):
    r = answers.dashed_readings(meas, calibrated).set_index("reading")
    assert r.iloc[0]["median"] < r.iloc[1]["median"]


def test_routing_cost_is_a_loss_and_vanishes_at_concurrency_one(meas, calibrated):
    r = answers.routing_cost(meas, calibrated)
    assert (r["loss"] >= -1e-9).all()
    assert np.allclose(r.loc[r["concurrency"] == 1, "loss"], 0.0)


def test_prefill_share_and_allreduce_grow_with_tp(meas, calibrated):
    s = answers.prefill_share_at_ceiling(meas, calibrated).set_index("tp")
    assert s.loc[2, "prefill_share"] < s.loc[4, "prefill_share"] < s.loc[8, "prefill_share"]
    ar = answers.decode_allreduce_ms(meas, calibrated)
    assert ar[2] < ar[4] < ar[8]


def test_benchmark_tps_come_from_the_measurements(meas):
    assert answers.benchmark_tps(meas) == [2, 4, 8]
    assert list(answers.ceilings(meas[meas["tp"] != 8], ModelParams.nominal())["tp"]) == [2, 4]
    with pytest.raises(ValueError, match="no aggregated deployment"):
        answers.benchmark_tps(meas[meas["kind"] != "aggregated"])


def test_step_overhead_grows_with_the_models_depth_by_hand():
    nominal = ModelParams.nominal()
    # BLIS's law in data/parameters.csv: 0.126 ms per step plus 32 us per layer
    assert nominal.step_overhead_for(get_model("Llama-3.1-70B")) == pytest.approx(0.126e-3 + 80 * 32e-6)
    assert nominal.step_overhead_for(get_model("Llama-3.1-8B")) == pytest.approx(0.126e-3 + 32 * 32e-6)
    assert nominal.step_overhead_for(get_model("Llama-3.1-405B")) == pytest.approx(0.126e-3 + 126 * 32e-6)
    with pytest.raises(ValueError, match="step_overhead_per_layer_s must be non-negative"):
        dataclasses.replace(nominal, step_overhead_per_layer_s=-1e-6)


def test_non_physical_parameters_are_refused():
    nominal = ModelParams.nominal()
    with pytest.raises(ValueError, match="bandwidth_efficiency must be in"):
        dataclasses.replace(nominal, bandwidth_efficiency=1.2)
    with pytest.raises(ValueError, match="host_penalty_s must be non-negative"):
        dataclasses.replace(nominal, host_penalty_s=-1.0)


def test_host_penalty_per_step_follows_the_oversubscription_law(meas, calibrated):
    ms = answers.host_step_ms(meas, calibrated)
    assert ms[2] == 0.0  # TP2: four busy processes on four cores
    # E x P / C on 4 cores: TP4 -> 2 x 6 / 4 = 3 units, TP8 -> 6 x 10 / 4 = 15 units
    assert ms[4] == pytest.approx(3e3 * calibrated.host_penalty_s)
    assert ms[8] == pytest.approx(15e3 * calibrated.host_penalty_s)
    assert answers.host_step_ms(meas, calibrated, profile="llm-d-modelservice") == {
        2: 0.0,
        4: 0.0,
        8: 0.0,
    }


def test_cpu_pairs_are_model_free_and_lone_excess_by_hand(meas):
    pairs = diagnosis.cpu_pairs(meas)
    assert set(pairs["tp"]) == {4, 8}
    lone = diagnosis.lone_request_excess_ms(pairs)
    x = meas.set_index(["deployment", "concurrency"])["output_tok_s"]
    # a lone request: 1 / throughput per token on each side
    want8 = 1e3 * (1 / x[("TP8 x 1", 1)] - 1 / x[("1P-TP8 + 1D-TP8", 1)])
    assert lone[8] == pytest.approx(want8)
    with pytest.raises(ValueError, match="one lone-request row"):
        diagnosis.lone_request_excess_ms(pairs[pairs["per_instance_concurrency"] > 1])


def test_whole_request_plateau_reads_the_measured_point_as_a_staircase_step(meas, calibrated):
    params = calibrated
    w = replaystudy.whole_request_plateau(meas, params, reserves_gib=(4.4, 4.8, 5.2))
    assert list(w["table"]["reserve_gib"]) == [4.4, 4.8, 5.2]
    steps = w["steps"]
    # a clean step per running count; more requests run only with a smaller reserve, and deliver more
    assert steps["peak_running"].is_monotonic_increasing
    assert steps["max_reserve_gib"].is_monotonic_decreasing
    assert steps["replay_tok_s_per_gpu"].is_monotonic_increasing
    point = meas[(meas["deployment"] == "TP2 x 1") & (meas["concurrency"] == 32)].iloc[0]
    assert w["measured"] == point["tok_s_per_gpu"]
    assert w["matched"]["peak_running"] in set(steps["peak_running"])
    direct = stepsim.replay_point(
        Setup(get_model(point["model"]), get_gpu(point["gpu"]), get_profile("llm-d-standalone"), params),
        layout_of(point),
        isl=int(point["isl"]),
        osl=int(point["osl"]),
        concurrency=32,
    )
    assert w["calibrated"]["reserve_gib"] == pytest.approx(params.memory_reserve_gib)
    assert w["calibrated"]["peak_running"] == direct.peak_running
    default = replaystudy.whole_request_plateau(meas, params)["table"]["reserve_gib"]
    assert (
        default.min() < params.memory_reserve_gib < default.max()
    )  # the default grid brackets the calibration
    with pytest.raises(ValueError, match="TP2 x 1.*concurrency 3"):
        replaystudy.whole_request_plateau(meas, params, concurrency=3)


@pytest.mark.slow
def test_held_out_with_scores_the_refit_with_one_parameter_swapped(meas, cv, fitted):
    row = cv.set_index("held_out").loc["TP8"]
    assert calibrate.held_out_with(meas, cv, "TP8") == pytest.approx(row["median_abs_rel_err"])
    refit = calibrate.fit(meas[meas["family"] != "TP8"]).params  # the refit again, not read from cv
    swapped = calibrate.replace_params(refit, host_penalty_s=fitted.params.host_penalty_s)
    want = np.median(calibrate.throughput_errors(meas[meas["family"] == "TP8"], swapped))
    got = calibrate.held_out_with(meas, cv, "TP8", host_penalty_s=fitted.params.host_penalty_s)
    assert got == pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError, match="single row"):
        calibrate.held_out_with(meas, cv, "TP16")
    with pytest.raises(ValueError, match="unknown fitted"):
        calibrate.held_out_with(meas, cv, "TP8", step_overhead_s=0.001)


def test_fit_and_cross_validation_count_points_the_model_cannot_serve(meas, monkeypatch):
    """A small synthetic fit (three points of two families, one parameter): the counter, not the physics."""
    sub = pd.concat([meas[meas["family"] == fam].head(3) for fam in ("TP4", "disaggregated")])
    victim = sub.index[sub["family"] == "TP4"][0]
    real = calibrate.predict_measurements

    def cannot_serve_victim(m, p, *args, **kwargs):
        out = real(m, p, *args, **kwargs)
        if victim in out.index:
            out.loc[victim, "pred_output_tok_s"] = 0.0
        return out

    monkeypatch.setattr(calibrate, "predict_measurements", cannot_serve_victim)
    one = ("bandwidth_efficiency",)
    assert calibrate.fit(sub, priors={}, names=one).unserved == 1
    cv = calibrate.cross_validate(sub, priors={}, names=one).set_index("held_out")
    assert cv["unserved"].to_dict() == {"TP4": 1, "disaggregated": 1}  # held out, then in the training set


def test_stale_router_ttft_replays_the_loaded_llm_d_points_behind_each_router(meas, calibrated):
    tab = replaystudy.stale_router_ttft(meas, calibrated, seeds=1)
    want = meas[
        meas["mean_ttft_ms"].notna() & (meas["concurrency"] > 1) & (meas["family"] == "disaggregated")
    ]
    assert list(tab.index) == list(want.index)
    assert (tab["measured_ttft_ms"] == want["mean_ttft_ms"]).all()
    first = want.iloc[0]
    direct = stepsim.replay_point(
        Setup(
            get_model(first["model"]), get_gpu(first["gpu"]), get_profile("llm-d-modelservice"), calibrated
        ),
        layout_of(first),
        isl=int(first["isl"]),
        osl=int(first["osl"]),
        concurrency=int(first["concurrency"]),
        seeds=1,
        routing="stale-herd",
    )
    assert tab.iloc[0]["stale_herd_ttft_ms"] == pytest.approx(1e3 * direct.mean_ttft_s)
    direct_stale = stepsim.replay_measurements(want, calibrated, seeds=1, routing="stale")
    assert (tab["stale_ttft_ms"] == direct_stale["replay_ttft_ms"]).all()
    # a herding router piles the opening burst onto one pod: longer waits and less throughput
    assert (tab["stale_herd_ttft_ms"] > tab["balanced_ttft_ms"]).all()
    assert (tab["stale_herd_output_tok_s"] < tab["balanced_output_tok_s"]).all()
    with pytest.raises(ValueError, match="no loaded llm-d point"):
        replaystudy.stale_router_ttft(meas[meas["family"] != "disaggregated"], calibrated)


@pytest.mark.slow
def test_stale_router_sensitivity_has_one_row_per_router_interval_and_point(meas, fitted):
    tab = replaystudy.stale_router_sensitivity(meas, fitted.params, [0.05, 0.1], seeds=1)
    pts = meas[(meas["family"] == "disaggregated") & meas["concurrency"].isin([8, 64])]
    assert len(tab) == len(pts) * (1 + 2 * 2)
    assert tab.loc[tab["router"] == "balanced", "refresh_ms"].isna().all()
    assert set(tab.loc[tab["router"] != "balanced", "refresh_ms"]) == {50.0, 100.0}
    assert tab["ttft_error"].notna().sum() == 5 * 3  # three published loaded TTFTs per router and interval
    for routing, ms in (("stale", 100.0), ("stale-herd", 50.0)):  # each row is the replay at its own interval
        rows = tab[(tab["router"] == routing) & (tab["refresh_ms"] == ms)]
        direct = stepsim.replay_measurements(pts, fitted.params, seeds=1, routing=routing, refresh_s=ms / 1e3)
        assert np.allclose(
            rows["tok_error"].to_numpy(), (direct["replay_output_tok_s"] / pts["output_tok_s"] - 1)
        )
    shift = replaystudy.stale_router_throughput_shift(tab, 64)
    assert list(shift["router"]) == ["stale", "stale", "stale-herd", "stale-herd"]
    herd50 = tab[(tab["router"] == "stale-herd") & (tab["refresh_ms"] == 50.0) & (tab["concurrency"] == 64)]
    bal = tab[(tab["router"] == "balanced") & (tab["concurrency"] == 64)]
    by_hand = herd50.set_index("deployment")["tok_error"] - bal.set_index("deployment")["tok_error"]
    row = shift[(shift["router"] == "stale-herd") & (shift["refresh_ms"] == 50.0)].iloc[0]
    assert (row["min"], row["max"]) == pytest.approx((by_hand.min(), by_hand.max()))


@pytest.mark.slow
def test_stale_router_summary_and_opening_burst_share(meas, fitted):
    sens = replaystudy.stale_router_sensitivity(meas, fitted.params, [0.05], seeds=1)
    summ = replaystudy.stale_router_summary(sens)
    assert list(summ["router"]) == ["balanced", "stale", "stale-herd"]
    assert np.isnan(summ.loc[0, "refresh_ms"]) and list(summ["refresh_ms"][1:]) == [50.0, 50.0]
    at64 = sens[(sens["router"] == "stale-herd") & (sens["concurrency"] == 64)]["tok_error"]
    assert summ.loc[2, "tok min @64"] == pytest.approx(at64.min())
    assert summ.loc[2, "tok max @64"] == pytest.approx(at64.max())
    pub = sens[(sens["router"] == "balanced")].dropna(subset=["ttft_error"])
    assert sum(c.startswith("ttft ") for c in summ.columns) == len(pub)
    share = replaystudy.opening_burst_share(meas, fitted.params, "2P-TP4 + 1D-TP8", 64)
    assert 0 < share < 1
    with pytest.raises(ValueError, match="no wait"):  # a router compared with itself adds nothing
        replaystudy.opening_burst_share(meas, fitted.params, "2P-TP4 + 1D-TP8", 64, routing="balanced")


def test_stale_router_gap_closed_and_shortest_interval_on_a_small_summary():
    summ = pd.DataFrame(
        {
            "router": ["balanced", "stale", "stale", "stale-herd", "stale-herd", "stale-herd"],
            "refresh_ms": [np.nan, 50.0, 200.0, 10.0, 50.0, 100.0],
            "ttft a @8": [-0.6, -0.5, -0.3, -0.5, -0.25, 0.1],
        }
    )
    assert replaystudy.stale_router_gap_closed(summ, "stale", 200.0, "ttft a @8") == pytest.approx(0.5)
    assert replaystudy.stale_router_gap_closed(summ, "stale-herd", 100.0, "ttft a @8") == pytest.approx(5 / 6)
    assert replaystudy.shortest_interval_within(summ, "stale-herd", "ttft a @8", 0.3) == pytest.approx(
        (50.0, -0.25)
    )
    assert replaystudy.shortest_interval_within(summ, "stale-herd", "ttft a @8", 0.2) == pytest.approx(
        (100.0, 0.1)
    )
    assert replaystudy.shortest_interval_within(summ, "stale", "ttft a @8", 0.2) is None
    with pytest.raises(ValueError, match="one row for router 'stale' at interval 25"):
        replaystudy.stale_router_gap_closed(summ, "stale", 25.0, "ttft a @8")
    with pytest.raises(ValueError, match="no row for router 'balanced'"):
        replaystudy.shortest_interval_within(summ, "balanced", "ttft a @8", 0.2)
    with pytest.raises(ValueError, match="tolerance"):
        replaystudy.shortest_interval_within(summ, "stale", "ttft a @8", 0.0)
    no_miss = summ.assign(**{"ttft a @8": 0.0})
    with pytest.raises(ValueError, match="no miss to close"):
        replaystudy.stale_router_gap_closed(no_miss, "stale", 50.0, "ttft a @8")


@pytest.mark.slow
def test_router_throughput_by_load_summarises_every_llm_d_point(meas, fitted):
    tab = replaystudy.router_throughput_by_load(meas, fitted.params, seeds=1)
    llmd = meas[meas["family"] == "disaggregated"]
    assert set(tab["router"]) == {"balanced", "stale", "stale-herd"}
    assert tab.groupby("router")["n"].sum().eq(len(llmd)).all()
    one = tab[(tab["router"] == "balanced") & (tab["concurrency"] == 64)].iloc[0]
    pts = llmd[llmd["concurrency"] == 64]
    direct = stepsim.replay_measurements(pts, fitted.params, seeds=1, routing="balanced")
    err = direct["replay_output_tok_s"] / pts["output_tok_s"] - 1
    assert (one["median"], one["min"], one["max"]) == pytest.approx((err.median(), err.min(), err.max()))


def test_the_progress_callback_counts_model_evaluations_without_changing_the_fit(meas):
    sub = pd.concat([meas[meas["family"] == fam].head(3) for fam in ("TP4", "TP8")])
    one = ("bandwidth_efficiency",)
    calls = []
    counted = calibrate.fit(sub, priors={}, names=one, on_evaluation=lambda: calls.append(1))
    plain = calibrate.fit(sub, priors={}, names=one)
    assert len(calls) >= 2  # the start point and at least one finite-difference step
    assert counted.params == plain.params


def test_make_calibrate_on_a_broken_data_file_is_a_message_not_a_traceback(tmp_path, monkeypatch, capsys):
    copy = tmp_path / "data"
    shutil.copytree(paths.DATA_DIR, copy)
    monkeypatch.setenv(paths.DATA_ENV, str(copy))
    (copy / "gpus.csv").write_text("gpu,quantity\nH100,memory_gib\n", encoding="utf-8")
    stored = (copy / calibrate.CALIBRATED_FILE).read_bytes()
    assert calibrate.main() == 2
    err = capsys.readouterr().err
    assert "servingmodel calibrate: error:" in err and "gpus.csv" in err and "Traceback" not in err
    assert (copy / calibrate.CALIBRATED_FILE).read_bytes() == stored  # the stored fit is untouched
