#!/usr/bin/env python3
"""Normalise committed notebooks so that only meaningful changes reach git.

Usage:
    python tools/normalize_notebooks.py [--check] [NOTEBOOK ...]

Without arguments it processes every chapter, ``book/[0-9][0-9]_*.ipynb``.

What it changes:
* notebook metadata: keeps only ``kernelspec`` (set to the project's
  deterministic ``python3`` spec), ``language_info.name`` and a notebook-level
  ``mystnb`` block (per-file jupyter-book options), dropping widget state,
  jupytext/vscode/IDE keys, versions and the like;
* cell metadata: keeps only ``tags`` (``remove-cell``, ``hide-input``,
  ``raises-exception``, ``nbval-*`` ...) and ``mystnb`` (figure captions and
  names); drops ``execution`` timings, ``collapsed``, ``scrolled``, ...;
* consecutive stream outputs of one stream are merged (their split depends on
  timing; nbval merges them too before comparing);
* text is written the way nbformat writes it (sorted keys, indent 1,
  multi-line strings split into lists of lines).

What it keeps: execution counts and outputs, which nbval compares.

What it checks: a chapter must have been run top to bottom in a fresh kernel
(``make execute``), i.e. the non-empty code cells carry execution counts
1..n in order. That cannot be repaired by rewriting metadata, so it is
reported as an error in both modes.

``--check`` writes nothing and exits 1 listing the notebooks that would
change or that fail the execution-order check.

Only the standard library is used, so it runs with any Python 3.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHAPTER_RE = re.compile(r"^\d\d_.+\.ipynb$")

KERNELSPEC = {
    "display_name": "Python 3 (ipykernel)",
    "language": "python",
    "name": "python3",
}
KEEP_CELL_METADATA = ("tags", "mystnb")
# Multi-line string fields that nbformat stores as lists of lines.
SPLIT_MIMES = {"application/javascript", "image/svg+xml"}


def default_notebooks() -> list[Path]:
    return sorted(p for p in (ROOT / "book").glob("*.ipynb") if CHAPTER_RE.match(p.name))


def _split(value):
    if isinstance(value, str):
        return value.splitlines(True)
    return value


def _split_bundle(bundle: dict) -> None:
    for key, value in list(bundle.items()):
        if key.startswith("text/") or key in SPLIT_MIMES:
            bundle[key] = _split(value)


def _coalesce_streams(outputs: list) -> list:
    """Merge consecutive stream outputs of the same stream (as nbval does before comparing).

    How a kernel splits printed text into messages depends on timing, so the
    split itself is noise.
    """
    merged: list = []
    for out in outputs:
        prev = merged[-1] if merged else None
        if (
            out.get("output_type") == "stream"
            and prev is not None
            and prev.get("output_type") == "stream"
            and prev.get("name") == out.get("name")
        ):
            prev["text"] = "".join(prev["text"]) + "".join(out.get("text", ""))
        else:
            merged.append(out)
    return merged


def normalize(nb: dict) -> dict:
    """Return a normalised deep copy of the notebook JSON ``nb``."""
    nb = copy.deepcopy(nb)

    old = nb.get("metadata", {})
    meta: dict = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}}
    if "mystnb" in old:
        meta["mystnb"] = old["mystnb"]
    nb["metadata"] = meta

    for cell in nb.get("cells", []):
        cmeta = cell.get("metadata", {})
        cell["metadata"] = {k: cmeta[k] for k in KEEP_CELL_METADATA if cmeta.get(k)}
        cell["source"] = _split(cell.get("source", ""))
        for attachment in cell.get("attachments", {}).values():
            _split_bundle(attachment)
        if cell.get("cell_type") != "code":
            cell.pop("outputs", None)
            cell.pop("execution_count", None)
            continue
        cell["outputs"] = _coalesce_streams(cell.get("outputs", []))
        for out in cell.get("outputs", []):
            otype = out.get("output_type")
            if otype == "stream":
                out["text"] = _split(out.get("text", ""))
            elif otype in ("display_data", "execute_result"):
                _split_bundle(out.get("data", {}))
                out.setdefault("metadata", {})
                # Widget views point at kernel-side state that is not saved.
                out["data"].pop("application/vnd.jupyter.widget-view+json", None)
    return nb


def dumps(nb: dict) -> str:
    """Serialise exactly as nbformat does."""
    return json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def execution_problems(nb: dict, require_executed: bool) -> list[str]:
    """Problems with the execution record (not fixable by normalising)."""
    counts = []
    problems = []
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        source = "".join(cell.get("source", ""))
        tags = cell.get("metadata", {}).get("tags", [])
        if not source.strip() or "skip-execution" in tags:
            continue
        count = cell.get("execution_count")
        if count is None and cell.get("outputs"):
            problems.append(f"cell {i} has outputs but no execution_count")
        counts.append(count)
    if not counts:
        return problems
    if all(c is None for c in counts):
        if require_executed:
            problems.append("chapter was never executed (run `make execute`)")
        return problems
    expected = list(range(1, len(counts) + 1))
    if counts != expected:
        problems.append(
            "code cells were not run once, top to bottom, in a fresh kernel: "
            f"execution counts {counts} != {expected} (run `make execute`)"
        )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if any notebook would change or is mis-executed",
    )
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: book/[0-9][0-9]_*.ipynb")
    args = parser.parse_args(argv)

    paths = args.notebooks or default_notebooks()
    would_change: list[Path] = []
    bad: list[tuple[Path, list[str]]] = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        nb = json.loads(text)
        new = dumps(normalize(nb))
        problems = execution_problems(nb, require_executed=bool(CHAPTER_RE.match(path.name)))
        if problems:
            bad.append((path, problems))
        if new != text:
            would_change.append(path)
            if not args.check:
                path.write_text(new, encoding="utf-8")
                print(f"normalised {path}")

    status = 0
    if args.check and would_change:
        status = 1
        print(
            "notebooks not normalised (run `make execute`, or "
            "`python tools/normalize_notebooks.py FILE` if only metadata changed):"
        )
        for path in would_change:
            print(f"  {path}")
    if bad:
        status = 1
        for path, problems in bad:
            for problem in problems:
                print(f"{path}: {problem}")
    return status


if __name__ == "__main__":
    sys.exit(main())
