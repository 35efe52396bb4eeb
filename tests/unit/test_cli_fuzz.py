"""Hypothesis drives `servingmodel predict` with random valid and malformed CSV files, in-process.

Whatever the file holds, the command never raises (no traceback reaches the
user); it exits 0 only with exactly one output row per input row, in order,
the input cells unchanged, and otherwise exits 2 with a message that names the
row (and, for a bad cell, the column) or the file. A second property checks
that the column-wise fast parser and the row-by-row parser give the same
records on valid files.
"""

from __future__ import annotations

import csv
import io

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from servingmodel import cli

COLUMNS = [*cli.REQUIRED, *cli.OPTIONAL, "note"]  # every column the command reads, and one it copies
VALID = {
    "model": ["Llama-3.1-70B", "llama-3.1-8b", "meta-llama/Llama-3.1-70B-Instruct"],
    "gpu": ["H100", "h200", "NVIDIA-H100-80GB-HBM3", "B200"],
    "tp": ["1", "2", "4", "8", "4.0"],
    "replicas": ["", "1", "2", "3"],
    "isl": ["1", "128", "10000"],
    "osl": ["2", "100", "1000"],
    "concurrency": ["", "1", "8", "64"],
    "weight_dtype": ["", "bf16", "fp8"],
    "kv_dtype": ["", "BF16", "fp8"],
    "kind": ["", "aggregated"],
    "p_tp": [""],
    "p_replicas": [""],
    "d_tp": [""],
    "d_replicas": [""],
    "profile": ["", "ideal", "llm-d-standalone"],
    "gpu_memory_utilization": ["", "0.95", "0.9"],
    "note": ["", "a note", "comma, inside", "line\nbreak", 'say "hi"'],
}
NASTY = [
    "",
    "-1",
    "0",
    "1e308",
    "nan",
    "inf",
    "3.5",
    "9007199254740993",
    "٣",
    "x",
    '"',
    "12abc",
    " 4 ",
    "0x10",
]


@st.composite
def csv_files(draw, malformed: bool):
    header = list(COLUMNS)
    if malformed and draw(st.integers(0, 3)) == 0:
        header = draw(st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=len(COLUMNS)))
    nasty = malformed and draw(st.integers(0, 2)) == 0  # a third of the malformed files get bad cells
    rows = []
    for _ in range(draw(st.integers(0 if malformed else 1, 6))):
        row = []
        for c in header:
            pool = VALID[c] + (NASTY if nasty and draw(st.integers(0, 9)) == 0 else [])
            row.append(draw(st.sampled_from(pool)))
        if malformed and draw(st.integers(0, 19)) == 0:
            row = row[: draw(st.integers(0, len(row)))]  # a ragged row
        rows.append(row)
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header, *rows])
    text = buf.getvalue()
    if malformed:
        choice = draw(st.integers(0, 14))
        if choice == 0:
            text = text.replace('"', "", 1)  # break a quoted field
        elif choice == 1:
            return text.encode("latin-1", "replace") + b"\xff\xfe"  # not UTF-8
        elif choice == 2:
            text = "\ufeff" + text  # a byte-order mark
        elif choice == 3:
            text = text + "\n\n"  # trailing blank lines
    return text.encode("utf-8")


def run(tmp_path, data: bytes):
    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    if out.exists():
        out.unlink()
    src.write_bytes(data)
    code = cli.main(["predict", str(src), "-o", str(out)])
    return code, out


FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(data=csv_files(malformed=True))
def test_predict_never_raises_and_keeps_every_row_or_names_the_problem(tmp_path, capsys, data):
    code, out = run(tmp_path, data)  # an exception here is a traceback for the user
    err = capsys.readouterr().err
    if code == cli.EXIT_OK:
        text = data.decode("utf-8-sig")
        given_rows = [r for r in csv.reader(io.StringIO(text, newline="")) if r and any(c.strip() for c in r)]
        got = list(csv.reader(io.StringIO(out.read_text(encoding="utf-8"), newline="")))
        assert len(got) == len(given_rows), "one output row per input row, and the header"
        width = len(given_rows[0])
        for want, row in zip(given_rows, got, strict=True):
            assert row[:width] == want, "the input cells come through unchanged, in order"
    else:
        assert code == cli.EXIT_BAD_INPUT, err
        assert not out.exists(), "nothing is written when the input is refused"
        assert err.startswith("servingmodel: error: "), err
        assert "row" in err or "file" in err or "UTF-8" in err, err


@FUZZ
@given(data=csv_files(malformed=False))
def test_the_fast_parser_and_the_careful_parser_agree(tmp_path, data):
    raw, lines = cli._read_input(str(write(tmp_path, data)), "in.csv")
    cols = cli._column_positions(raw, "in.csv", lines[0], cli.OUTPUT_COLUMNS)
    fast = cli._parse_fast(raw, cols, lines)
    try:
        careful = _careful(raw, lines)
    except cli.InputError:
        assert fast is None, "the fast parser accepted a file the careful parser refuses"
        return
    assert fast is None or fast == careful


def write(tmp_path, data):
    path = tmp_path / "in.csv"
    path.write_bytes(data)
    return path


def _careful(raw: pd.DataFrame, lines):
    """The row-by-row parser alone (the fast path switched off)."""
    real = cli._parse_fast
    try:
        cli._parse_fast = lambda *a: None
        return cli.parse_rows(raw, name="in.csv", lines=lines)
    finally:
        cli._parse_fast = real
