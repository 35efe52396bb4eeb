"""The ``servingmodel`` command: predictions of the calibrated model from a CSV file.

Subcommands: ``predict`` (one prediction per input row), ``reproduce`` (the
book's final model on every measured point of the llm-d benchmark) and
``profiles`` (the deployment profiles). Run ``servingmodel --help``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import os
import sys
import tempfile
import textwrap
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np
import pandas as pd

from . import kvcache
from .measurements import MeasurementError
from .setup import Setup
from .specs import (
    SpecError,
    UnknownNameError,
    constant,
    dtypes,
    get_gpu,
    get_model,
    get_profile,
    gpu_names,
    model_names,
    profiles,
    schema,
    tp_problem,
)

EXIT_OK = 0
EXIT_FAILURE = 1  # the command could not run (e.g. no calibrated parameters, unwritable output)
EXIT_BAD_INPUT = 2  # bad command line or input file; nothing is written

DEFAULT_PROFILE = "llm-d-modelservice"
KINDS = ("aggregated", "disaggregated")
REQUIRED = ("model", "gpu", "tp", "isl", "osl")
OPTIONAL = (
    "replicas",
    "concurrency",
    "weight_dtype",
    "kv_dtype",
    "kind",
    "p_tp",
    "p_replicas",
    "d_tp",
    "d_replicas",
    "profile",
    "gpu_memory_utilization",
)
PD_COLUMNS = ("p_tp", "p_replicas", "d_tp", "d_replicas")
LAYOUT_COLUMNS = ("tp", "replicas", *PD_COLUMNS)
TP_COLUMNS = ("tp", "p_tp", "d_tp")
OUTPUT_COLUMNS = (
    "concurrency_used",
    "pred_output_tok_s",
    "pred_tok_s_per_gpu",
    "pred_tok_s_per_user",
    "pred_ttft_ms",
    "pred_tpot_ms",
    "pred_max_batch",
    "status",
)
REPLAY_COLUMN = "ttft_model"  # added after pred_ttft_ms by --replay
# The replay runs prompts_per_slot x C requests (about 0.3 ms each, three seeds behind a router):
# up to this concurrency a replayed row costs at most about a second on a 2-core machine.
REPLAY_MAX_CONCURRENCY = 1024
MAX_REPORTED = 20
# Every whole number up to 2**53 is exactly a float (53-bit significand); larger counts would be rounded
# silently, and overflow the 64-bit integers of the output.
MAX_WHOLE = 2**sys.float_info.mant_dig

INPUT_HELP = f"""\
input columns (header row required; names case-insensitive, surrounding spaces ignored, each
name at most once, order free; other columns are copied through; the output keeps the header
as written):
  model         required. Model name, case-insensitive: short name (Llama-3.1-70B) or Hugging Face
                id (meta-llama/Llama-3.1-70B-Instruct).
  gpu           required. GPU short name or benchmark label, case-insensitive (H100, H200, B200,
                NVIDIA-H100-80GB-HBM3, ...).
  tp            required column. Tensor-parallel size of each instance; must divide the model's
                attention heads and be at most the GPU's gpus_per_node (data/gpus.csv): a
                tensor-parallel group stays inside one node, as the model has no inter-node links.
                Ignored on disaggregated rows (may be empty there; if given, a whole number >= 1).
  isl           required. Input (prompt) tokens per request, >= 1.
  osl           required. Output tokens per request, >= 2. A row with isl + osl above the model's
                max_context (data/models.csv) is kept with no prediction and the reason in `status`.
  replicas      instances of `tp` GPUs behind the router (default 1). Ignored on disaggregated rows
                (if given, a whole number >= 1).
  concurrency   requests in flight (closed loop, as in the benchmark: prompts_per_slot x concurrency
                prompts, data/parameters.csv). Empty (or column absent) = unlimited queue, i.e. the
                maximum-throughput regime. On such a row:
                - pred_output_tok_s and pred_tok_s_per_gpu are the long-run maximum throughput:
                  the limit of the closed loop's throughput as the concurrency grows without bound
                  (every instance's KV-cache batch full all the time, disaggregated: the slowest of
                  the prefill, KV-transfer and decode pools busy all the time; no ramp-up or tail),
                  at least the throughput of any explicit concurrency. The benchmark's finite run
                  loses a share to its ramp and tail that shrinks as the concurrency grows, so its
                  throughput creeps up towards this value without reaching it.
                - concurrency_used is the smallest concurrency at which every instance's KV-cache
                  batch is just full: ceil(replicas x max_batch) aggregated, ceil(d_replicas x
                  max_batch of a decode instance) disaggregated.
                - pred_ttft_ms and pred_tpot_ms are the model's for the benchmark at concurrency_used
                  (what a row with that explicit concurrency gives). In an unlimited queue each
                  further request in flight only waits, so TTFT grows without bound.
                - pred_tok_s_per_user is pred_output_tok_s / concurrency_used: the maximum throughput
                  shared by concurrency_used users (more users in flight would each get less).
  weight_dtype  bf16 (default) or fp8. fp8 weights also run prefill on the fp8 tensor cores.
  kv_dtype      bf16 (default) or fp8.
  kind          aggregated (default) or disaggregated (true prefill/decode disaggregation:
                prefill pool, KV transfer over RDMA, decode pool).
  p_tp, p_replicas, d_tp, d_replicas
                prefill and decode pools of a disaggregated row (all four required there; p_tp and
                d_tp obey the rules of tp). Ignored on aggregated rows (may be empty there; if
                given, a whole number >= 1).
  profile       deployment profile (default {DEFAULT_PROFILE}): GPU memory utilisation, CPU cores,
                routing, whether the CPU limit binds. See `servingmodel profiles`.
  gpu_memory_utilization
                overrides the profile's share of each GPU's memory the engine may claim, for this
                row (a number in the plausible range of data/schema.csv, 0.05 to 1). A row that
                cannot hold one request says in `status` which utilisation (or TP) would hold it.
  Empty cells take the default. Whole numbers may be written 4 or 4.0, and must be at most
  2**53 = 9007199254740992 (the largest range of exact whole numbers in floating point).
  Every row must have as many fields as the header; blank lines are skipped.

