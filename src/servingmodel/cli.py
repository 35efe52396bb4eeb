"""The ``servingmodel`` command: predictions of the calibrated model from a CSV file.

Subcommands: ``predict`` (one prediction per input row), ``reproduce`` (the
book's final model on every measured point of the llm-d benchmark) and
``profiles`` (the deployment profiles). Run ``servingmodel --help``.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from . import kvcache
from .specs import SpecError, dtypes, UnknownNameError, get_gpu, get_model, get_profile, profiles

EXIT_OK = 0
EXIT_FAILURE = 1  # the command could not run (e.g. no calibrated parameters, unwritable output)
EXIT_BAD_INPUT = 2  # bad command line or input file; nothing is written

DEFAULT_PROFILE = "llm-d-modelservice"
KINDS = ("aggregated", "disaggregated")
REQUIRED = ("model", "gpu", "tp", "isl", "osl")
OPTIONAL = ("replicas", "concurrency", "weight_dtype", "kv_dtype", "kind", "p_tp", "p_replicas", "d_tp",
            "d_replicas", "profile")
PD_COLUMNS = ("p_tp", "p_replicas", "d_tp", "d_replicas")
OUTPUT_COLUMNS = ("concurrency_used", "pred_output_tok_s", "pred_tok_s_per_gpu", "pred_tok_s_per_user",
                  "pred_ttft_ms", "pred_tpot_ms", "pred_max_batch", "status")
MAX_REPORTED = 20

INPUT_HELP = f"""\
input columns (header row required; names exact, order free; other columns are copied through):
  model         required. Model name, case-insensitive: short name (Llama-3.1-70B) or Hugging Face
                id (meta-llama/Llama-3.1-70B-Instruct).
  gpu           required. GPU short name or benchmark label, case-insensitive (H100, H200, B200,
                NVIDIA-H100-80GB-HBM3, ...).
  tp            required column. Tensor-parallel size of each instance; must divide the model's
                attention heads. Ignored (may be empty) on disaggregated rows.
  isl           required. Input (prompt) tokens per request, >= 1.
  osl           required. Output tokens per request, >= 2.
  replicas      instances of `tp` GPUs behind the router (default 1). Ignored on disaggregated rows.
  concurrency   requests in flight (closed loop, as in the benchmark). Empty (or column absent)
                = unlimited queue, i.e. the maximum-throughput regime, defined as the smallest
                concurrency at which every instance's KV-cache batch is just full:
                ceil(replicas x max_batch) aggregated, ceil(d_replicas x max_batch of a decode
                instance) disaggregated. More requests than that only wait: same throughput,
                longer TTFT. The value used is written to `concurrency_used`.
  weight_dtype  bf16 (default) or fp8. fp8 weights also run prefill on the fp8 tensor cores.
  kv_dtype      bf16 (default) or fp8.
  kind          aggregated (default) or disaggregated (true prefill/decode disaggregation:
                prefill pool, KV transfer over RDMA, decode pool).
  p_tp, p_replicas, d_tp, d_replicas
                prefill and decode pools of a disaggregated row (all four required there;
                ignored on aggregated rows).
  profile       deployment profile (default {DEFAULT_PROFILE}): GPU memory utilisation, CPU cores,
                routing, host penalty. See `servingmodel profiles`.
  Empty cells take the default. Whole numbers may be written 4 or 4.0.

