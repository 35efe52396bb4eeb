"""The strict measurement loader: the real file loads, and each kind of bad
file is rejected with the file, row and column named in the message."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from servingmodel import measurements
from servingmodel.measurements import (
    MEASUREMENTS_FILE,
    MeasurementError,
    deployment_order,
    load_measurements,
)

FILE = MEASUREMENTS_FILE.name
ROW = 5  # 0-based data row edited in the bad files: TP2 x 1 at concurrency 256
CSV_ROW = ROW + 2  # the header is row 1


def raw() -> pd.DataFrame:
    return pd.read_csv(MEASUREMENTS_FILE, dtype=str, keep_default_na=False)


def write(tmp_path, frame: pd.DataFrame):
    path = tmp_path / FILE
    frame.to_csv(path, index=False)
    return path


def expect_error(path, *fragments):
    with pytest.raises(MeasurementError) as info:
        load_measurements(path)
    msg = str(info.value)
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in {msg!r}"
    return msg


def test_real_file_has_114_points_in_19_deployments():
    df = load_measurements()
    assert len(df) == 114
    assert df["deployment"].nunique() == 19
    assert df.groupby("family")["deployment"].nunique().to_dict() == {
        "TP2": 8,
        "TP4": 4,
        "TP8": 2,
        "disaggregated": 5,
    }
    assert (df.groupby("deployment").size() == 6).all()


def test_unchanged_copy_loads_identically(tmp_path):
    path = write(tmp_path, raw())
    pd.testing.assert_frame_equal(load_measurements(path), load_measurements())


def test_deployment_order_is_tp2_tp4_tp8_then_disaggregated():
    order = deployment_order(load_measurements())
    assert order[:14] == [f"TP2 x {n}" for n in range(1, 9)] + [f"TP4 x {n}" for n in range(1, 5)] + [
        "TP8 x 1",
        "TP8 x 2",
    ]
    assert len(order) == 19 and all("P-TP" in d for d in order[14:])


def test_missing_column(tmp_path):
    path = write(tmp_path, raw().drop(columns=["tok_s_per_user"]))
    expect_error(path, FILE, "missing column", "tok_s_per_user")


def test_extra_column(tmp_path):
    frame = raw()
    frame["notes"] = "x"
    expect_error(write(tmp_path, frame), FILE, "unexpected column", "notes")


@pytest.mark.parametrize(
    "column, value, fragment",
    [
        ("output_tok_s", "fast", "is not a number"),
        ("concurrency", "1e", "is not a number"),
        ("output_tok_s", "nan", "not finite"),
        ("tok_s_per_gpu", "0", "must be positive"),
        ("concurrency", "-256", "must be positive"),
        ("mean_ttft_ms", "-3", "must be positive"),
        ("concurrency", "25.5", "whole number"),
        ("kind", "mixed", "unknown kind"),
        ("p_tp", "4", "must be empty"),
        ("model", "", "empty"),
    ],
)
def test_bad_value_names_file_row_and_column(tmp_path, column, value, fragment):
    frame = raw()
    frame.loc[ROW, column] = value
    expect_error(write(tmp_path, frame), FILE, f"row {CSV_ROW}", repr(column), fragment)


def test_gpu_count_must_match_tp_times_replicas(tmp_path):
    frame = raw()
    frame.loc[ROW, "num_gpus"] = "4"
    frame.loc[ROW, "tok_s_per_gpu"] = str(float(frame.loc[ROW, "output_tok_s"]) / 4)
    expect_error(write(tmp_path, frame), FILE, f"row {CSV_ROW}", "'num_gpus'", "does not match")


def test_gpu_count_of_disaggregated_row_is_checked(tmp_path):
    frame = raw()
    row = int(frame.index[frame["kind"] == "disaggregated"][0])
    frame.loc[row, "d_replicas"] = "2"
    expect_error(write(tmp_path, frame), FILE, f"row {row + 2}", "'num_gpus'")


@pytest.mark.parametrize("column", ["tok_s_per_gpu", "tok_s_per_user"])
def test_derived_throughput_inconsistent_beyond_tolerance(tmp_path, column):
    frame = raw()
    frame.loc[ROW, column] = repr(float(frame.loc[ROW, column]) * (1 + 1e-5))
    expect_error(write(tmp_path, frame), FILE, f"row {CSV_ROW}", repr(column), "relative tolerance")


@pytest.mark.parametrize("column", ["tok_s_per_gpu", "tok_s_per_user"])
def test_derived_throughput_within_tolerance_is_accepted(tmp_path, column):
    frame = raw()
    frame.loc[ROW, column] = repr(float(frame.loc[ROW, column]) * (1 + 1e-7))
    assert len(load_measurements(write(tmp_path, frame))) == 114


def test_wrong_deployment_label(tmp_path):
    frame = raw()
    frame.loc[ROW, "deployment"] = "TP2 x 9"
    msg = expect_error(write(tmp_path, frame), FILE, f"row {CSV_ROW}", "'deployment'", "TP2 x 1")
    assert re.search(r"TP2 x 9.*should be.*TP2 x 1", msg)


def test_wrong_family(tmp_path):
    frame = raw()
    frame.loc[ROW, "family"] = "TP4"
    expect_error(write(tmp_path, frame), FILE, f"row {CSV_ROW}", "'family'")


def test_duplicate_point(tmp_path):
    frame = raw()
    frame = pd.concat([frame, frame.iloc[[ROW]]], ignore_index=True)
    expect_error(write(tmp_path, frame), FILE, "duplicate")


def test_missing_file(tmp_path):
    with pytest.raises(MeasurementError, match="not found"):
        load_measurements(tmp_path / "absent.csv")


def test_header_only_file(tmp_path):
    expect_error(write(tmp_path, raw().iloc[:0]), FILE, "no data rows")


def test_bend_concurrency_and_table_by_hand():
    rows = []
    for dep, fam, reps, ys in (
        ("TP4 x 1", "TP4", 1, [10, 50, 95, 100]),
        ("TP4 x 2", "TP4", 2, [10, 20, 91, 100]),
        ("TP4 x 3", "TP4", 3, [10, 95, 99, 100]),
    ):
        for c, y in zip((1, 8, 32, 64), ys, strict=True):
            rows.append(
                {
                    "deployment": dep,
                    "family": fam,
                    "kind": "aggregated",
                    "replicas": reps,
                    "concurrency": c,
                    "tok_s_per_gpu": float(y),
                }
            )
    df = pd.DataFrame(rows)
    assert measurements.bend_concurrency(df, "TP4 x 1") == 32  # 95 >= 0.9 x 100
    assert measurements.bend_concurrency(df, "TP4 x 1", share=0.5) == 8
    tab = measurements.bend_table(df).set_index("deployment")
    assert tab["bend"].tolist() == [32, 32, 8]
    assert tab["later_than_single"].tolist() == [False, False, False]
    assert tab["earlier_than_fewer"].tolist() == [False, False, True]
    with pytest.raises(ValueError, match="unknown deployment"):
        measurements.bend_concurrency(df, "TP8 x 1")
    with pytest.raises(ValueError, match="share"):
        measurements.bend_concurrency(df, "TP4 x 1", share=0)


def test_spread_between_by_hand():
    df = pd.DataFrame(
        {
            "deployment": ["a", "b", "a", "b", "a"],
            "concurrency": [1, 1, 8, 8, 64],
            "output_tok_s": [10.0, 12.0, 100.0, 90.0, 500.0],
        }
    )
    s = measurements.spread_between(df, ["a", "b"])
    assert list(s.index) == [1, 8]  # 64 has only one of them
    assert s.loc[1] == pytest.approx(0.2) and s.loc[8] == pytest.approx(100 / 90 - 1)
    with pytest.raises(ValueError, match="no measurement"):
        measurements.spread_between(df, ["a", "c"])
    with pytest.raises(ValueError, match="at least two"):
        measurements.spread_between(df, ["a"])
