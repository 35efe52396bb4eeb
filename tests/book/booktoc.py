"""The book's table of contents as the tests see it (shared by the HTML and browser checks)."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def toc_docs(toc_path: Path = ROOT / "_toc.yml") -> list[str]:
    """Every document of the toc in reading order (root first, then each ``file`` and ``glob``), without
    suffix.
    """
    toc = yaml.safe_load(toc_path.read_text(encoding="utf-8"))
    files = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            if "glob" in node:
                files.extend(
                    str(p.relative_to(ROOT).with_suffix(""))
                    for p in sorted(ROOT.glob(node["glob"]))
                    if p.suffix in (".ipynb", ".md")
                )
            for key, value in node.items():
                if key not in ("file", "glob"):
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk({k: v for k, v in toc.items() if k != "root"})
    return [str(Path(f).with_suffix("")) if Path(f).suffix in (".ipynb", ".md") else f for f in files]
