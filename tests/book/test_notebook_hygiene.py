"""Committed notebooks carry no volatile metadata, and their outputs are a clean run.

What is checked here, for every ``book/*.ipynb`` (chapters and the template):

* ``tools/normalize_notebooks.py --check`` passes: no editor, widget or
  timing metadata, the nbformat layout, and (for chapters) execution counts
  1..n;
* a chapter's non-empty code cells carry execution counts 1..n in order,
  i.e. it was run once, top to bottom, in a fresh kernel (``make execute``);
  the template is committed unexecuted (no counts, no outputs) or, if
  someone runs it, under the same rule;
* no output is an error or a stderr stream (a warning in the book), unless
  the cell is tagged ``raises-exception``.

That the outputs are *current* (they are what the code, package and data
produce today) is not checked here: `make test` runs pytest with ``--nbval``
on every chapter, which re-executes each one and fails on any text output that
differs, including the figure summaries (tests/test_nbval_catches_figure_changes.py).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))
TEMPLATE = ROOT / "book" / "_template.ipynb"


def code_cells(nb: dict) -> list[tuple[int, dict]]:
    return [
        (i, c)
        for i, c in enumerate(nb["cells"])
        if c["cell_type"] == "code"
        and "".join(c["source"]).strip()
        and "skip-execution" not in c.get("metadata", {}).get("tags", [])
    ]


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks in book/"


def test_normaliser_check_passes_on_every_notebook():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "normalize_notebooks.py"), "--check", *map(str, NOTEBOOKS)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, (
        "tools/normalize_notebooks.py --check failed (run `make execute NB=...`):\n"
        + proc.stdout
        + proc.stderr
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_execution_counts_run_one_to_n(path):
    cells = code_cells(load(path))
    counts = [c.get("execution_count") for _, c in cells]
    if path == TEMPLATE and all(n is None for n in counts):
        assert not any(c.get("outputs") for _, c in cells), "the template has outputs but no execution counts"
        return
    assert counts == list(range(1, len(counts) + 1)), (
        f"{path.name}: execution counts {counts} are not 1..{len(counts)}; "
        f"run `make execute NB=book/{path.name}`"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_error_or_stderr_outputs(path):
    bad = []
    for index, cell in code_cells(load(path)):
        if "raises-exception" in cell.get("metadata", {}).get("tags", []):
            continue
        for out in cell.get("outputs", []):
            if out["output_type"] == "error":
                bad.append(f"cell {index}: {out.get('ename')}: {out.get('evalue')}")
            elif out["output_type"] == "stream" and out.get("name") == "stderr":
                text = "".join(out.get("text", ""))
                bad.append(f"cell {index}: stderr: {text.strip()[:200]}")
    assert not bad, f"{path.name} has error or stderr outputs:\n  " + "\n  ".join(bad)


def test_normaliser_merges_split_streams_only():
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import normalize_notebooks
    finally:
        sys.path.pop(0)
    outs = [
        {"output_type": "stream", "name": "stdout", "text": ["a\n", "b"]},
        {"output_type": "stream", "name": "stdout", "text": "\n"},
        {"output_type": "stream", "name": "stderr", "text": "warn\n"},
        {"output_type": "stream", "name": "stdout", "text": "c\n"},
    ]
    merged = normalize_notebooks._coalesce_streams([dict(o) for o in outs])
    assert [o["name"] for o in merged] == ["stdout", "stderr", "stdout"]
    assert "".join(merged[0]["text"]) == "a\nb\n"


HELPER_FREE = [p for p in NOTEBOOKS if p != TEMPLATE]


def helpers_defined(source: str) -> list[str]:
    """Functions, classes and named lambdas a cell defines (IPython magics are skipped)."""
    code = "\n".join("pass" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())
    found = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found.append(f"{node.name} (line {node.lineno})")
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Lambda):
            names = ", ".join(ast.unparse(t) for t in node.targets)
            found.append(f"{names} = lambda (line {node.lineno})")
    return found


@pytest.mark.parametrize("path", HELPER_FREE, ids=lambda p: p.name)
def test_chapters_define_no_helpers(path):
    """A chapter only calls the package: no function, class or named lambda of its own."""
    bad = [f"cell {i}: {h}" for i, c in code_cells(load(path)) for h in helpers_defined("".join(c["source"]))]
    assert not bad, f"{path.name} defines helpers (move them into src/servingmodel):\n  " + "\n  ".join(bad)


def test_helper_check_finds_each_kind():
    src = (
        "def f():\n    pass\nclass C:\n    pass\ng = lambda x: x\n"
        "%matplotlib inline\nh = sorted(key=lambda v: v)\n"
    )
    assert [h.split(" ")[0] for h in helpers_defined(src)] == ["f", "C", "g"]
