"""Committed chapters are normalised and were run top to bottom.

Outputs must come from one clean run (`make execute`), and volatile metadata
must not reach git; tools/normalize_notebooks.py --check says which chapter
breaks either rule.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_chapters_are_normalised_and_executed_in_order():
    chapters = sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))
    assert chapters, "no chapters book/NN_slug.ipynb found"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "normalize_notebooks.py"), "--check",
         *map(str, chapters)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
