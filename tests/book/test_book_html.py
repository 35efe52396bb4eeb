"""The built book contains every chapter and every figure.

jupyter-book can exit 0 and still leave pages or images out (a chapter
missing from the build, an output removed by a stray tag, a PNG shadowed by
another mime type). These tests read what `make book` wrote to _build/html
and compare it with _toc.yml and the committed notebooks.

`make test` builds the book first; running pytest alone needs `make book`.
"""

from __future__ import annotations

import base64
import hashlib
import json
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from booktoc import toc_docs

ROOT = Path(__file__).resolve().parents[2]
HTML = ROOT / "_build" / "html"

# myst-nb's HTML mime priority (myst_nb.core.render.base_render_priority):
# a PNG is shown only if none of these is in the same output.
SHADOWS_PNG = (
    "application/vnd.jupyter.widget-view+json",
    "application/javascript",
    "text/html",
    "image/svg+xml",
)
REMOVE_CELL = {"remove-cell", "remove_cell"}
REMOVE_OUTPUT = {"remove-output", "remove_output"}


def source_of(doc: str) -> Path:
    for suffix in (".ipynb", ".md"):
        path = ROOT / f"{doc}{suffix}"
        if path.exists():
            return path
    raise AssertionError(f"_toc.yml lists {doc!r} but neither {doc}.ipynb nor {doc}.md exists")


def expected_pngs(notebook: Path) -> list[tuple[int, str]]:
    """(cell index, sha256) of each image/png output the page must show.

    myst-nb names an image file after the sha256 of its bytes, so the hash
    identifies the <img> that must show it.
    """
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    expected = []
    for index, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code" or not "".join(cell["source"]).strip():
            continue
        tags = set(cell.get("metadata", {}).get("tags", []))
        mystnb = cell.get("metadata", {}).get("mystnb", {})
        if tags & REMOVE_CELL:
            continue
        if tags & REMOVE_OUTPUT or mystnb.get("remove_code_outputs"):
            continue
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "image/png" not in data:
                continue
            shadows = [m for m in SHADOWS_PNG if m in data]
            assert not shadows, (
                f"{notebook.name} cell {index}: the image/png output is hidden by {shadows} "
                "in HTML; figures must be PNG only (no SVG or HTML reprs)"
            )
            png = data["image/png"]
            png = "".join(png) if isinstance(png, list) else png
            expected.append((index, hashlib.sha256(base64.b64decode(png)).hexdigest()))
    return expected


class _ImgSrcs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            src = dict(attrs).get("src")
            if src:
                self.srcs.append(src)


def img_files(page: Path) -> dict[str, Path]:
    """Basename -> resolved file for every local <img> of a page."""
    parser = _ImgSrcs()
    parser.feed(page.read_text(encoding="utf-8"))
    files = {}
    for src in parser.srcs:
        parts = urlsplit(src)
        if parts.scheme or parts.netloc or src.startswith("data:"):
            continue
        path = (page.parent / unquote(parts.path)).resolve()
        files[path.name] = path
    return files


DOCS = toc_docs()
# Text pages (.md) have no stored outputs; every other document is a notebook
# (or missing, which test_chapter_page_exists reports).
NOTEBOOK_DOCS = [d for d in DOCS if not (ROOT / f"{d}.md").exists()]


def test_toc_lists_chapters():
    assert DOCS, "_toc.yml lists no documents"
    assert len(DOCS) == len(set(DOCS)), f"_toc.yml lists a document twice: {DOCS}"


@pytest.mark.parametrize("doc", DOCS)
def test_chapter_page_exists(html_dir, doc):
    source_of(doc)
    page = html_dir / f"{doc}.html"
    assert page.is_file(), f"{doc} is in _toc.yml but the build wrote no {page.relative_to(ROOT)}"


@pytest.mark.parametrize("doc", NOTEBOOK_DOCS)
def test_chapter_page_shows_every_figure(html_dir, doc):
    source = source_of(doc)
    page = html_dir / f"{doc}.html"
    assert page.is_file(), f"no page {page.relative_to(ROOT)}"
    images = img_files(page)
    for path in images.values():
        assert path.is_file(), f"{page.name} has an <img> whose file {path} does not exist"
    missing = [
        f"cell {index} (_images/{digest}.png)"
        for index, digest in expected_pngs(source)
        if f"{digest}.png" not in images
    ]
    assert not missing, (
        f"{page.relative_to(ROOT)} does not show these image/png outputs of {source.name}: "
        f"{missing}. Was the book rebuilt after `make execute`?"
    )


class _ProseText(HTMLParser):
    """The text of a page outside <code>, <pre>, <script> and <style> (what a reader sees as prose)."""

    SKIP = {"code", "pre", "script", "style"}

    def __init__(self):
        super().__init__()
        self.depth = 0
        self.parts: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.depth += 1

    def handle_endtag(self, tag):
        if tag in self.SKIP and self.depth:
            self.depth -= 1

    def handle_data(self, data):
        if not self.depth:
            self.parts.append(data)


@pytest.mark.parametrize("doc", DOCS)
def test_prose_shows_no_unrendered_roles(html_dir, doc):
    """A role MyST did not parse (for example `{glue:text}` wrapped in backticks) reaches the reader as raw
    text.
    """
    import re

    page = html_dir / f"{doc}.html"
    parser = _ProseText()
    parser.feed(page.read_text(encoding="utf-8"))
    text = "".join(parser.parts)
    raw = sorted(set(re.findall(r"\{(?:glue(?::\w+)?|ref|numref|eq|doc|term)\}", text)))
    assert not raw, f"{page.name} shows unrendered MyST roles {raw} in its prose"
    # markup MyST did not parse leaves backticks in the prose (a role inside a code span does)
    stray = sorted(set(m.group(0) for m in re.finditer(r"\S{0,30}`\S{0,30}", text)))
    assert not stray, f"{page.name} shows stray backticks in its prose: {stray[:5]}"
