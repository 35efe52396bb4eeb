"""The command's files: nothing is lost, merged or overwritten that the user did not ask for.

Each case once exited 0 with a wrong or truncated result (an unclosed quote
swallowing every later row, ``-o`` overwriting the input) or printed a
traceback (a garbled data file); now it must be a clear error naming the file,
the row and the problem, or a correct answer.
"""

from __future__ import annotations

import os
import shutil

import pandas as pd
import pytest

from servingmodel import cli, paths

HEADER = "model,gpu,tp,isl,osl,concurrency,note"
ROW = "Llama-3.1-70B,H100,4,10000,1000,8,{}"


def write(tmp_path, text, name="in.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_an_unclosed_quote_is_an_error_naming_the_row_where_it_opened(tmp_path, capsys):
    text = (
        "\n".join([HEADER, ROW.format("fine"), ROW.format('"never closed'), ROW.format("swallowed")]) + "\n"
    )
    src, out = write(tmp_path, text), tmp_path / "out.csv"
    assert cli.main(["predict", str(src), "-o", str(out)]) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "row 3" in err and "quote" in err, err
    assert not out.exists(), "nothing is written when the input is refused"
    assert "Traceback" not in err


def test_a_closed_quoted_field_with_a_comma_and_a_newline_is_one_cell(tmp_path):
    text = "\n".join([HEADER, ROW.format('"a, b\nc"'), ROW.format("plain")]) + "\n"
    src, out = write(tmp_path, text), tmp_path / "out.csv"
    assert cli.main(["predict", str(src), "-o", str(out)]) == cli.EXIT_OK
    got = pd.read_csv(out)
    assert list(got["note"]) == ["a, b\nc", "plain"]


@pytest.mark.parametrize("via_link", [False, True])
def test_output_onto_the_input_is_refused_and_the_input_kept(tmp_path, capsys, via_link):
    text = "\n".join([HEADER, ROW.format("x")]) + "\n"
    src = write(tmp_path, text)
    target = src
    if via_link:
        target = tmp_path / "link.csv"
        os.symlink(src, target)
    assert cli.main(["predict", str(src), "-o", str(target)]) == cli.EXIT_BAD_INPUT
    assert src.read_text(encoding="utf-8") == text
    assert "is the input" in capsys.readouterr().err


def test_a_failed_write_leaves_the_previous_output_whole(tmp_path, monkeypatch):
    src, out = write(tmp_path, "\n".join([HEADER, ROW.format("x")]) + "\n"), tmp_path / "out.csv"
    out.write_text("previous output\n", encoding="utf-8")

    def half_written(df, float_format):
        yield "model,gp"  # then the disk fills up
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cli, "_render_csv", half_written)
    assert cli.main(["predict", str(src), "-o", str(out)]) == cli.EXIT_FAILURE
    assert out.read_text(encoding="utf-8") == "previous output\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "out.csv"], "no temporary file is left"


def test_an_output_path_below_a_regular_file_says_so(tmp_path, capsys):
    src = write(tmp_path, "\n".join([HEADER, ROW.format("x")]) + "\n")
    blocker = write(tmp_path, "a file, not a folder\n", "blocker")
    assert cli.main(["predict", str(src), "-o", str(blocker / "out.csv")]) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "blocker" in err and "not a folder" in err, err


def test_an_unreadable_input_exits_2_as_the_help_says(tmp_path, capsys, monkeypatch):
    src = write(tmp_path, "\n".join([HEADER, ROW.format("x")]) + "\n")
    real = type(src).read_bytes

    def denied(self):
        if self == src:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(type(src), "read_bytes", denied)
    assert cli.main(["predict", str(src), "-o", str(tmp_path / "out.csv")]) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "in.csv" in err and "Permission denied" in err


@pytest.fixture
def data_copy(tmp_path, monkeypatch):
    """A copy of data/ that the package reads instead (SERVINGMODEL_DATA), to corrupt."""
    copy = tmp_path / "data"
    shutil.copytree(paths.DATA_DIR, copy)
    monkeypatch.setenv(paths.DATA_ENV, str(copy))
    return copy


