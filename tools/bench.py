#!/usr/bin/env python3
"""Time `make book` and `make test` on a warm environment (not a test).

Usage: make bench   (or: python tools/bench.py [--repeat N])

"Warm" means .venv is already installed (`make venv`); nothing else is
touched. Before each `make book` run _build/html is deleted, so the build
starts from scratch as it does in a fresh clone (the book target deletes it
too). `make test` includes its own `make book`. Prints wall-clock seconds.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(target: str) -> float:
    start = time.perf_counter()
    proc = subprocess.run(
        ["make", target], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"`make {target}` failed (exit {proc.returncode})")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs per target (default 1)")
    args = parser.parse_args()

    if not (ROOT / ".venv" / ".installed.stamp").exists():
        raise SystemExit("run `make venv` first: the benchmark assumes a warm environment")
    chapters = len(list((ROOT / "book").glob("[0-9][0-9]_*.ipynb")))
    print(
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, {chapters} chapters"
    )
    for target in ("book", "test"):
        runs = []
        for _ in range(args.repeat):
            shutil.rmtree(ROOT / "_build" / "html", ignore_errors=True)
            runs.append(timed(target))
        detail = "" if len(runs) == 1 else "  (" + ", ".join(f"{r:.1f}" for r in runs) + ")"
        print(f"make {target}: {statistics.median(runs):.1f} s{detail}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
