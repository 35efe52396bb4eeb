"""Proof that `make test` notices when a figure changes.

nbval does not compare image/png outputs, so a figure could silently drift
from the committed one. The book's convention closes that hole: every figure
cell is followed by a cell tagged ``remove-cell`` that calls
``servingmodel.style.figure_summary(fig)``, which prints a rounded text
summary of the plotted data; nbval compares that text.

This test copies the book, the package and the data to a temporary
directory, changes one model input in the copy, and runs nbval on the copied
chapter with the copy's ``src`` first on PYTHONPATH (the package finds
``data/`` relative to its own file, so the copy reads the copy's data). The
run must fail, in a figure_summary cell, with an output mismatch; the same
run on an unmodified copy must pass.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CHAPTER = "book/02_crude_model.ipynb"
# The perturbed input: the H100's HBM bandwidth in data/gpus.csv (long
# format: gpu,quantity,value,unit,source). The crude model's single-user speed
# is bandwidth / weight bytes, so halving it moves the chapter's curves.
PERTURB_CSV = "data/gpus.csv"
PERTURB_ROW = {"gpu": "H100-SXM", "quantity": "hbm_bandwidth_tb_s"}  # selects one row
PERTURB_FIELD = "value"
PERTURB_FACTOR = 0.5

COPIED = ("book", "src", "data", "_config.yml", "_toc.yml", "pyproject.toml", "conftest.py")
NBVAL_TIMEOUT = 600  # seconds for one nbval run of the chapter

pytestmark = pytest.mark.slow


def scale_csv_field(path: Path, key: dict[str, str], field: str, factor: float) -> tuple[str, str]:
    """Multiply one numeric field of one row of a CSV file in place.

    ``key`` maps column -> value and must select exactly one row. Other rows,
    other fields, lines starting with '#' and blank lines are kept verbatim.
    Returns the (old, new) text of the field.
    """
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    header_at = next(i for i, line in enumerate(lines) if line.strip() and not line.startswith("#"))
    header = next(csv.reader([lines[header_at]]))
    for name in [*key, field]:
        assert name in header, f"{path.name} has no column {name!r}; columns: {header}"
    hits = []
    for i in range(header_at + 1, len(lines)):
        if not lines[i].strip() or lines[i].startswith("#"):
            continue
        row = next(csv.reader([lines[i]]))
        if all(row[header.index(col)] == val for col, val in key.items()):
            hits.append((i, row))
    assert len(hits) == 1, f"{path.name}: {len(hits)} rows match {key}, need exactly 1"
    i, row = hits[0]
    old = row[header.index(field)]
    new = repr(float(old) * factor)
    row[header.index(field)] = new
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(row)
    ending = lines[i][len(lines[i].rstrip("\r\n")) :]
    lines[i] = out.getvalue() + ending
    path.write_text("".join(lines), encoding="utf-8")
    return old, new


def make_copy(dest: Path) -> Path:
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(
                src,
                dest / name,
                ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", ".ipynb_checkpoints"),
            )
        elif src.exists():
            shutil.copy2(src, dest / name)
    return dest


def copy_env(copy: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(copy / "src")] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    env.pop("PYTEST_ADDOPTS", None)
    return env


def run_nbval(copy: Path) -> tuple[int, dict[int, str], str]:
    """nbval on the copied chapter: (exit code, {code cell number: failure text}, log)."""
    report = copy / "nbval-report.xml"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--color=no",
            "--nbval",
            "--nbval-current-env",
            f"--junitxml={report}",
            str(copy / CHAPTER),
        ],
        cwd=copy,
        env=copy_env(copy),
        capture_output=True,
        text=True,
        timeout=NBVAL_TIMEOUT,
    )
    log = proc.stdout + proc.stderr
    failures = {}
    if report.exists():
        for case in ET.parse(report).getroot().iter("testcase"):
            for bad in list(case.iter("failure")) + list(case.iter("error")):
                name = case.get("name", "")
                assert name.startswith("Cell "), f"unexpected test case {name!r}\n{log}"
                failures[int(name.split()[1])] = (bad.get("message") or "") + "\n" + (bad.text or "")
    return proc.returncode, failures, log


def code_cell_sources(notebook: Path) -> list[str]:
    """Sources of the code cells, numbered as nbval numbers its 'Cell N' items."""
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


@pytest.fixture(scope="module")
def chapter_ready():
    missing = [p for p in (CHAPTER, PERTURB_CSV) if not (ROOT / p).exists()]
    assert not missing, f"the figure-regression proof needs {missing}"
    sources = code_cell_sources(ROOT / CHAPTER)
    assert any("figure_summary(" in s for s in sources), (
        f"{CHAPTER} has no cell calling figure_summary(fig): every figure cell must be "
        "followed by a remove-cell tagged cell that calls it"
    )


def test_copy_imports_its_own_package(chapter_ready, tmp_path):
    copy = make_copy(tmp_path)
    out = subprocess.run(
        [sys.executable, "-c", "import servingmodel; print(servingmodel.__file__)"],
        cwd=copy / "book",
        env=copy_env(copy),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(out).resolve().is_relative_to(copy.resolve()), (
        f"with PYTHONPATH={copy / 'src'} the kernel would import servingmodel from {out}"
    )


def test_unperturbed_copy_passes(chapter_ready, tmp_path):
    copy = make_copy(tmp_path)
    code, failures, log = run_nbval(copy)
    assert code == 0 and not failures, f"nbval fails on an unmodified copy of {CHAPTER}:\n{log}"


def test_perturbed_input_fails_in_figure_summary_cell(chapter_ready, tmp_path):
    copy = make_copy(tmp_path)
    old, new = scale_csv_field(copy / PERTURB_CSV, PERTURB_ROW, PERTURB_FIELD, PERTURB_FACTOR)
    assert old != new
    code, failures, log = run_nbval(copy)
    assert code != 0, (
        f"nbval passed although {PERTURB_CSV} {PERTURB_ROW} {PERTURB_FIELD} went {old} -> {new}:\n{log}"
    )
    sources = code_cell_sources(copy / CHAPTER)
    crashed = {n: t for n, t in failures.items() if "Cell outputs differ" not in t}
    assert not crashed, (
        f"the perturbation made cells raise instead of changing their output: {sorted(crashed)}\n{log}"
    )
    in_summary = [n for n in failures if "figure_summary(" in sources[n]]
    assert in_summary, (
        f"nbval failed only in cells {sorted(failures)}, none of which calls figure_summary; "
        f"the figure change itself went unnoticed:\n{log}"
    )