@pytest.mark.parametrize("name", ["gpus.csv", "models.csv", "profiles.csv", "parameters.csv"])
@pytest.mark.parametrize("content", ["", '\x00\x01garbled,,\n"', "gpu,quantity\nH100,memory_gib\n"])
def test_a_garbled_data_file_is_named_and_help_still_works(data_copy, capsys, tmp_path, name, content):
    (data_copy / name).write_text(content, encoding="utf-8")
    assert cli.main(["--help"]) == cli.EXIT_OK
    capsys.readouterr()
    src = write(tmp_path, "\n".join([HEADER, ROW.format("x")]) + "\n")
    code = cli.main(["predict", str(src), "-o", str(tmp_path / "out.csv")])
    err = capsys.readouterr().err
    assert code == cli.EXIT_BAD_INPUT, err
    assert name in err and "Traceback" not in err, err
    assert cli.main(["profiles"]) in (cli.EXIT_OK, cli.EXIT_BAD_INPUT)
    assert "Traceback" not in capsys.readouterr().err


def test_reproduce_on_a_broken_measurement_file_names_it(data_copy, capsys, tmp_path):
    meas = next(data_copy.glob("llmd_*.csv"))
    meas.write_text(meas.read_text(encoding="utf-8").replace("TP4 x 1", "TP4 x one", 1), encoding="utf-8")
    assert cli.main(["reproduce", "-o", str(tmp_path / "rep.csv")]) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert meas.name in err and "row" in err and "Traceback" not in err, err


def test_a_row_that_does_not_fit_says_what_would_make_it_fit(tmp_path):
    """The benchmark's TP2 pods under the default profile (utilisation 0.9): the status names the
    utilisation that holds one request and the profile that has it; TP1 names the TP that fits."""
    text = "\n".join(
        [
            "model,gpu,tp,isl,osl,concurrency",
            "Llama-3.1-70B,H100,2,10000,1000,8",
            "Llama-3.1-70B,H100,1,10000,1000,8",
        ]
    )
    src, out = write(tmp_path, text + "\n"), tmp_path / "out.csv"
    assert cli.main(["predict", str(src), "-o", str(out)]) == cli.EXIT_OK
    status = pd.read_csv(out)["status"].tolist()
    assert "gpu_memory_utilization >= 0.9" in status[0] and "llm-d-standalone" in status[0], status[0]
    assert "TP4 holds one request" in status[1], status[1]


def test_a_gpu_memory_utilization_column_overrides_the_profile_per_row(tmp_path, capsys):
    text = "\n".join(
        [
            "model,gpu,tp,isl,osl,concurrency,gpu_memory_utilization",
            "Llama-3.1-70B,H100,2,10000,1000,8,",
            "Llama-3.1-70B,H100,2,10000,1000,8,0.95",
        ]
    )
    src, out = write(tmp_path, text + "\n"), tmp_path / "out.csv"
    assert cli.main(["predict", str(src), "-o", str(out)]) == cli.EXIT_OK
    got = pd.read_csv(out)
    assert got["status"].tolist()[1] == "ok" and got["status"].tolist()[0] != "ok"
    bad = write(
        tmp_path, "model,gpu,tp,isl,osl,gpu_memory_utilization\nLlama-3.1-70B,H100,4,100,100,1.5\n", "b.csv"
    )
    assert cli.main(["predict", str(bad), "-o", str(tmp_path / "b_out.csv")]) == cli.EXIT_BAD_INPUT
    assert "row 2, column 'gpu_memory_utilization'" in capsys.readouterr().err


def test_replay_is_limited_to_rows_it_can_replay_in_about_a_second(tmp_path):
    text = "model,gpu,tp,replicas,isl,osl,concurrency\n" + "".join(
        f"Llama-3.1-8B,H100,1,1,100,100,{c}\n" for c in (8, cli.REPLAY_MAX_CONCURRENCY + 1)
    )
    src, out = write(tmp_path, text), tmp_path / "out.csv"
    assert cli.main(["predict", str(src), "-o", str(out), "--replay"]) == cli.EXIT_OK
    source = pd.read_csv(out)["ttft_model"].tolist()
    assert source[0] == "replay"
    assert source[1].startswith("mean field") and str(cli.REPLAY_MAX_CONCURRENCY) in source[1]