output: every input column unchanged, then
  concurrency_used, pred_output_tok_s, pred_tok_s_per_gpu, pred_tok_s_per_user, pred_ttft_ms,
  pred_tpot_ms, pred_max_batch (requests one (decode) instance's KV cache holds), and status:
  `ok`, or why the row has no prediction (e.g. the GPUs cannot hold the weights plus one
  request's KV cache). Rows are never dropped or reordered.
  pred_ttft_ms is the mean-field model's; with --replay it is the step-level replay's (the
  book's TTFT model) on aggregated rows with a concurrency of at most 1024 (a row then costs
  at most about a second), and a column ttft_model after it says which model gave it (replay,
  or mean field and why); a progress bar on standard error counts the replayed rows (when it is a
  terminal). --replay replaces pred_ttft_ms only: the
  other columns (pred_output_tok_s, pred_tok_s_per_gpu, pred_tok_s_per_user, pred_tpot_ms)
  stay the mean-field model's, so on a replayed row pred_ttft_ms and the throughputs come from
  two different models and need not be consistent with each other.

All numbers are predictions of the model calibrated on the llm-d H100 benchmark
(data/calibrated_parameters.csv); other GPUs and fp8 use datasheet numbers with the
H100-calibrated efficiencies."""

EXIT_HELP = f"""\
exit codes:
  {EXIT_OK}  success (rows that cannot be served are reported in `status`, not as errors)
  {EXIT_FAILURE}  the command failed: the output could not be written (disk full, no permission);
     an existing output file is then left as it was (the output is written to a temporary file
     and renamed over it only when complete)
  {EXIT_BAD_INPUT}  bad command line or input: unreadable input (missing, a directory, no read
     permission, not UTF-8 CSV, a quote that is never closed), a header with a missing required
     or duplicate column, a row with more or fewer fields than the header, unknown model, GPU
     or profile (the message lists the known names), a bad value (the message names the row
     and the column; rows are the file's line numbers, the header is row 1, blank lines
     count), an output path that is the input, a directory or below a file, or a data file
     of data/ (or of the folder $SERVINGMODEL_DATA names) that cannot be used, calibrated
     parameters included (the message names the file and the row); nothing is written"""


class InputError(Exception):
    """Problems found in the input file (a list of messages); exit code 2."""

    def __init__(self, messages):
        super().__init__("\n".join(messages))
        self.messages = list(messages)


def _where(name: str, row: int, column: str) -> str:
    return f"{name}, row {row}, column {column!r}"


def _parse_number(text: str, *, whole: bool, minimum: float):
    """Parse a cell exactly (decimal, so no digit is rounded away); return (value, None) or (None,
    problem).
    """
    if text.isdigit() and text.isascii():  # the common case, exact without Decimal
        v = int(text)
        if whole and v > MAX_WHOLE:
            return None, (
                f"{text!r} is too large: whole numbers must be at most 2**53 = {MAX_WHOLE}, beyond which "
                f"they are not exact"
            )
        if v <= 0:
            return None, f"must be positive, got {text!r}"
        if v < minimum:
            return None, f"must be at least {minimum:g}, got {text!r}"
        return (v if whole else float(v)), None
    try:
        d = Decimal(text)
    except InvalidOperation:
        return None, f"{text!r} is not a number"
    if not d.is_finite():
        return None, f"{text!r} is not finite"
    if d <= 0:
        return None, f"must be positive, got {text!r}"
    if whole and d > MAX_WHOLE:
        return None, (
            f"{text!r} is too large: whole numbers must be at most 2**53 = {MAX_WHOLE}, beyond which "
            f"they are not exact"
        )
    if whole and d != d.to_integral_value():
        return None, f"must be a whole number, got {text!r}"
    if d < minimum:
        return None, f"must be at least {minimum:g}, got {text!r}"
    return (int(d) if whole else float(d)), None


def _read_input(path: str, name: str | None = None) -> tuple[pd.DataFrame, list[int]]:
    """Read the input CSV, every cell as text; return the frame and the line number of its header and of each
    row.

    Blank lines are skipped but counted, so the numbers are the file's line
    numbers (a row's first line). A row with more or fewer fields than the
    header is an :class:`InputError`: nothing is dropped or padded.
    """
    name = name or path
    try:
        if path == "-":
            data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read()
        else:
            data = Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError([f"{path}: file not found"]) from None
    except IsADirectoryError:
        raise InputError([f"{path}: is a directory, not a CSV file"]) from None
    except OSError as e:
        raise InputError([f"{path}: cannot be read ({e.strerror or e})"]) from None
    try:
        text = data.decode("utf-8-sig") if isinstance(data, bytes) else data
    except UnicodeDecodeError as e:
        raise InputError([f"{path}: not a readable CSV file: not UTF-8 text ({e})"]) from None
    # strict: an unclosed quote is an error, not a field that swallows every later row
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records, lines, end = [], [], 0
    try:
        for rec in reader:
            start, end = end + 1, reader.line_num
            if not rec or (len(rec) == 1 and not rec[0].strip()):
                continue  # a blank line
            records.append(rec)
            lines.append(start)
    except csv.Error as e:
        hint = "; a quote opened in this row is never closed" if "end of data" in str(e) else ""
        raise InputError([f"{name}, row {end + 1}: not a readable CSV row ({e}){hint}"]) from None
    if not records:
        raise InputError([f"{path}: empty file (a header row is required)"])
    header = records[0]
    ragged = [
        f"{name}, row {line}: {len(rec)} fields, but the header (row {lines[0]}) has {len(header)}"
        for rec, line in zip(records[1:], lines[1:], strict=True)
        if len(rec) != len(header)
    ]
    if ragged:
        raise InputError(ragged)
    return pd.DataFrame(records[1:], columns=header, dtype=str), lines


def _column_positions(df: pd.DataFrame, name: str, head: int, reserved: tuple[str, ...]) -> dict[str, int]:
    """Lower-case column name -> position; refuses duplicate, missing required and reserved columns."""
    seen: dict = {}
    for k, c in enumerate(df.columns):
        seen.setdefault(str(c).strip().lower(), []).append(k)
    dup = [
        f"{name}, row {head}: column name {key!r} appears {len(ks)} times (columns "
        f"{', '.join(str(k + 1) for k in ks)}: {', '.join(repr(str(df.columns[k])) for k in ks)}); "
        "names match case-insensitively, without surrounding spaces, and each may appear only once"
        for key, ks in seen.items()
        if len(ks) > 1
    ]
    if dup:
        raise InputError(dup)
    cols = {key: ks[0] for key, ks in seen.items()}
    missing = [c for c in REQUIRED if c not in cols]
    if missing:
        raise InputError(
            [
                f"{_where(name, head, c)}: required column missing (header has "
                f"{[str(c) for c in df.columns]})"
                for c in missing
            ]
        )
    clash = [c for c in reserved if c in cols]
    if clash:
        raise InputError(
            [f"{_where(name, head, c)}: the input already has output column {c!r}" for c in clash]
        )
    return cols


def _parse_names(cells: dict, rec: dict, unknown: dict, lookups: dict) -> list[tuple[str, str]]:
    """Model, GPU, profile, dtypes and kind of one row into ``rec``; unknown names are collected in
    ``unknown``, and every look-up is remembered in ``lookups`` for the next rows.
    """
    bad = []
    known_dtypes = lookups.setdefault(("dtypes",), dtypes())
    for c, getter in (("model", get_model), ("gpu", get_gpu), ("profile", get_profile)):
        text = cells.get(c, "") or (DEFAULT_PROFILE if c == "profile" else "")
        if not text:
            bad.append((c, "empty"))
            continue
        if (c, text) not in lookups:
            try:
                lookups[(c, text)] = getter(text)
            except UnknownNameError as e:
                lookups[(c, text)] = e
        found = lookups[(c, text)]
        if isinstance(found, UnknownNameError):
            unknown.setdefault((c, text.lower()), [str(found), []])[1].append(rec["row"])
        else:
            rec[c] = found
    for c in ("weight_dtype", "kv_dtype"):
        text = cells.get(c, "").lower() or "bf16"
        if text not in known_dtypes:
            bad.append((c, f"unknown dtype {cells.get(c, '')!r}; expected one of {sorted(dtypes())}"))
        rec[c] = text
    kind = cells.get("kind", "").lower() or "aggregated"
    if kind not in KINDS:
        bad.append(("kind", f"unknown kind {cells.get('kind', '')!r}; expected one of {list(KINDS)}"))
    rec["kind"] = kind
    return bad


def _parse_counts(cells: dict, rec: dict) -> list[tuple[str, str]]:
    """isl, osl and the layout columns of one row into ``rec`` (the columns its kind ignores are still
    checked).
    """
    bad = []
    kind = rec["kind"]
    layout_cols = PD_COLUMNS if kind == "disaggregated" else ("tp", "replicas")
    for c in ("isl", "osl", *LAYOUT_COLUMNS):
        used = c in ("isl", "osl") or c in layout_cols
        text = cells.get(c, "")
        if not text:
            if c == "replicas" and used:
                rec[c] = 1
            elif used:
                bad.append((c, "empty" if c in cells else "column missing (needed by a disaggregated row)"))
            continue
        v, err = _parse_number(text, whole=True, minimum=2 if c == "osl" else 1)
        if err:
            ignored = f"{err} (the column is ignored on {kind} rows, but a value must be valid)"
            bad.append((c, err if used else ignored))
        if used:
            rec[c] = v
    for c in TP_COLUMNS:
        t = rec.get(c) if c in layout_cols else None
        if isinstance(t, int) and rec.get("model") is not None:
            problem = tp_problem(rec["model"], t, rec.get("gpu"))
            if problem:
                bad.append((c, problem))
    return bad


def _parse_concurrency(cells: dict, rec: dict) -> list[tuple[str, str]]:
    """The concurrency of one row into ``rec`` (None: the maximum-throughput regime, which must stay
    exact).
    """
    text = cells.get("concurrency", "")
    rec["concurrency"] = None
    if text:
        v, err = _parse_number(text, whole=True, minimum=1)
        rec["concurrency"] = v
        return [("concurrency", err)] if err else []
    # the maximum-throughput concurrency, ceil(instances x max_batch), must stay exact too
    c = "d_replicas" if rec["kind"] == "disaggregated" else "replicas"
    n, max_seqs = rec.get(c), constant("max_num_seqs")
    if isinstance(n, int) and n * max_seqs > MAX_WHOLE:
        return [
            (
                c,
                f"{n} instances are too many for an empty concurrency: the maximum-throughput concurrency "
                f"ceil({c} x max_batch), with max_batch up to max_num_seqs = {max_seqs:g} "
                f"(data/parameters.csv), could exceed 2**53 = {MAX_WHOLE}; give a concurrency",
            )
        ]
    return []


def _parse_fast(df: pd.DataFrame, cols: dict, lines: list[int]) -> list[dict] | None:
    """:func:`parse_rows` for the common case, column by column; None as soon as any cell is not plainly
    valid, so that the row-by-row parser can name every problem exactly. Gives the same records."""
    n = len(df)
    blank = [""] * n
    if "gpu_memory_utilization" in cols:
        return None  # a per-row profile: the careful parser

    def text(c):
        return [str(v).strip() for v in df.iloc[:, cols[c]].tolist()] if c in cols else blank

    found = {}
    for c, getter in (("model", get_model), ("gpu", get_gpu), ("profile", get_profile)):
        col = text(c)
        if c == "profile":
            col = [v or DEFAULT_PROFILE for v in col]
        specs = {}
        for name in set(col):
            try:
                specs[name] = getter(name) if name else None
            except UnknownNameError:
                return None
        if any(v is None for v in specs.values()):
            return None
        found[c] = [specs[v] for v in col]
    known_dtypes = dtypes()
    for c in ("weight_dtype", "kv_dtype"):
        col = [v.lower() or "bf16" for v in text(c)]
        if not set(col) <= set(known_dtypes):
            return None
        found[c] = col
    kind = [v.lower() or "aggregated" for v in text("kind")]
    if not set(kind) <= set(KINDS):
        return None
    agg = np.array([k == "aggregated" for k in kind], dtype=bool)
    numbers = {}
    for c in ("isl", "osl", *LAYOUT_COLUMNS, "concurrency"):
        col = text(c)
        given = np.array([v != "" for v in col], dtype=bool)
        cells = [v for v in col if v]
        if not all(v.isdigit() and v.isascii() and len(v) <= 15 for v in cells):
            return None  # not plain digits, or so long that 2**53 needs checking: the careful parser
        values = np.zeros(n, dtype=np.int64)
        values[given] = np.array(cells, dtype=np.int64) if cells else []
        if (values[given] < (2 if c == "osl" else 1)).any():
            return None
        numbers[c] = (values, given)
    if not (numbers["isl"][1].all() and numbers["osl"][1].all()):
        return None
    if not numbers["tp"][1][agg].all():
        return None
    for c in PD_COLUMNS:
        if not numbers[c][1][~agg].all():
            return None
    reps = np.where(numbers["replicas"][1], numbers["replicas"][0], 1)
    conc, conc_given = numbers["concurrency"]
    instances = np.where(agg, reps, numbers["d_replicas"][0])
    if (~conc_given & (instances * constant("max_num_seqs") > MAX_WHOLE)).any():
        return None
    for c in TP_COLUMNS:
        used = agg if c == "tp" else ~agg
        pairs = set(zip(found["model"], found["gpu"], numbers[c][0].tolist(), used.tolist(), strict=True))
        if any(u and tp_problem(m, t, g) for m, g, t, u in pairs):
            return None
    isl, osl = numbers["isl"][0].tolist(), numbers["osl"][0].tolist()
    layout = {c: numbers[c][0].tolist() for c in LAYOUT_COLUMNS}
    reps_l, conc_l, conc_g, agg_l = reps.tolist(), conc.tolist(), conc_given.tolist(), agg.tolist()
    out = []
    for i in range(n):
        rec = {
            "row": lines[i + 1],
            "model": found["model"][i],
            "gpu": found["gpu"][i],
            "profile": found["profile"][i],
            "weight_dtype": found["weight_dtype"][i],
            "kv_dtype": found["kv_dtype"][i],
            "kind": "aggregated" if agg_l[i] else "disaggregated",
            "isl": isl[i],
            "osl": osl[i],
        }
        if agg_l[i]:
            rec["tp"], rec["replicas"] = layout["tp"][i], reps_l[i]
        else:
            for c in PD_COLUMNS:
                rec[c] = layout[c][i]
        rec["concurrency"] = conc_l[i] if conc_g[i] else None
        out.append(rec)
    return out


def _parse_memory_utilization(cells: dict, rec: dict) -> list[tuple[str, str]]:
    """A ``gpu_memory_utilization`` cell replaces the row's profile by one with that utilisation."""
    text = cells.get("gpu_memory_utilization", "")
    if not text:
        return []
    spec = schema()[("profiles.csv", "gpu_memory_utilization")]
    try:
        u = float(Decimal(text))
    except InvalidOperation:
        return [("gpu_memory_utilization", f"{text!r} is not a number")]
    if not (spec.low <= u <= spec.high):
        return [
            (
                "gpu_memory_utilization",
                f"must be in [{spec.low:g}, {spec.high:g}] ({spec.reason}), got {text!r}",
            )
        ]
    if "profile" in rec:
        rec["profile"] = dataclasses.replace(rec["profile"], gpu_memory_utilization=u)
    return []


def parse_rows(
    df: pd.DataFrame,
    name: str = "input",
    lines: list[int] | None = None,
    reserved: tuple[str, ...] = OUTPUT_COLUMNS,
) -> list[dict]:
    """Validate every row; return one parsed record per row or raise :class:`InputError` listing all problems.

    ``lines`` gives the row number of the header and of each row in the file
    (default: the header is row 1, then one row per line). Column names match
    case-insensitively after stripping spaces; ``reserved`` names the output
    columns the input must not have.
    """
    lines = list(range(1, len(df) + 2)) if lines is None else list(lines)
    cols = _column_positions(df, name, lines[0], reserved)
    fast = _parse_fast(df, cols, lines)
    if fast is not None:
        return fast
    problems, unknown, out = [], {}, []
    keys, positions = list(cols), list(cols.values())
    values = df.to_numpy(dtype=object)  # one conversion, then plain row tuples
    lookups: dict = {}  # (column, text) -> spec or error: each distinct name is looked up once
    for i, row_values in enumerate(values):
        rec: dict = {"row": lines[i + 1]}
        cells = {c: str(row_values[k]).strip() for c, k in zip(keys, positions, strict=True)}
        bad = _parse_names(cells, rec, unknown, lookups)
        bad += _parse_counts(cells, rec)
        bad += _parse_concurrency(cells, rec)
        bad += _parse_memory_utilization(cells, rec)
        problems += [f"{_where(name, rec['row'], c)}: {msg}" for c, msg in bad]
        out.append(rec)
    names = []  # unknown names first: their message lists the known ones
    for (c, _), (msg, rows) in unknown.items():
        shown = ", ".join(map(str, rows[:10])) + (" ..." if len(rows) > 10 else "")
        names.append(f"{name}, column {c!r}, row(s) {shown}: {msg}")
    problems = names + problems
    if problems:
        raise InputError(problems)
    return out


def context_reason(rec: dict) -> str | None:
    """Why a parsed row's requests are longer than its model's context window (None when they are not)."""
    model, total = rec["model"], rec["isl"] + rec["osl"]
    if total <= model.max_context:
        return None
    return (
        f"{model.name} accepts at most {model.max_context} tokens of context (max_context, data/models.csv), "
        f"fewer than one request of isl + osl = {total} tokens"
    )


def _with_long_run_ceiling(df: pd.DataFrame, unset: np.ndarray, ceiling: np.ndarray) -> pd.DataFrame:
    """``df`` (a sweep) with the throughput of the rows ``unset`` (empty concurrency) replaced by the long-run
    maximum.

    Per-user throughput stays total / concurrency, with the concurrency the
    sweep used (the smallest that fills every KV batch).
    """
    df = df.copy()
    total = np.asarray(ceiling, float)
    df.loc[unset, "output_tok_s"] = total
    df.loc[unset, "tok_s_per_gpu"] = total / df.loc[unset, "num_gpus"].to_numpy(float)
    df.loc[unset, "tok_s_per_user"] = total / df.loc[unset, "concurrency"].to_numpy(float)
    return df


def _setup(rec: dict, params) -> Setup:
    """The setup of one parsed row: its model, GPU, profile and dtypes, with ``params``."""
    return Setup(rec["model"], rec["gpu"], rec["profile"], params, rec["weight_dtype"], rec["kv_dtype"])


def predict_rows(records: list[dict], params) -> pd.DataFrame:
    """Predictions for parsed rows (same order); aggregated rows are vectorised per (model, GPU, profile,
    dtypes).

    A row whose requests exceed the model's context window gets no prediction
    and the reason in ``status``. A row with an empty concurrency gets the
    long-run maximum throughput (:func:`whatif.long_run_ceiling`), with
    the latencies of the sweep at the smallest concurrency that fills every KV batch.
    """
    from . import whatif  # deferred, as every model import here: `servingmodel --help` stays fast

    res = pd.DataFrame(np.nan, index=range(len(records)), columns=list(OUTPUT_COLUMNS[:-1]), dtype=float)
    status = ["ok"] * len(records)
    groups: dict = {}
    for i, rec in enumerate(records):
        reason = context_reason(rec)
        if reason:
            status[i] = reason
        elif rec["kind"] == "aggregated":
            # the profile itself, not its name: a gpu_memory_utilization column makes per-row profiles
            key = (rec["model"].name, rec["gpu"].name, rec["profile"], rec["weight_dtype"], rec["kv_dtype"])
            groups.setdefault(key, []).append(i)
    for idx in groups.values():
        setup = _setup(records[idx[0]], params)

        def get(c, rows=idx):
            return np.array([np.nan if records[i][c] is None else records[i][c] for i in rows], float)

        df = whatif.sweep(
            setup,
            tp=get("tp"),
            replicas=get("replicas"),
            concurrency=get("concurrency"),
            isl=get("isl"),
            osl=get("osl"),
        )
        unset = np.array([records[i]["concurrency"] is None for i in idx])
        if unset.any():
            rows = [i for i, u in zip(idx, unset, strict=True) if u]
            ceiling = whatif.long_run_ceiling(
                setup,
                tp=get("tp", rows),
                replicas=get("replicas", rows),
                isl=get("isl", rows),
                osl=get("osl", rows),
            )
            df = _with_long_run_ceiling(df, unset, ceiling)
        _store(res, status, idx, df, records, params)
    for i, rec in enumerate(records):
        if rec["kind"] != "disaggregated" or status[i] != "ok":
            continue
        setup = _setup(rec, params)
        lay = {c: rec[c] for c in (*PD_COLUMNS, "isl", "osl")}
        concurrency = np.nan if rec["concurrency"] is None else rec["concurrency"]
        df = whatif.sweep_disaggregated(setup, concurrency=concurrency, **lay)
        if rec["concurrency"] is None:
            ceiling = whatif.long_run_ceiling_disaggregated(setup, **lay)
            df = _with_long_run_ceiling(df, np.array([True]), ceiling)
        _store(res, status, [i], df, records, params)
    res["concurrency_used"] = res["concurrency_used"].astype(
        "Int64"
    )  # a count: written exactly, not to 6 digits
    res["status"] = status
    return res


def _store(res, status, idx, df, records, params) -> None:
    """Copy the sweep ``df`` (rows in the order of ``idx``) into ``res``; rows it could not serve get the
    reason in ``status`` instead (column-wise: one assignment per column, not per cell)."""
    from . import whatif  # deferred (see predict_rows)

    cols = {
        "concurrency_used": "concurrency",
        "pred_output_tok_s": "output_tok_s",
        "pred_tok_s_per_gpu": "tok_s_per_gpu",
        "pred_tok_s_per_user": "tok_s_per_user",
        "pred_ttft_ms": "ttft_ms",
        "pred_tpot_ms": "tpot_ms",
        "pred_max_batch": "max_batch",
    }
    idx = np.asarray(idx, dtype=int)
    served = df["fits"].to_numpy(bool) & np.isfinite(df["output_tok_s"].to_numpy(float))
    for out, src in cols.items():
        column = res[out].to_numpy(float, copy=True)
        column[idx[served]] = df[src].to_numpy(float)[served]
        res[out] = column
    capacity: dict = {}  # (names, dtypes, tp) -> (setup, why the weights do not fit or KV tokens, fit terms)
    known_profiles = profiles()
    for k in np.flatnonzero(~served):
        i = int(idx[k])
        rec = records[i]
        if rec["kind"] == "aggregated":
            instances = [(rec["tp"], rec["osl"])]
        else:  # the decode instance holds whole requests, the prefill instance one prompt
            instances = [(rec["d_tp"], rec["osl"]), (rec["p_tp"], 0)]
        reason = None
        for tp, osl in instances:
            key = (
                rec["model"].name,
                rec["gpu"].name,
                rec["profile"],
                rec["weight_dtype"],
                rec["kv_dtype"],
                tp,
            )
            if key not in capacity:  # with isl = osl = 0 only the weights can fail to fit
                setup = _setup(rec, params)
                fits = whatif.insufficient_memory_reason(setup, tp=tp, isl=0, osl=0)
                cap = fits or float(whatif.kv_capacity_tokens(setup, tp=tp))
                capacity[key] = (setup, cap, whatif.fit_terms(setup, tp=tp))
            setup, cap, terms = capacity[key]
            tokens = rec["isl"] + osl
            if reason is None and (isinstance(cap, str) or cap < tokens):
                why = (
                    cap
                    if isinstance(cap, str)
                    else kvcache.short_of_tokens(rec["model"], rec["gpu"], tp, cap, tokens)
                )
                hint = whatif.fit_hint(setup, terms, tp=tp, request_tokens=tokens, profiles=known_profiles)
                reason = f"{why}; {hint}"
        status[i] = reason or "no prediction: the model returned no finite throughput for this row"


def _output_problem(path: str, inputs: tuple[str, ...] = ()) -> str | None:
    """Why ``path`` cannot take the output (None when it can): it is an input, a folder, or below a file."""
    if path == "-":
        return None
    out = Path(path)
    for src in inputs:
        if src != "-" and out.exists() and Path(src).exists() and os.path.samefile(out, src):
            return f"{path} is the input file {src}: the output would overwrite it; choose another -o"
    if out.is_dir():
        return f"{path} is a directory; -o needs a file name"
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                return f"{path}: {parent} is a file, not a folder, so the output cannot be written below it"
            break
    return None


def _render_csv(df: pd.DataFrame, float_format: str | None):
    """The lines of ``df`` as CSV, as pandas' ``to_csv(index=False)`` writes them, column by column:
    floats by ``float_format`` (None: the shortest exact form), missing values empty, text quoted
    where it must be."""
    columns = []
    for name in df.columns:
        col = df[name]
        values = col.tolist()
        if pd.api.types.is_float_dtype(col.dtype):
            fmt = (lambda v: repr(v)) if float_format is None else (lambda v: float_format % v)
            columns.append(["" if v != v else fmt(v) for v in values])
        else:
            columns.append(
                ["" if v is None or v is pd.NA or (isinstance(v, float) and v != v) else v for v in values]
            )
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(df.columns)
    yield buf.getvalue()
    for start in range(0, len(df), 10_000):
        buf.seek(0)
        buf.truncate()
        writer.writerows(zip(*(c[start : start + 10_000] for c in columns), strict=True))
        yield buf.getvalue()


def _write(df: pd.DataFrame, path: str, float_format: str | None = "%.6g") -> None:
    """Write ``df`` as CSV (predictions to 6 significant digits; ``float_format`` None keeps full
    precision), atomically: into a temporary file beside ``path``, renamed over it only when complete,
    so a failed write never leaves a truncated file or changes an existing one.
    """
    if path == "-":
        sys.stdout.writelines(_render_csv(df, float_format))
        return
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.writelines(_render_csv(df, float_format))
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def replay_ttft(records: list[dict], pred: pd.DataFrame, params) -> pd.Series:
    """Which model gives each row's TTFT, replacing ``pred_ttft_ms`` by the step replay's where it applies.

    The replay (chapter 08) runs the benchmark's closed loop through vLLM's
    scheduler; it applies to aggregated rows with a concurrency of at most
    :data:`REPLAY_MAX_CONCURRENCY` that fit, so that a row costs at most about
    a second. Other rows keep the mean-field TTFT, and ``ttft_model`` says
    why. A progress bar on standard error counts the replayed rows.
    """
    from tqdm import tqdm  # deferred (see predict_rows)

    from .layout import Layout
    from .stepsim import replay_point

    source = pd.Series("mean field", index=pred.index)
    todo = []
    for i, rec in enumerate(records):
        if rec["kind"] != "aggregated" or rec["concurrency"] is None or pred.loc[i, "status"] != "ok":
            continue
        if rec["concurrency"] > REPLAY_MAX_CONCURRENCY:
            source[i] = f"mean field (the replay is limited to concurrency {REPLAY_MAX_CONCURRENCY})"
            continue
        todo.append(i)
    for i in tqdm(todo, desc="replaying", unit="row", file=sys.stderr, disable=None):
        rec = records[i]
        run = replay_point(
            _setup(rec, params),
            Layout("aggregated", tp=int(rec["tp"]), replicas=int(rec["replicas"])),
            isl=int(rec["isl"]),
            osl=int(rec["osl"]),
            concurrency=int(rec["concurrency"]),
        )
        pred.loc[i, "pred_ttft_ms"] = run.mean_ttft_s * 1e3
        source[i] = "replay"
    return source


def cmd_predict(args) -> int:
    from .calibrated import calibrated_params  # deferred (see predict_rows)

    name = Path(args.input).name if args.input != "-" else "stdin"
    problem = _output_problem(args.output, (args.input,))
    if problem:
        raise InputError([problem])
    raw, lines = _read_input(args.input, name)
    reserved = OUTPUT_COLUMNS + ((REPLAY_COLUMN,) if args.replay else ())
    records = parse_rows(raw, name=name, lines=lines, reserved=reserved)
    params = calibrated_params()
    pred = predict_rows(records, params)
    if args.replay:
        pred.insert(
            pred.columns.get_loc("pred_ttft_ms") + 1, REPLAY_COLUMN, replay_ttft(records, pred, params)
        )
    pred.index = raw.index
    _write(pd.concat([raw, pred], axis=1), args.output)
    return EXIT_OK


def cmd_reproduce(args) -> int:
    # deferred (see predict_rows)
    from .calibrated import calibrated_params
    from .fullmodel import PRED_COLUMNS, predict_measurements
    from .measurements import DEPLOYMENT_COLUMNS, load_measurements
    from .stepsim import replay_measurements, with_replayed_ttft

    problem = _output_problem(args.output)
    if problem:
        raise InputError([problem])
    meas = load_measurements()
    params = calibrated_params()
    pred = with_replayed_ttft(predict_measurements(meas, params), replay_measurements(meas, params))
    out = pd.concat([pred[[*DEPLOYMENT_COLUMNS, *PRED_COLUMNS]], meas[["output_tok_s"]]], axis=1)
    _write(out, args.output, float_format=None)  # full precision: the measured values stay exact
    return EXIT_OK


def cmd_profiles(args) -> int:
    for name, p in sorted(profiles().items()):
        routing = f"{p.routing} routing"
        host = "host penalty on" if p.cpu_limited else "no host penalty"
        print(
            f"{name}: {p.description} [gpu-memory-utilization {p.gpu_memory_utilization:g}, "
            f"{p.cpu_cores:g} CPU cores, {routing}, {host}]"
        )
    return EXIT_OK


def known_names_help() -> str:
    """The model, GPU and profile names the registry knows (data/), for the help."""
    try:
        groups = (
            ("models (or a Hugging Face id)", model_names()),
            ("GPUs (or a benchmark label or alias)", gpu_names()),
            ("profiles", sorted(profiles())),
        )
    except SpecError as e:
        return f"known names: unavailable ({e})"
    return "known names (case-insensitive; data/models.csv, data/gpus.csv, data/profiles.csv):\n" + "\n".join(
        textwrap.fill(", ".join(names), width=100, initial_indent=f"  {what}: ", subsequent_indent="    ")
        for what, names in groups
    )


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    names = known_names_help()
    parser = argparse.ArgumentParser(
        prog="servingmodel",
        formatter_class=fmt,
        description="Predict LLM serving throughput and latency with the calibrated first-principles model.",
        epilog="commands:\n"
        "  servingmodel predict INPUT.csv -o OUTPUT.csv   one prediction per input row\n"
        "  servingmodel reproduce -o OUTPUT.csv           the calibrated model on every measured\n"
        "                                                 point of the llm-d benchmark\n"
        "  servingmodel profiles                          list the deployment profiles\n\n"
        + INPUT_HELP
        + "\n\n"
        + names
        + "\n\n"
        + EXIT_HELP,
    )
    sub = parser.add_subparsers(dest="command", metavar="{predict,reproduce,profiles}")
    sub.required = True
    p = sub.add_parser(
        "predict",
        formatter_class=fmt,
        help="predict every row of a CSV file",
        description="Predict every row of INPUT.csv with the calibrated model.",
        epilog=INPUT_HELP + "\n\n" + names + "\n\n" + EXIT_HELP,
    )
    p.add_argument("input", metavar="INPUT.csv", help="input CSV file ('-' reads standard input)")
    p.add_argument(
        "-o",
        "--output",
        metavar="OUTPUT.csv",
        required=True,
        help="output CSV file ('-' writes standard output)",
    )
    p.add_argument(
        "--replay",
        action="store_true",
        help="take pred_ttft_ms from the step-level replay of the closed loop (the book's TTFT "
        "model, chapter 08) on aggregated rows with a concurrency of at most "
        f"{REPLAY_MAX_CONCURRENCY} (a second per row at most; above it the row keeps the mean-field "
        "TTFT), and add a column ttft_model "
        "(replay or mean field) after it; slower, about a second per row at high concurrency. "
        "Only pred_ttft_ms changes: the throughputs and pred_tpot_ms stay the mean-field "
        "model's, so a replayed row mixes two models and its TTFT need not be consistent with "
        "its per-user throughput",
    )
    p.set_defaults(func=cmd_predict)
    r = sub.add_parser(
        "reproduce",
        formatter_class=fmt,
        help="the calibrated model on every measured point",
        description="One row per measured point of the llm-d benchmark: the deployment columns "
        "(deployment, family, kind, tp, replicas, p_tp, p_replicas, d_tp, d_replicas, "
        "concurrency), the calibrated model's pred_* columns as the book's final model "
        "explains them (aggregated pods with the standalone profile, the llm-d pods "
        "served aggregated with the modelservice profile; throughput and TPOT from the "
        "mean-field model, TTFT from the step-level replay), and the measured "
        "output_tok_s.",
        epilog=EXIT_HELP,
    )
    r.add_argument(
        "-o",
        "--output",
        metavar="OUTPUT.csv",
        required=True,
        help="output CSV file ('-' writes standard output)",
    )
    r.set_defaults(func=cmd_reproduce)
    q = sub.add_parser(
        "profiles",
        help="list the deployment profiles (data/profiles.csv)",
        description="List the deployment profiles, one line each (data/profiles.csv).",
    )
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
    except (
        SpecError,
        MeasurementError,
    ) as e:  # a data file (data/ or $SERVINGMODEL_DATA) that cannot be used
        print(f"servingmodel: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (kvcache.InsufficientMemoryError, OSError) as e:
        print(f"servingmodel: error: {e}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
