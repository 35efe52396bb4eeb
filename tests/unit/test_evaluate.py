"""Error metrics shared by every chapter, and the benchmark's per-user definition."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from servingmodel import evaluate as ev
from servingmodel.measurements import load_measurements


def test_relative_errors_signed():
    np.testing.assert_allclose(ev.relative_errors([11, 9, 5], [10, 10, 5]), [0.1, -0.1, 0.0])


@pytest.mark.parametrize(
    "pred, meas",
    [
        ([1, 2], [1]),
        ([], []),
        ([1.0], [0.0]),
        ([1.0], [-2.0]),
        ([np.nan], [1.0]),
        ([1.0], [np.inf]),
    ],
)
def test_relative_errors_rejects_bad_inputs(pred, meas):
    with pytest.raises(ValueError):
        ev.relative_errors(pred, meas)


def test_abs_error_stats_median_and_p90():
    rel = np.linspace(-1.0, 0.0, 11)  # absolute values 0.0 .. 1.0
    med, p90 = ev.abs_error_stats(rel)
    assert med == pytest.approx(0.5) and p90 == pytest.approx(0.9)
    with pytest.raises(ValueError):
        ev.abs_error_stats([])


def frame():
    return pd.DataFrame(
        {
            "deployment": ["a", "a", "b", "b"],
            "family": ["TP4", "TP4", "TP2", "TP2"],
            "concurrency": [1, 8, 1, 8],
            "tok_s_per_gpu": [10.0, 20.0, 10.0, 40.0],
            "tok_s_per_user": [40.0, 10.0, 20.0, 10.0],
        },
        index=[7, 8, 9, 10],
    )


def pred_scaled(df, factors):
    out = df[["deployment", "concurrency"]].copy()
    out["pred_tok_s_per_gpu"] = df["tok_s_per_gpu"] * factors
    out["pred_tok_s_per_user"] = df["tok_s_per_user"] * factors
    return out


def test_perfect_prediction_has_zero_error():
    df = frame()
    s = ev.error_summary(pred_scaled(df, 1.0), df)
    assert (s[["median", "p90"]] == 0).all().all()


def test_summary_is_tidy_with_all_then_families_in_book_order():
    df = frame()
    s = ev.error_summary(pred_scaled(df, np.array([1.1, 0.8, 1.0, 1.3])), df)
    assert list(s.columns) == ["group", "quantity", "n", "median", "p90"]
    assert s["group"].tolist() == ["all", "all", "TP2", "TP2", "TP4", "TP4"]
    assert s["quantity"].tolist() == ["tok_s_per_gpu", "tok_s_per_user"] * 3
    assert s["n"].tolist() == [4, 4, 2, 2, 2, 2]
    tp4 = s[(s["group"] == "TP4") & (s["quantity"] == "tok_s_per_gpu")].iloc[0]
    assert tp4["median"] == pytest.approx(0.15) and tp4["p90"] == pytest.approx(0.19)


def test_per_gpu_and_per_user_errors_coincide_when_both_come_from_one_output():
    """Both metrics are output throughput over a fixed count, so relative errors are equal."""
    df = frame()
    s = ev.error_summary(pred_scaled(df, np.array([1.1, 0.8, 1.0, 1.3])), df)
    gpu = s[s["quantity"] == "tok_s_per_gpu"][["median", "p90"]].to_numpy()
    user = s[s["quantity"] == "tok_s_per_user"][["median", "p90"]].to_numpy()
    np.testing.assert_allclose(gpu, user)


def test_summary_by_other_column():
    df = frame()
    s = ev.error_summary(pred_scaled(df, 1.0), df, by="deployment")
    assert s["group"].tolist() == ["all", "all", "a", "a", "b", "b"]
    with pytest.raises(ValueError, match="group by"):
        ev.error_summary(pred_scaled(df, 1.0), df, by="nope")


def test_misaligned_or_incomplete_predictions_are_refused():
    df = frame()
    pred = pred_scaled(df, 1.0)
    with pytest.raises(ValueError, match="index"):
        ev.error_summary(pred.reset_index(drop=True), df)
    shuffled = pred.copy()
    shuffled["concurrency"] = [8, 1, 1, 8]
    with pytest.raises(ValueError, match="concurrency"):
        ev.error_summary(shuffled, df)
    with pytest.raises(ValueError, match="pred_tok_s_per_user"):
        ev.error_summary(pred.drop(columns=["pred_tok_s_per_user"]), df)


def test_error_row():
    df = frame()
    row = ev.error_row(pred_scaled(df, np.array([1.1, 0.8, 1.0, 1.3])), df, "toy")
    assert list(row.columns) == ["model", "n", "gpu_median", "gpu_p90", "user_median", "user_p90"]
    assert row.loc[0, "model"] == "toy" and row.loc[0, "n"] == 4
    assert row.loc[0, "gpu_median"] == pytest.approx(0.15)


def test_percent_signs_and_zero():
    assert [ev.percent(v, sign=True) for v in (0.05, -0.05, -0.001, 0.001)] == ["+5", "-5", "0", "0"]
    assert ev.percent(0.1234, 1) == "12.3"


def test_format_percent_writes_no_negative_zero():
    out = ev.format_percent(pd.DataFrame({"a": [-0.001, -0.006, 0.0004]}), ["a"], digits=0)
    assert list(out["a"]) == ["0%", "-1%", "0%"]


def test_format_percent():
    out = ev.format_percent(pd.DataFrame({"a": [0.1234, 0.5], "b": [1, 2]}), ["a"])
    assert out["a"].tolist() == ["12.3%", "50.0%"] and out["b"].tolist() == [1, 2]


def test_per_user_from_latencies_matches_the_benchmark_at_concurrency_one():
    df = load_measurements()
    row = df[(df["deployment"] == "TP4 x 1") & (df["concurrency"] == 1)].iloc[0]
    got = ev.per_user_from_latencies(row["osl"], row["mean_ttft_ms"] / 1e3, row["mean_tpot_ms"] / 1e3)
    assert got == pytest.approx(row["tok_s_per_user"], rel=1e-4)
    assert ev.per_user_from_latencies(1000, 0.0, 0.02) == pytest.approx(1000 / (999 * 0.02))


@pytest.mark.parametrize("osl, ttft, tpot", [(0, 1.0, 0.02), (1000, -1.0, 0.02), (1000, 1.0, 0.0)])
def test_per_user_from_latencies_rejects_bad_inputs(osl, ttft, tpot):
    with pytest.raises(ValueError):
        ev.per_user_from_latencies(osl, ttft, tpot)


def test_median_errors_by_deployment_by_hand():
    import pandas as pd

    from servingmodel.evaluate import median_errors_by_deployment

    meas = pd.DataFrame({"deployment": ["a", "a", "b"], "tok_s_per_gpu": [10.0, 20.0, 40.0]})
    pred = pd.DataFrame({"pred_tok_s_per_gpu": [11.0, 20.0, 30.0]})
    t = median_errors_by_deployment({"m": pred}, meas)
    assert list(t.index) == ["a", "b", "all (median)", "all (p90)"]
    assert t.loc["a", "m"] == pytest.approx(0.05)
    assert t.loc["b", "m"] == pytest.approx(0.25)
    assert t.loc["all (median)", "m"] == pytest.approx(0.1)
