"""The `servingmodel` command: predictions equal the package's, every row is kept,
bad input names its row and column, unknown names list the known ones, and the
help documents every input column. No model number is written here: expected
values come from the package itself."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from servingmodel import cli, disagg, fullmodel, kvcache, specs, whatif
from servingmodel.calibrate import calibrated_params
from servingmodel.layout import Layout
from servingmodel.measurements import LAYOUT_COLUMNS, load_measurements
from servingmodel.setup import Features, Setup

PARAMS = calibrated_params()
PRED = [
    "pred_output_tok_s",
    "pred_tok_s_per_gpu",
    "pred_tok_s_per_user",
    "pred_ttft_ms",
    "pred_tpot_ms",
    "pred_max_batch",
]

HAPPY = """\
model,gpu,tp,replicas,isl,osl,concurrency,weight_dtype,kv_dtype,kind,p_tp,p_replicas,d_tp,d_replicas,profile,note
Llama-3.1-70B,H100,4,4,10000,1000,64,,,,,,,,,plain
meta-llama/Llama-3.1-70B-Instruct,NVIDIA-H100-80GB-HBM3,2,8,10000,1000,32,,,aggregated,,,,,llm-d-standalone,hf id
llama-3.1-70b,h200,8,2,1000,1000,128,fp8,fp8,,,,,,ideal,fp8
Llama-3.1-8B,B200,1,16,1000,10000,256,bf16,fp8,,,,,,,small model
Llama-3.1-70B,H100,,,10000,1000,32,,,disaggregated,4,1,4,3,,true P/D
Llama-3.1-70B,B200,4,1,10000,1000,,,,,,,,,,unlimited
Llama-3.1-70B,H100,2,1,100000,1000,8,,,,,,,,llm-d-modelservice,does not fit
"""


def run(tmp_path, text, *extra):
    src = tmp_path / "in.csv"
    src.write_text(text)
    out = tmp_path / "out.csv"
    code = cli.main(["predict", str(src), "-o", str(out), *extra])
    return code, out


def run_with_bad_cell(tmp_path, capsys, cols, good_rows, bad_row, column, value):
    """Run ``predict`` on ``good_rows`` then ``bad_row`` with ``column`` set to ``value`` (the file's row 4
    when two good rows precede it); assert exit 2 with nothing written and return standard error."""
    bad = list(bad_row)
    bad[cols.index(column)] = value
    code, out = run(tmp_path, "\n".join(",".join(r) for r in (cols, *good_rows, bad)) + "\n")
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert f"row {len(good_rows) + 2}, column {column!r}" in err
    return err


def read(path):
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def num(v):
    return float(v) if v != "" else math.nan


def test_predict_happy_path_matches_the_package(tmp_path):
    code, out = run(tmp_path, HAPPY)
    assert code == 0
    inp = read(tmp_path / "in.csv")
    got = read(out)
    assert len(got) == len(inp)
    # every input column unchanged, in order, then the outputs
    assert list(got.columns[: len(inp.columns)]) == list(inp.columns)
    pd.testing.assert_frame_equal(got[inp.columns], inp)
    assert set(cli.OUTPUT_COLUMNS) <= set(got.columns)
    for i, r in got.iterrows():
        model, gpu = specs.get_model(r["model"]), specs.get_gpu(r["gpu"])
        prof = specs.get_profile(r["profile"] or "llm-d-modelservice")
        wd, kd = r["weight_dtype"] or "bf16", r["kv_dtype"] or "bf16"
        if r["note"] == "does not fit":
            continue
        assert r["status"] == "ok", r["status"]
        c = float(r["concurrency_used"])
        if r["concurrency"]:
            assert c == float(r["concurrency"])
        if r["kind"] == "disaggregated":
            lay = Layout(
                "disaggregated",
                p_tp=int(r["p_tp"]),
                p_replicas=int(r["p_replicas"]),
                d_tp=int(r["d_tp"]),
                d_replicas=int(r["d_replicas"]),
            )
            p = disagg.predict_disaggregated(
                Setup(model, gpu, prof, PARAMS, weight_dtype=wd, kv_dtype=kd),
                lay,
                isl=int(r["isl"]),
                osl=int(r["osl"]),
                concurrency=c,
            )
        else:
            lay = Layout("aggregated", tp=int(r["tp"]), replicas=int(r["replicas"]))
            p = fullmodel.predict_aggregated(
                Setup(model, gpu, prof, PARAMS, weight_dtype=wd, kv_dtype=kd),
                lay,
                isl=int(r["isl"]),
                osl=int(r["osl"]),
                concurrency=c,
            )
        want = [
            p.output_tok_s,
            p.tok_s_per_gpu,
            p.tok_s_per_user,
            p.ttft_s * 1e3,
            p.tpot_s * 1e3,
            p.max_batch,
        ]
        if not r[
            "concurrency"
        ]:  # the long-run maximum throughput; latencies of the benchmark at concurrency_used
            top = float(
                whatif.long_run_ceiling(
                    whatif.setup_for(model, gpu, prof, PARAMS, weight_dtype=wd, kv_dtype=kd),
                    tp=int(r["tp"]),
                    replicas=int(r["replicas"]),
                    isl=int(r["isl"]),
                    osl=int(r["osl"]),
                )[0]
            )
            want[:3] = [top, top / lay.num_gpus, top / c]
        for col, w in zip(PRED, want, strict=True):
            assert num(r[col]) == pytest.approx(w, rel=1e-5), (i, col)


def test_empty_concurrency_is_the_kv_saturating_concurrency(tmp_path):
    code, out = run(tmp_path, HAPPY)
    assert code == 0
    r = read(out).set_index("note").loc["unlimited"]
    model, gpu, prof = (
        specs.get_model(r["model"]),
        specs.get_gpu(r["gpu"]),
        specs.get_profile("llm-d-modelservice"),
    )
    inst = fullmodel.make_instance(Setup(model, gpu, prof, PARAMS), tp=4, isl=10000, osl=1000)
    assert float(r["concurrency_used"]) == math.ceil(1 * float(inst.max_batch))
    assert num(r["pred_max_batch"]) == pytest.approx(float(inst.max_batch), rel=1e-5)
    # in steady state (no benchmark ramp and tail) it is the smallest concurrency at the ceiling:
    # more requests only queue (same throughput, longer TTFT), one fewer leaves the batch short
    c = float(r["concurrency_used"])
    lay = Layout("aggregated", tp=4, replicas=1)
    steady = Features(deployment=False)
    at, more, less = (
        fullmodel.predict_aggregated(
            Setup(model, gpu, prof, PARAMS), lay, isl=10000, osl=1000, concurrency=n, features=steady
        )
        for n in (c, 2 * c, c - 1)
    )
    assert more.output_tok_s == pytest.approx(at.output_tok_s, rel=1e-12)
    assert more.ttft_s > at.ttft_s
    assert less.output_tok_s < at.output_tok_s


def test_row_that_cannot_hold_the_model_is_kept_with_a_reason(tmp_path):
    code, out = run(tmp_path, HAPPY)
    assert code == 0
    got = read(out)
    r = got[got["note"] == "does not fit"].iloc[0]
    with pytest.raises(kvcache.InsufficientMemoryError) as e:
        fullmodel.predict_aggregated(
            Setup(
                specs.get_model("Llama-3.1-70B"),
                specs.get_gpu("H100"),
                specs.get_profile("llm-d-modelservice"),
                PARAMS,
            ),
            Layout("aggregated", tp=2, replicas=1),
            isl=100000,
            osl=1000,
            concurrency=8,
        )
    assert e.value  # the package refuses it too
    assert r["status"] != "ok" and "fewer than one request" in r["status"]
    assert all(r[c] == "" for c in PRED)


def test_weights_that_do_not_fit_are_a_status_not_an_error(tmp_path):
    text = "model,gpu,tp,isl,osl\nLlama-3.1-405B,H100,8,1000,1000\nLlama-3.1-70B,H100,8,1000,1000\n"
    code, out = run(tmp_path, text)
    assert code == 0
    got = read(out)
    assert len(got) == 2
    assert "does not fit" in got.loc[0, "status"] and "weights need" in got.loc[0, "status"]
    assert got.loc[1, "status"] == "ok"


def test_no_row_is_dropped_or_reordered(tmp_path):
    rows = ["model,gpu,tp,replicas,isl,osl,concurrency,id"]
    cases = [
        (1, 1, 10000),
        (2, 4, 100000),
        (4, "", 10000),
        (8, 64, 1000),
        (2, 1, 1000),
        (4, 1, 100000),
        (8, "", 10000),
    ] * 3
    for k, (tp, c, isl) in enumerate(cases):
        rows.append(f"Llama-3.1-70B,H100,{tp},1,{isl},1000,{c},{k}")
    code, out = run(tmp_path, "\n".join(rows) + "\n")
    assert code == 0
    got = read(out)
    assert got["id"].tolist() == [str(k) for k in range(len(cases))]
    model, gpu, prof = (
        specs.get_model("Llama-3.1-70B"),
        specs.get_gpu("H100"),
        specs.get_profile("llm-d-modelservice"),
    )
    for (tp, c, isl), status in zip(cases, got["status"], strict=True):
        try:
            fullmodel.predict_aggregated(
                Setup(model, gpu, prof, PARAMS),
                Layout("aggregated", tp=tp, replicas=1),
                isl=isl,
                osl=1000,
                concurrency=c or 1,
            )
            fits = True
        except kvcache.InsufficientMemoryError:
            fits = False
        assert (status == "ok") == fits, (tp, c, isl, status)
    assert (got["status"] == "ok").any() and (got["status"] != "ok").any()


def test_header_only_input_gives_header_only_output(tmp_path):
    code, out = run(tmp_path, "model,gpu,tp,isl,osl\n")
    assert code == 0
    got = read(out)
    assert len(got) == 0 and list(got.columns[:5]) == ["model", "gpu", "tp", "isl", "osl"]


@pytest.mark.parametrize(
    "column,value,known",
    [
        ("model", "Llama-9-1T", specs.model_names()),
        ("gpu", "H999", specs.gpu_names()),
        ("profile", "fancy", sorted(specs.profiles())),
    ],
)
def test_unknown_name_exits_2_and_lists_the_known_names(tmp_path, capsys, column, value, known):
    row = {
        "model": "Llama-3.1-70B",
        "gpu": "H100",
        "tp": "4",
        "isl": "1000",
        "osl": "100",
        "profile": "ideal",
    }
    text = ",".join(row) + "\n" + ",".join(row.values()) + "\n"
    row[column] = value
    text += ",".join(row.values()) + "\n"
    code, out = run(tmp_path, text)
    err = capsys.readouterr().err
    assert code == 2
    assert not out.exists()
    assert value in err and "row(s) 3" in err and repr(column) in err
    for name in known:
        assert name in err


@pytest.mark.parametrize(
    "column,value,fragment",
    [
        ("tp", "3", "must divide"),
        ("tp", "four", "not a number"),
        ("tp", "-4", "must be positive"),
        ("tp", "0", "must be positive"),
        ("tp", "2.5", "whole number"),
        ("isl", "", "empty"),
        ("osl", "1", "at least 2"),
        ("replicas", "0", "must be positive"),
        ("concurrency", "nan", "not finite"),
        ("concurrency", "1.5", "whole number"),
        ("weight_dtype", "int4", "unknown dtype"),
        ("kv_dtype", "fp4", "unknown dtype"),
        ("kind", "mixed", "unknown kind"),
    ],
)
def test_bad_value_names_row_and_column(tmp_path, capsys, column, value, fragment):
    cols = ["model", "gpu", "tp", "replicas", "isl", "osl", "concurrency", "weight_dtype", "kv_dtype", "kind"]
    good = ["Llama-3.1-70B", "H100", "4", "1", "1000", "100", "8", "bf16", "bf16", "aggregated"]
    err = run_with_bad_cell(tmp_path, capsys, cols, [good, good], good, column, value)
    assert fragment in err


def test_missing_required_column_is_named(tmp_path, capsys):
    code, _ = run(tmp_path, "model,gpu,tp,isl\nLlama-3.1-70B,H100,4,1000\n")
    err = capsys.readouterr().err
    assert code == 2
    assert "row 1, column 'osl'" in err and "required column missing" in err


def test_disaggregated_row_needs_its_pool_columns(tmp_path, capsys):
    text = (
        "model,gpu,tp,isl,osl,kind,p_tp,p_replicas,d_tp\nLlama-3.1-70B,H100,,10000,1000,disaggregated,4,1,\n"
    )
    code, _ = run(tmp_path, text)
    err = capsys.readouterr().err
    assert code == 2
    assert "row 2, column 'd_tp': empty" in err
    assert "row 2, column 'd_replicas'" in err


def test_a_disaggregated_row_with_huge_pools_converges_instead_of_hanging(tmp_path):
    # The prefill and link pools' waits use Erlang C, whose cost no longer grows with the pool
    # (closed form above 64 servers): per-GPU and per-user figures settle as pools grow, at a
    # fixed load per instance, instead of the row running for hours.
    head = "model,gpu,tp,isl,osl,kind,p_tp,p_replicas,d_tp,d_replicas,concurrency\n"
    rows = "".join(
        f"Llama-3.1-70B,H100,,1000,100,disaggregated,4,{n},4,{n},{10 * n}\n" for n in (10**5, 10**14)
    )
    code, out = run(tmp_path, head + rows)
    assert code == 0
    got = pd.read_csv(out)
    assert list(got["status"]) == ["ok", "ok"]
    for col in ("pred_tok_s_per_gpu", "pred_tok_s_per_user", "pred_ttft_ms"):
        assert got[col].iloc[1] == pytest.approx(got[col].iloc[0], rel=1e-3)


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    """The output of `servingmodel reproduce` (run once: it replays all 114 points)."""
    out = tmp_path_factory.mktemp("reproduce") / "rep.csv"
    assert cli.main(["reproduce", "-o", str(out)]) == 0
    return pd.read_csv(out)


@pytest.mark.slow
def test_reproduce_writes_every_measured_point(reproduced):
    got = reproduced
    meas = load_measurements()
    assert len(got) == len(meas) == 114
    need = ["kind", *LAYOUT_COLUMNS, "concurrency", *PRED, "output_tok_s"]
    assert set(need) <= set(got.columns)
    assert got["output_tok_s"].to_numpy() == pytest.approx(meas["output_tok_s"].to_numpy(float))
    want = fullmodel.predict_measurements(meas, PARAMS)
    assert got["pred_output_tok_s"].to_numpy() == pytest.approx(
        want["pred_output_tok_s"].to_numpy(float), rel=1e-5
    )


def test_help_documents_every_input_column_defaults_and_exit_codes(capsys):
    assert cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    for col in (*cli.REQUIRED, *cli.OPTIONAL):
        assert col in text, col
    for fragment in (
        "default 1",
        "bf16 (default)",
        "aggregated (default)",
        "llm-d-modelservice",
        "maximum-throughput",
        "ceil(replicas x max_batch)",
        "exit codes",
        "reproduce",
        "profiles",
        "--replay",
        "ttft_model",
    ):
        assert fragment in text, fragment
    assert cli.main(["predict", "--help"]) == 0
    sub = capsys.readouterr().out
    for col in (*cli.REQUIRED, *cli.OPTIONAL):
        assert col in sub, col


def test_profiles_lists_the_three_profiles(capsys):
    assert cli.main(["profiles"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(specs.profiles()) == 3
    for name, p in specs.profiles().items():
        assert any(line.startswith(f"{name}: {p.description}") for line in lines)


def test_usage_errors_exit_2():
    assert cli.main([]) == 2
    assert cli.main(["predict", "x.csv"]) == 2  # no -o
    assert cli.main(["frobnicate"]) == 2


def test_missing_input_file_exits_2(tmp_path, capsys):
    assert cli.main(["predict", str(tmp_path / "nope.csv"), "-o", str(tmp_path / "o.csv")]) == 2
    assert "not found" in capsys.readouterr().err


def console_script() -> str:
    exe = Path(sys.executable).parent / "servingmodel"
    return str(exe) if exe.exists() else shutil.which("servingmodel")


@pytest.mark.slow
@pytest.mark.slow
def test_installed_console_script(tmp_path):
    exe = console_script()
    assert exe, "the servingmodel console script is not installed (make venv)"
    src = tmp_path / "in.csv"
    src.write_text(
        "model,gpu,tp,replicas,isl,osl,concurrency\nLlama-3.1-70B,H100,4,4,10000,1000,64\n"
        "Llama-3.1-70B,H100,2,1,10000,1000,8\n"
    )
    out = tmp_path / "out.csv"
    proc = subprocess.run([exe, "predict", str(src), "-o", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    got = read(out)
    assert got["status"].tolist()[0] == "ok" and got["status"].tolist()[1] != "ok"
    bad = subprocess.run(
        [exe, "predict", str(src).replace("in.csv", "missing.csv"), "-o", str(out)],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "not found" in bad.stderr
    src.write_text("model,gpu,tp,isl,osl\nLlama-3.1-70B,H7,4,1000,100\n")
    unk = subprocess.run([exe, "predict", str(src), "-o", "-"], capture_output=True, text=True)
    assert unk.returncode == 2 and "H100-SXM" in unk.stderr and unk.stdout == ""


@pytest.mark.slow
def test_reproduce_takes_the_ttft_from_the_step_replay(reproduced):
    from servingmodel import stepsim

    got = reproduced
    meas = load_measurements()
    sample = meas.iloc[::12]  # every 12th point, both kinds of pod: replaying all 114 again costs seconds
    want = stepsim.replay_measurements(sample, PARAMS)["replay_ttft_ms"].to_numpy(float)
    assert got.loc[sample.index, "pred_ttft_ms"].to_numpy() == pytest.approx(want, rel=1e-9)


def test_predict_replay_flag_replaces_the_ttft_of_rows_it_can_replay(tmp_path):
    src = tmp_path / "in.csv"
    src.write_text(
        "model,gpu,tp,replicas,isl,osl,concurrency,kind,p_tp,p_replicas,d_tp,d_replicas\n"
        "Llama-3.1-70B,H100,4,1,10000,1000,8,,,,,\n"
        "Llama-3.1-70B,H100,4,1,10000,1000,,,,,,\n"
        "Llama-3.1-70B,H100,,,10000,1000,8,disaggregated,4,1,4,1\n"
    )
    plain, replayed = tmp_path / "a.csv", tmp_path / "b.csv"
    assert cli.main(["predict", str(src), "-o", str(plain)]) == 0
    assert cli.main(["predict", str(src), "-o", str(replayed), "--replay"]) == 0
    a, b = pd.read_csv(plain), pd.read_csv(replayed)
    assert "ttft_model" not in a.columns
    assert b["ttft_model"].tolist() == ["replay", "mean field", "mean field"]
    assert b.loc[0, "pred_ttft_ms"] > a.loc[0, "pred_ttft_ms"]  # the replay sees the straddled chunks
    assert b.loc[1:, "pred_ttft_ms"].tolist() == a.loc[1:, "pred_ttft_ms"].tolist()
    assert b["pred_output_tok_s"].tolist() == a["pred_output_tok_s"].tolist()


# ---- review fixes: context window, ragged rows, node size, exact whole numbers, the maximum-throughput row,
# ---- ignored columns, header matching, unreadable input, known names, row numbers


def test_requests_longer_than_the_context_window_get_a_status_not_a_prediction(tmp_path):
    model = min((specs.get_model(n) for n in specs.model_names()), key=lambda m: m.max_context)
    osl = 100
    text = "model,gpu,tp,isl,osl,concurrency\n" + "".join(
        f"{model.name},H100,8,{isl},{osl},{c}\n"
        for isl, c in (
            (model.max_context - osl, 4),
            (model.max_context - osl + 1, 4),
            (model.max_context, ""),
        )
    )
    code, out = run(tmp_path, text)
    assert code == 0
    got = read(out)
    assert len(got) == 3
    assert got.loc[0, "status"] == "ok"  # exactly the context window is fine
    for k in (1, 2):
        st = got.loc[k, "status"]
        assert (
            "max_context" in st and str(model.max_context) in st and str(int(got.loc[k, "isl"]) + osl) in st
        )
        assert all(got.loc[k, c] == "" for c in ("concurrency_used", *PRED))


@pytest.mark.parametrize(
    "line,fields",
    [
        ("row-A,Llama-3.1-70B,H100,4,10000,1000", 6),  # an extra field (pandas took it as the index)
        ("Llama-3.1-70B,H100,4,10000", 4),  # a missing field
        ("Llama-3.1-70B,H100,4,10000,1000,", 6),  # a trailing comma
    ],
)
def test_rows_with_more_or_fewer_fields_than_the_header_are_refused(tmp_path, capsys, line, fields):
    text = f"model,gpu,tp,isl,osl\nLlama-3.1-70B,H100,4,10000,1000\n{line}\n"
    code, out = run(tmp_path, text)
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert "in.csv, row 3:" in err and f"{fields} fields" in err and "header (row 1) has 5" in err


@pytest.mark.parametrize("column", ["tp", "p_tp", "d_tp"])
def test_tensor_parallel_group_larger_than_one_node_is_a_bad_value(tmp_path, capsys, column):
    gpu, model = specs.get_gpu("H100"), specs.get_model("Llama-3.1-70B")
    big = 2 * gpu.gpus_per_node
    assert model.num_heads % big == 0  # only the node size is wrong
    lay = {"tp": gpu.gpus_per_node, "p_tp": gpu.gpus_per_node, "d_tp": gpu.gpus_per_node}
    lay[column] = big
    kind = "aggregated" if column == "tp" else "disaggregated"
    text = (
        "model,gpu,tp,isl,osl,kind,p_tp,p_replicas,d_tp,d_replicas\n"
        f"{model.name},H100,{gpu.gpus_per_node},1000,100,,,,,\n"
        f"{model.name},H100,{lay['tp']},1000,100,{kind},{lay['p_tp']},1,{lay['d_tp']},1\n"
    )
    code, out = run(tmp_path, text)
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert f"row 3, column {column!r}" in err and "gpus_per_node" in err
    assert f"the {gpu.gpus_per_node} GPUs of one {gpu.name} node" in err and str(big) in err


@pytest.mark.parametrize(
    "column,value",
    [
        ("concurrency", "1e19"),
        ("concurrency", str(cli.MAX_WHOLE + 1)),  # a float would silently round it to 2**53
        ("replicas", "1e19"),
        ("isl", "1e300"),
        ("osl", str(10**30)),
    ],
)
def test_whole_numbers_beyond_exact_floats_are_refused(tmp_path, capsys, column, value):
    row = {
        "model": "Llama-3.1-70B",
        "gpu": "H100",
        "tp": "4",
        "replicas": "1",
        "isl": "1000",
        "osl": "100",
        "concurrency": "8",
    }
    row[column] = value
    code, out = run(tmp_path, ",".join(row) + "\n" + ",".join(row.values()) + "\n")
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert f"row 2, column {column!r}" in err and "2**53" in err


def test_largest_exact_concurrency_is_kept_exactly(tmp_path, recwarn):
    c = cli.MAX_WHOLE - 1
    code, out = run(
        tmp_path, f"model,gpu,tp,replicas,isl,osl,concurrency\nLlama-3.1-70B,H100,4,3,1000,100,{c}\n"
    )
    assert code == 0
    got = read(out)
    assert got.loc[0, "status"] == "ok"
    assert int(got.loc[0, "concurrency_used"]) == c  # not rounded, not overflowed
    assert float(got.loc[0, "pred_output_tok_s"]) > 0 and float(got.loc[0, "pred_tok_s_per_user"]) > 0
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


@pytest.mark.parametrize("kind,column", [("aggregated", "replicas"), ("disaggregated", "d_replicas")])
def test_empty_concurrency_refuses_instances_whose_saturating_concurrency_is_not_exact(
    tmp_path, capsys, kind, column
):
    too_many = cli.MAX_WHOLE // int(specs.constant("max_num_seqs")) + 1
    reps = {"replicas": 1, "d_replicas": 1, column: too_many}
    text = (
        "model,gpu,tp,replicas,isl,osl,concurrency,kind,p_tp,p_replicas,d_tp,d_replicas\n"
        f"Llama-3.1-70B,H100,4,{reps['replicas']},1000,100,8,{kind},4,1,4,{reps['d_replicas']}\n"
        f"Llama-3.1-70B,H100,4,{reps['replicas']},1000,100,,{kind},4,1,4,{reps['d_replicas']}\n"
    )
    code, out = run(tmp_path, text)
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert f"row 3, column {column!r}" in err and "max_num_seqs" in err and "row 2" not in err


# deployments for the maximum-throughput test: (model, gpu, profile, dtype, isl, osl, layout); the standalone
# profile
# routes at random, the disaggregated layouts are prefill-bound and decode-bound
DEPLOYMENTS = [
    ("Llama-3.1-70B", "H100", "llm-d-modelservice", "bf16", 10000, 1000, dict(tp=4, replicas=1)),
    ("Llama-3.1-70B", "H100", "llm-d-standalone", "bf16", 10000, 1000, dict(tp=4, replicas=4)),
    ("Llama-3.1-70B", "H200", "llm-d-modelservice", "fp8", 1000, 1000, dict(tp=8, replicas=2)),
    ("Llama-3.1-70B", "B200", "ideal", "bf16", 10000, 1000, dict(tp=2, replicas=8)),
    ("Llama-3.1-8B", "A100", "llm-d-standalone", "bf16", 1000, 1000, dict(tp=1, replicas=2)),
    (
        "Llama-3.1-70B",
        "H100",
        "llm-d-modelservice",
        "bf16",
        10000,
        1000,
        dict(kind="disaggregated", p_tp=4, p_replicas=1, d_tp=4, d_replicas=3),
    ),
    (
        "Llama-3.1-70B",
        "H100",
        "llm-d-modelservice",
        "bf16",
        10000,
        1000,
        dict(kind="disaggregated", p_tp=4, p_replicas=3, d_tp=4, d_replicas=1),
    ),
]
EXPLICIT = (1, 8, 64, 256, 1024, 4096)
HUGE = 10**6  # far beyond every KV batch: only for point-by-point (balanced and disaggregated) deployments


def test_empty_concurrency_is_the_maximum_throughput_of_every_deployment(tmp_path):
    cols = [
        "model",
        "gpu",
        "profile",
        "weight_dtype",
        "kv_dtype",
        "isl",
        "osl",
        "kind",
        "tp",
        "replicas",
        "p_tp",
        "p_replicas",
        "d_tp",
        "d_replicas",
        "concurrency",
        "dep",
    ]

    def line(k, c):
        m, g, prof, dt, isl, osl, lay = DEPLOYMENTS[k]
        vals = dict(
            model=m,
            gpu=g,
            profile=prof,
            weight_dtype=dt,
            kv_dtype=dt,
            isl=isl,
            osl=osl,
            concurrency=c,
            dep=k,
            **lay,
        )
        return ",".join(str(vals.get(c, "")) for c in cols)

    code, out = run(
        tmp_path, ",".join(cols) + "\n" + "\n".join(line(k, "") for k in range(len(DEPLOYMENTS))) + "\n"
    )
    assert code == 0
    empty = read(out)
    assert (empty["status"] == "ok").all(), empty["status"].tolist()
    rows = []
    for k, r in empty.iterrows():
        cs = [*EXPLICIT, int(r["concurrency_used"])]
        if DEPLOYMENTS[k][2] != "llm-d-standalone" or DEPLOYMENTS[k][6].get("replicas", 1) == 1:
            cs.append(HUGE)
        rows += [line(k, c) for c in cs]
    src = tmp_path / "explicit.csv"
    src.write_text(",".join(cols) + "\n" + "\n".join(rows) + "\n")
    assert cli.main(["predict", str(src), "-o", str(tmp_path / "explicit_out.csv")]) == 0
    explicit = read(tmp_path / "explicit_out.csv")
    assert (explicit["status"] == "ok").all()
    for k, r in empty.iterrows():
        mine = explicit[explicit["dep"] == str(k)]
        top = float(r["pred_output_tok_s"])
        best = mine["pred_output_tok_s"].astype(float).max()
        assert top >= best * (1 - 1e-5), (DEPLOYMENTS[k], top, best)  # the output has 6 significant digits
        assert float(r["pred_tok_s_per_gpu"]) >= mine["pred_tok_s_per_gpu"].astype(float).max() * (1 - 1e-5)
        # the latencies are those of the benchmark at concurrency_used; per user = total / concurrency_used
        at = mine[mine["concurrency"] == r["concurrency_used"]].iloc[0]
        for c in ("pred_ttft_ms", "pred_tpot_ms", "pred_max_batch"):
            assert num(r[c]) == pytest.approx(num(at[c]), rel=1e-5), (k, c)
        assert num(r["pred_tok_s_per_user"]) == pytest.approx(top / float(r["concurrency_used"]), rel=1e-5)
        assert top > float(
            at["pred_output_tok_s"]
        )  # the benchmark's finite run stays below the long-run value


@pytest.mark.parametrize(
    "kind,column,value",
    [
        ("aggregated", "p_tp", "abc"),
        ("aggregated", "p_replicas", "-1"),
        ("aggregated", "d_tp", "2.5"),
        ("aggregated", "d_replicas", "0"),
        ("disaggregated", "tp", "abc"),
        ("disaggregated", "replicas", "-1"),
    ],
)
def test_ignored_columns_must_still_hold_valid_values(tmp_path, capsys, kind, column, value):
    cols = [
        "model",
        "gpu",
        "tp",
        "replicas",
        "isl",
        "osl",
        "kind",
        "p_tp",
        "p_replicas",
        "d_tp",
        "d_replicas",
    ]
    good = {
        "aggregated": ["Llama-3.1-70B", "H100", "4", "1", "1000", "100", "aggregated", "", "", "", ""],
        "disaggregated": [
            "Llama-3.1-70B",
            "H100",
            "",
            "",
            "1000",
            "100",
            "disaggregated",
            "4",
            "1",
            "4",
            "1",
        ],
    }
    err = run_with_bad_cell(
        tmp_path, capsys, cols, [good["aggregated"], good["disaggregated"]], good[kind], column, value
    )
    assert "ignored" in err
    assert "row 2" not in err and "row 3" not in err  # empty ignored cells stay fine


def test_header_names_match_case_insensitively_and_are_written_as_given(tmp_path):
    plain = "model,gpu,tp,isl,osl,concurrency,note\nLlama-3.1-70B,H100,4,10000,1000,8,x\n"
    fancy = "\ufeff Model ,GPU,Tp , ISL,OSL,Concurrency,Note\nLlama-3.1-70B,H100,4,10000,1000,8,x\n"
    code_a, out_a = run(tmp_path, plain)
    a = read(out_a)
    code_b, out_b = run(tmp_path, fancy)
    b = read(out_b)
    assert code_a == code_b == 0
    assert list(b.columns[:7]) == [" Model ", "GPU", "Tp ", " ISL", "OSL", "Concurrency", "Note"]
    assert b.loc[0, "status"] == "ok"
    assert b[list(cli.OUTPUT_COLUMNS)].equals(a[list(cli.OUTPUT_COLUMNS)])


@pytest.mark.parametrize(
    "header,row,name,where",
    [
        ("model,gpu,tp,isl,osl,TP", "Llama-3.1-70B,H100,4,1000,100,4", "tp", "columns 3, 6: 'tp', 'TP'"),
        (
            "model,gpu,tp,isl,osl,note, Note",
            "Llama-3.1-70B,H100,4,1000,100,a,b",
            "note",
            "columns 6, 7: 'note', ' Note'",
        ),
    ],
)
def test_duplicate_header_names_are_refused(tmp_path, capsys, header, row, name, where):
    code, out = run(tmp_path, f"{header}\n{row}\n")
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert f"row 1: column name {name!r} appears 2 times ({where})" in err


@pytest.mark.parametrize("column,replay", [("Status", False), ("ttft_model", True)])
def test_input_columns_named_like_an_output_column_are_refused(tmp_path, capsys, column, replay):
    code, out = run(
        tmp_path,
        f"model,gpu,tp,isl,osl,{column}\nLlama-3.1-70B,H100,4,1000,100,x\n",
        *(["--replay"] if replay else []),
    )
    assert code == 2 and not out.exists()
    assert "already has output column" in capsys.readouterr().err


def test_input_path_that_is_a_directory_exits_2_naming_it(tmp_path, capsys):
    assert cli.main(["predict", str(tmp_path), "-o", str(tmp_path / "o.csv")]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "directory" in err and "Errno" not in err
    assert not (tmp_path / "o.csv").exists()


def test_standard_input_is_read(tmp_path, monkeypatch):
    import io

    text = "model,gpu,tp,isl,osl,concurrency\nLlama-3.1-70B,H100,4,10000,1000,8\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
    assert cli.main(["predict", "-", "-o", str(tmp_path / "o.csv")]) == 0
    _, out = run(tmp_path, text)
    pd.testing.assert_frame_equal(read(tmp_path / "o.csv"), read(out))


def test_predict_help_lists_the_known_names_and_the_new_rules(capsys):
    assert cli.main(["predict", "--help"]) == 0
    text = capsys.readouterr().out
    for name in (*specs.model_names(), *specs.gpu_names(), *specs.profiles()):
        assert name in text, name
    for fragment in (
        "max_context",
        "gpus_per_node",
        "case-insensitive",
        "2**53",
        "long-run maximum",
        "pred_tok_s_per_user is pred_output_tok_s / concurrency_used",
        "need not be consistent",
    ):
        assert fragment in " ".join(text.split()), fragment


def test_blank_lines_are_skipped_and_rows_are_numbered_by_line(tmp_path, capsys):
    text = "model,gpu,tp,isl,osl\n\nLlama-3.1-70B,H100,4,1000,100\n\n\nLlama-3.1-70B,H100,3,1000,100\n"
    code, _ = run(tmp_path, text)
    err = capsys.readouterr().err
    assert code == 2 and "row 6, column 'tp'" in err  # the line a text editor shows
    code, out = run(tmp_path, text.replace(",3,", ",8,"))
    assert code == 0 and len(read(out)) == 2
