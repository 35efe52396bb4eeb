#!/usr/bin/env python3
"""Write (or check) the MyST markdown twin of every chapter: book/NN_slug.ipynb -> book/md/NN_slug.md.

Usage (via the venv, as `make execute` and `make lint` do):
    .venv/bin/python tools/twins.py [--check] [NOTEBOOK ...]

The twin holds the chapter's cells (prose and code, no outputs) as jupytext's
``md:myst`` format, so that a review reads prose diffs instead of JSON. The
pairing is declared in ``jupytext.toml`` (for editors that open either file);
this script always writes the twin from the notebook, which stays the record.
``--check`` writes nothing and exits 1 listing the twins that are missing or
out of date.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jupytext

sys.path.insert(0, str(Path(__file__).resolve().parent))
from normalize_notebooks import ROOT, default_notebooks  # noqa: E402

TWIN_DIR = ROOT / "book" / "md"
# The same filters as jupytext.toml: no notebook metadata, only the cell metadata the book uses.
FORMAT = {"extension": ".md", "format_name": "myst"}
FILTERS = {"notebook_metadata_filter": "-all", "cell_metadata_filter": "tags,mystnb,-all"}


def twin_path(notebook: Path) -> Path:
    return TWIN_DIR / (notebook.stem + ".md")


def twin_text(notebook: Path) -> str:
    nb = jupytext.read(notebook)
    nb.metadata.setdefault("jupytext", {}).update(FILTERS)
    return jupytext.writes(nb, fmt=FORMAT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a twin is stale")
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: book/[0-9][0-9]_*.ipynb")
    args = parser.parse_args(argv)
    paths = [p.resolve() for p in args.notebooks] or default_notebooks()
    stale = []
    for nb in paths:
        text, path = twin_text(nb), twin_path(nb)
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            continue
        if args.check:
            stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    expected = {twin_path(nb).name for nb in default_notebooks()}
    orphans = sorted(p for p in TWIN_DIR.glob("*.md") if p.name not in expected) if TWIN_DIR.is_dir() else []
    if args.check and (stale or orphans):
        for p in stale:
            print(f"{p.relative_to(ROOT)} is missing or out of date: run `make execute` (or tools/twins.py)")
        for p in orphans:
            print(f"{p.relative_to(ROOT)} has no chapter notebook: delete it")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
