"""A new contributor can add a chapter by following the appendix, as written.

book/appendix_contributing.md has a ``bash`` block, marked by a ``%`` comment
that names this file, with the steps that add a chapter. This test copies
the working tree to a temporary directory and runs that block there, line by
line, with ``NN_slug`` replaced by ``90_dummy``:

* shell commands run as written (``cp`` the template, ``make execute``, nbval
  through pytest, ``make book``, which builds the whole book with -W);
* the comment that tells the reader to list the chapter in ``_toc.yml`` is
  done the way a reader would: the line ``- file: book/90_dummy`` goes last
  in the first part of the toc;
* ``make test`` is skipped: it is what is running this test.

Every step must succeed, and in the end the copy's book must have a page for
the new chapter. The copy shares this checkout's ``.venv`` through a symlink;
``make`` is called with ``-o .venv/.installed.stamp`` so that it never
reinstalls into the shared environment, and ``PYTHONPATH`` puts the copy's
``src`` first so the new chapter imports the copy's package.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "book" / "appendix_contributing.md"
MARKER = "tests/test_contributor_flow.py"
SLUG = "90_dummy"
STEP_TIMEOUT = 900  # seconds for one step (the book build is the slowest)

IGNORED = shutil.ignore_patterns(
    ".git",
    ".venv",
    "_build",
    ".pytest_cache",
    ".hypothesis",
    "__pycache__",
    "*.egg-info",
    ".ipynb_checkpoints",
)

pytestmark = pytest.mark.slow


def guide_block(text: str) -> list[str]:
    """Lines of the first ```bash block after the `%` comment that names this test."""
    lines = text.splitlines()
    at = next((i for i, line in enumerate(lines) if line.startswith("%") and MARKER in line), None)
    assert at is not None, f"{GUIDE.name} has no `% ... {MARKER}` comment before the chapter steps"
    start = next((i for i in range(at, len(lines)) if lines[i].strip() == "```bash"), None)
    assert start is not None, f"{GUIDE.name}: no ```bash block after the marker comment"
    end = next((i for i in range(start + 1, len(lines)) if lines[i].strip() == "```"), None)
    assert end is not None, f"{GUIDE.name}: the ```bash block is not closed"
    return lines[start + 1 : end]


def add_to_toc(toc: Path, entry: str) -> None:
    """Insert ``entry`` (``- file: book/...``) after the last chapter of the first part (or list)."""
    lines = toc.read_text(encoding="utf-8").splitlines(keepends=True)
    files = [i for i, line in enumerate(lines) if re.match(r"\s*- file: ", line)]
    assert files, f"{toc} lists no `- file:` entries"
    parts = [i for i, line in enumerate(lines) if re.match(r"\s*- caption: ", line)]
    second_part = parts[1] if len(parts) > 1 else len(lines)
    last = max((i for i in files if i < second_part), default=files[-1])
    indent = re.match(r"\s*", lines[last]).group(0)
    lines.insert(last + 1, f"{indent}{entry}\n")
    toc.write_text("".join(lines), encoding="utf-8")


def copy_repo(dest: Path) -> Path:
    shutil.copytree(ROOT, dest, ignore=IGNORED, symlinks=True)
    (dest / ".venv").symlink_to(ROOT / ".venv", target_is_directory=True)
    return dest


def test_guide_block_has_the_documented_steps():
    block = "\n".join(guide_block(GUIDE.read_text(encoding="utf-8")))
    for step in (
        "cp book/_template.ipynb book/NN_slug.ipynb",
        "- file: book/NN_slug",
        "make execute NB=book/NN_slug.ipynb",
        "pytest book/NN_slug.ipynb",
        "make book",
    ):
        assert step in block, f"the chapter steps in {GUIDE.name} no longer contain {step!r}"


def test_template_is_outside_the_book():
    config = (ROOT / "_config.yml").read_text(encoding="utf-8")
    assert "book/_template.ipynb" in config, "_config.yml must exclude book/_template.ipynb"
    assert "_template" not in (ROOT / "_toc.yml").read_text(encoding="utf-8")


def test_new_chapter_from_the_guide(tmp_path):
    if not (ROOT / ".venv" / "bin" / "python").is_file():
        pytest.fail("no .venv: run `make venv` (`make test` does it for you)")
    repo = copy_repo(tmp_path / "repo")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo / "src"), env.get("PYTHONPATH")]))
    env.pop("MAKEFLAGS", None)  # the outer `make test` must not leak -j or targets
    env.pop("MAKELEVEL", None)
    stamp = ".venv/.installed.stamp"

    done = []
    for raw in guide_block(GUIDE.read_text(encoding="utf-8")):
        line = raw.replace("NN_slug", SLUG).strip()
        if not line:
            continue
        if line.startswith("#"):
            entry = re.search(r"- file: book/\S+", line)
            if entry:
                add_to_toc(repo / "_toc.yml", entry.group(0))
                done.append(f"_toc.yml += {entry.group(0)}")
            continue
        argv = shlex.split(line)
        if argv[:2] == ["make", "test"]:
            continue  # that is the run this test is part of
        if argv[0] == "make":
            argv = ["make", "--no-print-directory", "-o", stamp, *argv[1:]]
        if argv[0] == ".venv/bin/python":
            argv[0] = str(repo / ".venv" / "bin" / "python")
        proc = subprocess.run(argv, cwd=repo, env=env, capture_output=True, text=True, timeout=STEP_TIMEOUT)
        assert proc.returncode == 0, (
            f"step `{line}` of {GUIDE.name} failed (exit {proc.returncode}) after {done}:\n"
            f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
        done.append(line)

    chapter = repo / "book" / f"{SLUG}.ipynb"
    assert chapter.is_file(), f"following the guide did not create book/{SLUG}.ipynb"
    assert any(s.startswith("_toc.yml") for s in done), "the guide never told the reader to edit _toc.yml"
    assert any(s.startswith("make book") for s in done), "the guide never built the book"
    assert (repo / "_build" / "html" / "book" / f"{SLUG}.html").is_file(), (
        f"the book was built but has no page for book/{SLUG}"
    )
    # make execute left the chapter as make test wants it: executed 1..n and normalised.
    check = subprocess.run(
        [sys.executable, str(repo / "tools" / "normalize_notebooks.py"), "--check", str(chapter)],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
