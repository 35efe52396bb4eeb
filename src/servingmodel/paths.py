"""Where the project's data files live, and how a facts table is read.

The package reads its facts from the repository's top-level ``data/`` folder
(installed in editable mode), so a fact is written once, with its source. The
environment variable ``SERVINGMODEL_DATA`` points the package at another
folder of the same files (a corrupted copy in the tests, a user's own facts);
it is read at each look-up, not at import.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import pandas as pd

DATA_DIR = Path(__file__).resolve().parents[2] / "data"
DATA_ENV = "SERVINGMODEL_DATA"


def data_dir() -> Path:
    """The folder the facts are read from: ``$SERVINGMODEL_DATA`` if set, else the repository's ``data/``."""
    override = os.environ.get(DATA_ENV)
    return Path(override) if override else DATA_DIR


def read_table(path: Path, error: type[Exception]) -> pd.DataFrame:
    """A CSV facts file as text cells, or ``error`` naming the file (and the row) when it cannot be read.

    Refuses what pandas would otherwise read silently or with a traceback: a
    missing or empty file, bytes that are not UTF-8 text, an unclosed quote,
    and a row with more fields than the header.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except IsADirectoryError:
        raise error(f"{path}: is a directory, not a CSV file") from None
    except UnicodeDecodeError as e:
        raise error(f"{path.name}: not UTF-8 text ({e})") from None
    except OSError as e:
        raise error(f"{path}: cannot be read ({e.strerror or e})") from None
    if "\x00" in text:
        raise error(f"{path.name}: contains NUL bytes; not a CSV text file")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows, start = [], 1
    try:
        for rec in reader:
            rows.append((start, rec))
            start = reader.line_num + 1
    except csv.Error as e:
        raise error(f"{path.name}, row {start}: not a readable CSV row ({e}; an unclosed quote?)") from None
    rows = [(n, r) for n, r in rows if r and any(c.strip() for c in r)]
    if not rows:
        raise error(f"{path.name}: empty file (a header row is required)")
    (_, header), body = rows[0], rows[1:]
    for n, rec in body:
        if len(rec) != len(header):
            raise error(f"{path.name}, row {n}: {len(rec)} fields, but the header has {len(header)}")
    return pd.DataFrame([r for _, r in body], columns=header, dtype=str)
