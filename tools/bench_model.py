#!/usr/bin/env python3
"""Time the model's predictions (not a test: it prints, it does not assert).

Usage: .venv/bin/python tools/bench_model.py [--repeat N]

Reports the median wall-clock time, after one warm-up call, of
  * predicting the 114 measured points with the calibrated parameters
    (fullmodel.predict_measurements, what `servingmodel reproduce` runs);
    target < 50 ms;
  * a vectorised sweep of 100,000 random aggregated scenarios on one GPU
    (whatif.sweep, balanced routing); target < 2 s;
  * the same sweep under random routing (exact, point by point) on 1,000
    scenarios, and 100 true prefill/decode scenarios (disagg), for scale;
  * the step-level replay of the 114 measured points (stepsim, the book's
    TTFT model; `servingmodel reproduce` runs it too), for scale.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from servingmodel import fullmodel, stepsim, whatif
from servingmodel.calibrate import calibrated_params
from servingmodel.measurements import load_measurements


def timed(fn, repeat: int) -> tuple[float, list[float]]:
    fn()  # warm-up: imports, registries, caches
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs), runs


def scenarios(n: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return dict(
        tp=rng.choice([2, 4, 8], n),
        replicas=rng.integers(1, 9, n),
        concurrency=rng.integers(1, 513, n),
        isl=rng.integers(100, 20000, n),
        osl=rng.integers(2, 4000, n),
    )


def predict_input(n: int, seed: int = 0) -> str:
    """A CSV of ``n`` rows for ``servingmodel predict``: mixed models, TP 1 to 8 (dividing the heads),
    closed loop (every row has a concurrency), like the sweep's scenarios."""
    rng = np.random.default_rng(seed)
    models = np.array(["Llama-3.1-8B", "Llama-3.1-70B", "Llama-3.3-70B"])
    lines = ["model,gpu,tp,replicas,isl,osl,concurrency"]
    m = models[rng.integers(0, len(models), n)]
    tp = rng.choice([1, 2, 4, 8], n)
    reps = rng.integers(1, 9, n)
    conc = rng.integers(1, 513, n)
    isl = rng.integers(100, 20000, n)
    osl = rng.integers(2, 4000, n)
    lines += [
        f"{a},H100,{b},{c},{d},{e},{f}" for a, b, c, d, e, f in zip(m, tp, reps, isl, osl, conc, strict=True)
    ]
    return "\n".join(lines) + "\n"


def predict_whole_process(rows: int, repeat: int) -> None:
    """Time `servingmodel predict` on ``rows`` rows as a user runs it: a new process, CSV in and out."""
    exe = Path(sys.executable).with_name("servingmodel")
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.csv", Path(tmp) / "out.csv"
        src.write_text(predict_input(rows), encoding="utf-8")
        runs = []
        for _ in range(repeat):
            start = time.perf_counter()
            subprocess.run([str(exe), "predict", str(src), "-o", str(dst)], check=True)
            runs.append(time.perf_counter() - start)
    print(
        f"servingmodel predict, {rows:,} rows, whole process: {statistics.median(runs):.2f} s "
        f"(median of {repeat})",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per case (default 5)")
    parser.add_argument(
        "--predict-rows",
        type=int,
        nargs="*",
        default=[],
        metavar="N",
        help="also time `servingmodel predict` on N generated rows, whole process (median of 3)",
    )
    args = parser.parse_args()
    for rows in args.predict_rows:
        predict_whole_process(rows, 3)

    params = calibrated_params()
    meas = load_measurements()
    big = scenarios(100_000)
    small = scenarios(1_000)
    cases = [
        (
            f"predict the {len(meas)} measured points",
            0.050,
            lambda: fullmodel.predict_measurements(meas, params),
        ),
        (
            "sweep 100,000 scenarios (balanced routing)",
            2.0,
            lambda: whatif.sweep(
                whatif.setup_for("Llama-3.1-70B", "H100", "llm-d-modelservice", params), **big
            ),
        ),
        (
            "sweep 1,000 scenarios (random routing)",
            None,
            lambda: whatif.sweep(
                whatif.setup_for("Llama-3.1-70B", "H100", "llm-d-standalone", params), **small
            ),
        ),
        (
            "100 true P/D scenarios (disagg, point by point)",
            None,
            lambda: whatif.sweep_disaggregated(
                whatif.setup_for("Llama-3.1-70B", "H100", "llm-d-modelservice", params),
                p_tp=4,
                p_replicas=2,
                d_tp=4,
                d_replicas=2,
                concurrency=small["concurrency"][:100],
                isl=10000,
                osl=1000,
            ),
        ),
        (
            f"replay the {len(meas)} measured points step by step (stepsim)",
            None,
            lambda: stepsim.replay_measurements(meas, params),
        ),
    ]
    print(
        f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"median of {args.repeat} runs after one warm-up"
    )
    for name, target, fn in cases:
        median, runs = timed(fn, args.repeat)
        verdict = (
            ""
            if target is None
            else f"  (target < {target * 1e3:.0f} ms: {'ok' if median < target else 'MISSED'})"
        )
        print(f"{name}: {median * 1e3:.1f} ms{verdict}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
