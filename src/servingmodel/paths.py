"""Where the project's data files live.

The package reads its facts from the repository's top-level ``data/`` folder
(installed in editable mode), so a fact is written once, with its source.
"""

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parents[2] / "data"