output: every input column unchanged, then
  concurrency_used, pred_output_tok_s, pred_tok_s_per_gpu, pred_tok_s_per_user, pred_ttft_ms,
  pred_tpot_ms, pred_max_batch (requests one (decode) instance's KV cache holds), and status:
  `ok`, or why the row has no prediction (e.g. the GPUs cannot hold the weights plus one
  request's KV cache). Rows are never dropped or reordered.
  pred_ttft_ms is the mean-field model's; with --replay it is the step-level replay's (the
  book's TTFT model) on aggregated rows with a concurrency, and a column ttft_model after it
  says which model gave it (replay or mean field).

All numbers are predictions of the model calibrated on the llm-d H100 benchmark
(data/calibrated_parameters.csv); other GPUs and fp8 use datasheet numbers with the
H100-calibrated efficiencies."""

EXIT_HELP = f"""\
exit codes:
  {EXIT_OK}  success (rows that cannot be served are reported in `status`, not as errors)
  {EXIT_FAILURE}  the command failed (e.g. missing calibrated parameters: run `make calibrate`)
  {EXIT_BAD_INPUT}  bad command line or input: unknown model, GPU or profile (the message lists the
     known names), or a bad value (the message names the row, 1-based with the header as
     row 1, and the column); nothing is written"""


class InputError(Exception):
    """Problems found in the input file (a list of messages); exit code 2."""

    def __init__(self, messages):
        super().__init__("\n".join(messages))
        self.messages = list(messages)


def _where(name: str, row: int, column: str) -> str:
    return f"{name}, row {row}, column {column!r}"


def _parse_number(text: str, *, whole: bool, minimum: float):
    """Parse a cell; return (value, None) or (None, problem)."""
    try:
        v = float(text)
    except ValueError:
        return None, f"{text!r} is not a number"
    if not math.isfinite(v):
        return None, f"{text!r} is not finite"
    if v <= 0:
        return None, f"must be positive, got {text!r}"
    if whole and v != int(v):
        return None, f"must be a whole number, got {text!r}"
    if v < minimum:
        return None, f"must be at least {minimum:g}, got {text!r}"
    return (int(v) if whole else v), None


def _read_input(path: str) -> pd.DataFrame:
    src = sys.stdin if path == "-" else path
    try:
        return pd.read_csv(src, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise InputError([f"{path}: file not found"]) from None
    except pd.errors.EmptyDataError:
        raise InputError([f"{path}: empty file (a header row is required)"]) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise InputError([f"{path}: not a readable CSV file: {e}"]) from None


def parse_rows(df: pd.DataFrame, name: str = "input") -> list[dict]:
    """Validate every row; return one parsed record per row or raise :class:`InputError` listing all problems."""
    cols = {str(c).strip(): c for c in df.columns}
    missing = [c for c in REQUIRED if c not in cols]
    if missing:
        raise InputError([f"{_where(name, 1, c)}: required column missing (header has {list(cols)})"
                          for c in missing])
    clash = [c for c in OUTPUT_COLUMNS if c in cols]
    if clash:
        raise InputError([f"{_where(name, 1, c)}: the input already has output column {c!r}" for c in clash])
    problems, unknown, out = [], {}, []

    def cell(r, c):
        return str(r[cols[c]]).strip() if c in cols else ""

    for i, (_, r) in enumerate(df.iterrows()):
        row = i + 2
        rec: dict = {"row": row}

        def bad(c, msg):
            problems.append(f"{_where(name, row, c)}: {msg}")

        for c, getter in (("model", get_model), ("gpu", get_gpu), ("profile", get_profile)):
            text = cell(r, c) or (DEFAULT_PROFILE if c == "profile" else "")
            if not text:
                bad(c, "empty")
                continue
            try:
                rec[c] = getter(text)
            except UnknownNameError as e:
                unknown.setdefault((c, text.lower()), [str(e), []])[1].append(row)
        for c in ("weight_dtype", "kv_dtype"):
            text = cell(r, c).lower() or "bf16"
            if text not in dtypes():
                bad(c, f"unknown dtype {cell(r, c)!r}; expected one of {sorted(dtypes())}")
            rec[c] = text
        kind = cell(r, "kind").lower() or "aggregated"
        if kind not in KINDS:
            bad("kind", f"unknown kind {cell(r, 'kind')!r}; expected one of {list(KINDS)}")
        rec["kind"] = kind
        layout_cols = PD_COLUMNS if kind == "disaggregated" else ("tp", "replicas")
        for c in ("isl", "osl", *layout_cols):
            text = cell(r, c)
            if not text:
                if c == "replicas":
                    rec[c] = 1
                    continue
                bad(c, "empty" if c in cols else "column missing (needed by a disaggregated row)")
                continue
            v, err = _parse_number(text, whole=True, minimum=2 if c == "osl" else 1)
            if err:
                bad(c, err)
            rec[c] = v
        text = cell(r, "concurrency")
        rec["concurrency"] = None
        if text:
            v, err = _parse_number(text, whole=True, minimum=1)
            if err:
                bad("concurrency", err)
            rec["concurrency"] = v
        model = rec.get("model")
        if model is not None:
            for c in ("tp", "p_tp", "d_tp"):
                t = rec.get(c) if c in layout_cols else None
                if isinstance(t, int) and model.num_heads % t:
                    bad(c, f"tensor-parallel size {t} must divide the {model.num_heads} attention heads of "
                           f"{model.name}")
        out.append(rec)
    names = []  # unknown names first: their message lists the known ones
    for (c, _), (msg, rows) in unknown.items():
        shown = ", ".join(map(str, rows[:10])) + (" ..." if len(rows) > 10 else "")
        names.append(f"{name}, column {c!r}, row(s) {shown}: {msg}")
    problems = names + problems
    if problems:
        raise InputError(problems)
    return out


def predict_rows(records: list[dict], params) -> pd.DataFrame:
    """Predictions for parsed rows (same order); aggregated rows are vectorised per (model, GPU, profile, dtypes)."""
    from . import whatif

    res = pd.DataFrame(np.nan, index=range(len(records)), columns=list(OUTPUT_COLUMNS[:-1]), dtype=float)
    status = ["ok"] * len(records)
    groups: dict = {}
    for i, rec in enumerate(records):
        if rec["kind"] == "aggregated":
            key = (rec["model"].name, rec["gpu"].name, rec["profile"].name, rec["weight_dtype"], rec["kv_dtype"])
            groups.setdefault(key, []).append(i)
    for idx in groups.values():
        first = records[idx[0]]
        get = lambda c: np.array([np.nan if records[i][c] is None else records[i][c] for i in idx], float)  # noqa: E731
        df = whatif.sweep(first["model"], first["gpu"], first["profile"], params, tp=get("tp"),
                          replicas=get("replicas"), concurrency=get("concurrency"), isl=get("isl"), osl=get("osl"),
                          weight_dtype=first["weight_dtype"], kv_dtype=first["kv_dtype"])
        _store(res, status, idx, df, records, params)
    for i, rec in enumerate(records):
        if rec["kind"] != "disaggregated":
            continue
        df = whatif.sweep_disaggregated(rec["model"], rec["gpu"], rec["profile"], params, p_tp=rec["p_tp"],
                                        p_replicas=rec["p_replicas"], d_tp=rec["d_tp"], d_replicas=rec["d_replicas"],
                                        concurrency=np.nan if rec["concurrency"] is None else rec["concurrency"],
                                        isl=rec["isl"], osl=rec["osl"], weight_dtype=rec["weight_dtype"],
                                        kv_dtype=rec["kv_dtype"])
        _store(res, status, [i], df, records, params)
    res["status"] = status
    return res


def _store(res, status, idx, df, records, params) -> None:
    from . import whatif

    cols = {"pred_output_tok_s": "output_tok_s", "pred_tok_s_per_gpu": "tok_s_per_gpu",
            "pred_tok_s_per_user": "tok_s_per_user", "pred_ttft_ms": "ttft_ms", "pred_tpot_ms": "tpot_ms",
            "pred_max_batch": "max_batch"}
    for k, i in enumerate(idx):
        d = df.iloc[k]
        if not bool(d["fits"]) or not np.isfinite(d["output_tok_s"]):
            rec = records[i]
            if rec["kind"] == "aggregated":
                checks = [(rec["tp"], rec["osl"])]
            else:  # the decode instance holds whole requests, the prefill instance one prompt
                checks = [(rec["d_tp"], rec["osl"]), (rec["p_tp"], 0)]
            reason = None
            for tp, osl in checks:
                reason = reason or whatif.insufficient_memory_reason(
                    rec["model"], rec["gpu"], rec["profile"], params, tp=tp, isl=rec["isl"], osl=osl,
                    weight_dtype=rec["weight_dtype"], kv_dtype=rec["kv_dtype"])
            status[i] = reason or "no prediction: the model returned no finite throughput for this row"
            continue
        res.loc[i, "concurrency_used"] = float(d["concurrency"])
        for out, src in cols.items():
            res.loc[i, out] = float(d[src])


def _write(df: pd.DataFrame, path: str, float_format: str | None = "%.6g") -> None:
    """Write ``df`` as CSV (predictions to 6 significant digits; ``float_format`` None keeps full precision)."""
    if path == "-":
        df.to_csv(sys.stdout, index=False, float_format=float_format)
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(path, index=False, float_format=float_format)


def replay_ttft(records: list[dict], pred: pd.DataFrame, params) -> pd.Series:
    """Which model gives each row's TTFT, replacing ``pred_ttft_ms`` by the step replay's where it applies.

    The replay (chapter 08) runs the benchmark's closed loop through vLLM's
    scheduler; it applies to aggregated rows with a concurrency that fit.
    Other rows keep the mean-field TTFT.
    """
    from .fullmodel import Layout
    from .stepsim import replay_point

    source = pd.Series("mean field", index=pred.index)
    for i, rec in enumerate(records):
        if rec["kind"] != "aggregated" or rec["concurrency"] is None or pred.loc[i, "status"] != "ok":
            continue
        run = replay_point(rec["model"], rec["gpu"], int(rec["isl"]), int(rec["osl"]),
                           Layout("aggregated", tp=int(rec["tp"]), replicas=int(rec["replicas"])),
                           int(rec["concurrency"]), rec["profile"], params, weight_dtype=rec["weight_dtype"],
                           kv_dtype=rec["kv_dtype"])
        pred.loc[i, "pred_ttft_ms"] = run.mean_ttft_s * 1e3
        source[i] = "replay"
    return source


def cmd_predict(args) -> int:
    from .calibrate import calibrated_params

    raw = _read_input(args.input)
    records = parse_rows(raw, name=Path(args.input).name if args.input != "-" else "stdin")
    params = calibrated_params()
    pred = predict_rows(records, params)
    if args.replay:
        pred.insert(pred.columns.get_loc("pred_ttft_ms") + 1, "ttft_model", replay_ttft(records, pred, params))
    pred.index = raw.index
    _write(pd.concat([raw, pred], axis=1), args.output)
    return EXIT_OK


def cmd_reproduce(args) -> int:
    from .calibrate import calibrated_params
    from .fullmodel import PRED_COLUMNS, predict_measurements
    from .measurements import load_measurements

    from .stepsim import replay_measurements, with_replayed_ttft

    meas = load_measurements()
    params = calibrated_params()
    pred = with_replayed_ttft(predict_measurements(meas, params), replay_measurements(meas, params))
    keep = ["deployment", "family", "kind", "tp", "replicas", "p_tp", "p_replicas", "d_tp", "d_replicas",
            "concurrency"]
    out = pd.concat([pred[keep + PRED_COLUMNS], meas[["output_tok_s"]]], axis=1)
    _write(out, args.output, float_format=None)  # full precision: the measured values stay exact
    return EXIT_OK


def cmd_profiles(args) -> int:
    for name, p in sorted(profiles().items()):
        routing = f"{p.routing} routing"
        host = "host penalty on" if p.host_penalty else "no host penalty"
        print(f"{name}: {p.description} [gpu-memory-utilization {p.gpu_memory_utilization:g}, "
              f"{p.cpu_cores:g} CPU cores, {routing}, {host}]")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="servingmodel", formatter_class=fmt,
        description="Predict LLM serving throughput and latency with the calibrated first-principles model.",
        epilog="commands:\n"
               "  servingmodel predict INPUT.csv -o OUTPUT.csv   one prediction per input row\n"
               "  servingmodel reproduce -o OUTPUT.csv           the calibrated model on every measured\n"
               "                                                 point of the llm-d benchmark\n"
               "  servingmodel profiles                          list the deployment profiles\n\n"
               + INPUT_HELP + "\n\n" + EXIT_HELP)
    sub = parser.add_subparsers(dest="command", metavar="{predict,reproduce,profiles}")
    sub.required = True
    p = sub.add_parser("predict", formatter_class=fmt, help="predict every row of a CSV file",
                       description="Predict every row of INPUT.csv with the calibrated model.",
                       epilog=INPUT_HELP + "\n\n" + EXIT_HELP)
    p.add_argument("input", metavar="INPUT.csv", help="input CSV file ('-' reads standard input)")
    p.add_argument("-o", "--output", metavar="OUTPUT.csv", required=True,
                   help="output CSV file ('-' writes standard output)")
    p.add_argument("--replay", action="store_true",
                   help="take pred_ttft_ms from the step-level replay of the closed loop (the book's TTFT "
                        "model, chapter 08) on aggregated rows with a concurrency, and add a column ttft_model "
                        "(replay or mean field) after it; slower, about a second per row at high concurrency")
    p.set_defaults(func=cmd_predict)
    r = sub.add_parser("reproduce", formatter_class=fmt, help="the calibrated model on every measured point",
                       description="One row per measured point of the llm-d benchmark: the deployment columns "
                                   "(deployment, family, kind, tp, replicas, p_tp, p_replicas, d_tp, d_replicas, "
                                   "concurrency), the calibrated model's pred_* columns as the book's final model "
                                   "explains them (aggregated pods with the standalone profile, the llm-d pods "
                                   "served aggregated with the modelservice profile; throughput and TPOT from the "
                                   "mean-field model, TTFT from the step-level replay), and the measured "
                                   "output_tok_s.",
                       epilog=EXIT_HELP)
    r.add_argument("-o", "--output", metavar="OUTPUT.csv", required=True,
                   help="output CSV file ('-' writes standard output)")
    r.set_defaults(func=cmd_reproduce)
    q = sub.add_parser("profiles", help="list the deployment profiles (data/profiles.csv)",
                       description="List the deployment profiles, one line each (data/profiles.csv).")
    q.set_defaults(func=cmd_profiles)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``servingmodel`` console script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2)
        return int(e.code or 0)
    try:
        return args.func(args)
    except InputError as e:
        msgs = e.messages
        for m in msgs[:MAX_REPORTED]:
            print(f"servingmodel: error: {m}", file=sys.stderr)
        if len(msgs) > MAX_REPORTED:
            print(f"servingmodel: ... and {len(msgs) - MAX_REPORTED} more problem(s)", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (SpecError, kvcache.InsufficientMemoryError, OSError) as e:
        print(f"servingmodel: error: {e}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
