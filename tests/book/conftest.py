"""Fixtures shared by the book checks."""

from pathlib import Path

import pytest
from booktoc import ROOT

HTML = ROOT / "_build" / "html"


@pytest.fixture(scope="session")
def html_dir() -> Path:
    """The built book; fails (not skips) when it is missing."""
    if not (HTML / "index.html").is_file():
        pytest.fail(
            f"{HTML / 'index.html'} does not exist: run `make book` first (`make test` does it for you)"
        )
    return HTML
