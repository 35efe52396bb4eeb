"""The measured llm-d benchmark points: loading and validation (chapter 01).

The loader is strict: every problem in the file is reported with the file, the
row (1-based, counting the header as row 1) and the column; nothing is dropped
or repaired.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .paths import DATA_DIR, data_dir, read_table
from .specs import UnknownNameError, get_gpu, get_model

MEASUREMENTS_FILE = DATA_DIR / "llmd_h100_llama31_70b_isl10k_osl1k.csv"

COLUMNS = (
    "deployment",
    "family",
    "model",
    "gpu",
    "isl",
    "osl",
    "kind",
    "num_gpus",
    "tp",
    "replicas",
    "p_tp",
    "p_replicas",
    "d_tp",
    "d_replicas",
    "concurrency",
    "output_tok_s",
    "tok_s_per_gpu",
    "tok_s_per_user",
    "mean_ttft_ms",
    "mean_tpot_ms",
    "mean_itl_ms",
    "mean_e2el_ms",
    "source",
)
KINDS = ("aggregated", "disaggregated")
FAMILIES = ("TP2", "TP4", "TP8", "disaggregated")
_POSITIVE_REQUIRED = (
    "isl",
    "osl",
    "num_gpus",
    "concurrency",
    "output_tok_s",
    "tok_s_per_gpu",
    "tok_s_per_user",
)
#: How a deployment's GPUs are split (aggregated: tp, replicas; disaggregated: the four P/D columns).
LAYOUT_COLUMNS = ("tp", "replicas", "p_tp", "p_replicas", "d_tp", "d_replicas")
#: The columns that name one measured point; every prediction frame carries them over.
DEPLOYMENT_COLUMNS = ("deployment", "family", "kind", *LAYOUT_COLUMNS, "concurrency")
_INT_COLUMNS = ("isl", "osl", "num_gpus", *LAYOUT_COLUMNS, "concurrency")
_OPTIONAL_POSITIVE = ("mean_ttft_ms", "mean_tpot_ms", "mean_itl_ms", "mean_e2el_ms")
_AGG_LAYOUT = ("tp", "replicas")
_DISAGG_LAYOUT = ("p_tp", "p_replicas", "d_tp", "d_replicas")
REL_TOL = 1e-6


class MeasurementError(ValueError):
    """A measurement file that does not satisfy the schema."""


def deployment_label(kind, tp, replicas, p_tp, p_replicas, d_tp, d_replicas) -> str:
    """Human label of a deployment: ``TP4 x 2`` or ``1P-TP4 + 3D-TP4``."""
    if kind == "aggregated":
        return f"TP{int(tp)} x {int(replicas)}"
    if kind == "disaggregated":
        return f"{int(p_replicas)}P-TP{int(p_tp)} + {int(d_replicas)}D-TP{int(d_tp)}"
    raise MeasurementError(f"unknown kind {kind!r}; expected one of {KINDS}")


def deployment_family(kind, tp) -> str:
    """The family a curve belongs to: ``TP2``, ``TP4``, ``TP8`` or ``disaggregated``."""
    if kind == "aggregated":
        return f"TP{int(tp)}"
    if kind == "disaggregated":
        return "disaggregated"
    raise MeasurementError(f"unknown kind {kind!r}; expected one of {KINDS}")


def _where(path: Path, row: int, column: str) -> str:
    return f"{path.name}, row {row}, column {column!r}"


def _number(path: Path, row: int, column: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise MeasurementError(f"{_where(path, row, column)}: {text!r} is not a number") from None
    if not np.isfinite(value):
        raise MeasurementError(f"{_where(path, row, column)}: {text!r} is not finite")
    return value


def load_measurements(path: str | Path | None = None) -> pd.DataFrame:
    """Load and validate the measurement file; return one row per measured point.

    Raises :class:`MeasurementError` naming the file, row and column of the
    first problem found.
    """
    path = Path(path) if path is not None else data_dir() / MEASUREMENTS_FILE.name
    raw = read_table(path, MeasurementError)
    missing = [c for c in COLUMNS if c not in raw.columns]
    extra = [c for c in raw.columns if c not in COLUMNS]
    if missing:
        raise MeasurementError(f"{path.name}: missing column(s) {missing}")
    if extra:
        raise MeasurementError(f"{path.name}: unexpected column(s) {extra}")
    if raw.empty:
        raise MeasurementError(f"{path.name}: no data rows")

    records = []
    for i, r in raw.iterrows():
        row = int(i) + 2  # header is row 1
        rec: dict[str, object] = {}
        kind = r["kind"].strip()
        if kind not in KINDS:
            raise MeasurementError(
                f"{_where(path, row, 'kind')}: unknown kind {kind!r}; expected one of {KINDS}"
            )
        rec["kind"] = kind
        for c in ("model", "gpu", "source"):
            if not r[c].strip():
                raise MeasurementError(f"{_where(path, row, c)}: empty")
            rec[c] = r[c].strip()
        for c, lookup in (("model", get_model), ("gpu", get_gpu)):
            try:
                lookup(rec[c])
            except UnknownNameError as e:
                raise MeasurementError(f"{_where(path, row, c)}: {e}") from None
        layout = _AGG_LAYOUT if kind == "aggregated" else _DISAGG_LAYOUT
        other = _DISAGG_LAYOUT if kind == "aggregated" else _AGG_LAYOUT
        for c in COLUMNS:
            if c in ("deployment", "family", "model", "gpu", "kind", "source"):
                continue
            text = r[c].strip()
            if c in other:
                if text:
                    raise MeasurementError(
                        f"{_where(path, row, c)}: must be empty for kind {kind!r}, got {text!r}"
                    )
                rec[c] = np.nan
                continue
            if c in _OPTIONAL_POSITIVE and not text:
                rec[c] = np.nan
                continue
            if not text:
                raise MeasurementError(f"{_where(path, row, c)}: empty")
            value = _number(path, row, c, text)
            if value <= 0:
                raise MeasurementError(f"{_where(path, row, c)}: must be positive, got {text!r}")
            if c in _INT_COLUMNS and value != int(value):
                raise MeasurementError(f"{_where(path, row, c)}: must be a whole number, got {text!r}")
            rec[c] = value
        if kind == "aggregated":
            gpus = rec["tp"] * rec["replicas"]
        else:
            gpus = rec["p_tp"] * rec["p_replicas"] + rec["d_tp"] * rec["d_replicas"]
        if gpus != rec["num_gpus"]:
            raise MeasurementError(
                f"{_where(path, row, 'num_gpus')}: {rec['num_gpus']:g} GPUs does not match the layout "
                f"({gpus:g} GPUs from {', '.join(layout)})"
            )
        for c, denom in (("tok_s_per_gpu", "num_gpus"), ("tok_s_per_user", "concurrency")):
            expected = rec["output_tok_s"] / rec[denom]
            if abs(rec[c] / expected - 1.0) > REL_TOL:
                raise MeasurementError(
                    f"{_where(path, row, c)}: {rec[c]!r} is not output_tok_s / {denom} = {expected!r} "
                    f"(relative tolerance {REL_TOL:g})"
                )
        label = deployment_label(
            kind, rec["tp"], rec["replicas"], rec["p_tp"], rec["p_replicas"], rec["d_tp"], rec["d_replicas"]
        )
        if r["deployment"].strip() != label:
            raise MeasurementError(
                f"{_where(path, row, 'deployment')}: {r['deployment']!r} should be {label!r}"
            )
        family = deployment_family(kind, rec["tp"])
        if r["family"].strip() != family:
            raise MeasurementError(f"{_where(path, row, 'family')}: {r['family']!r} should be {family!r}")
        rec["deployment"] = label
        rec["family"] = family
        records.append(rec)

    df = pd.DataFrame.from_records(records, columns=list(COLUMNS))
    for c in _INT_COLUMNS:
        df[c] = df[c].astype("Int64") if df[c].isna().any() else df[c].astype(int)
    dup = df.duplicated(["deployment", "concurrency"], keep=False)
    if dup.any():
        first = int(np.flatnonzero(dup.to_numpy())[0]) + 2
        raise MeasurementError(f"{_where(path, first, 'concurrency')}: duplicate deployment and concurrency")
    return df


def deployment_order(df: pd.DataFrame) -> list[str]:
    """Deployments in the book's plotting order: TP2 x 1..8, TP4 x 1..4, TP8 x 1..2, then disaggregated."""
    keys = df.drop_duplicates("deployment")
    fam_rank = {f: i for i, f in enumerate(FAMILIES)}

    def key(r):
        n = r["replicas"] if r["kind"] == "aggregated" else 0
        return (fam_rank[r["family"]], 0 if pd.isna(n) else int(n), r["deployment"])

    return [r["deployment"] for _, r in sorted(keys.iterrows(), key=lambda kv: key(kv[1]))]


def bend_concurrency(df: pd.DataFrame, deployment: str, share: float = 0.9) -> int:
    """Lowest measured concurrency at which a deployment reaches ``share`` of its best per-GPU throughput
    (chapter 01).
    """
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], got {share!r}")
    sub = df[df["deployment"] == deployment].sort_values("concurrency")
    if sub.empty:
        raise ValueError(
            f"unknown deployment {deployment!r}; measured ones: {', '.join(dict.fromkeys(df['deployment']))}"
        )
    reached = sub[sub["tok_s_per_gpu"] >= share * sub["tok_s_per_gpu"].max()]
    return int(reached["concurrency"].iloc[0])


def bend_table(df: pd.DataFrame, share: float = 0.9) -> pd.DataFrame:
    """The bend (:func:`bend_concurrency`) of every aggregated deployment, with how it compares within its
    family.

    Columns: ``deployment``, ``family``, ``replicas``, ``bend``, ``later_than_single``
    (the bend comes after the family's single replica's) and
    ``earlier_than_fewer`` (it comes before that of some deployment of the
    family with fewer replicas). The single-replica rows have both False.
    """
    info = df[df["kind"] == "aggregated"].drop_duplicates("deployment")
    out = pd.DataFrame(
        {
            "deployment": info["deployment"].to_numpy(),
            "family": info["family"].to_numpy(),
            "replicas": info["replicas"].astype(int).to_numpy(),
            "bend": [bend_concurrency(df, d, share) for d in info["deployment"]],
        }
    )
    single = out[out["replicas"] == 1].set_index("family")["bend"]
    out["later_than_single"] = (out["replicas"] > 1) & (out["bend"] > out["family"].map(single))
    out["earlier_than_fewer"] = [
        bool(((out["family"] == r.family) & (out["replicas"] < r.replicas) & (out["bend"] > r.bend)).any())
        for r in out.itertuples()
    ]
    return out


def spread_between(df: pd.DataFrame, deployments, column: str = "output_tok_s") -> pd.Series:
    """At each concurrency all ``deployments`` were measured at: their largest ``column`` over their smallest,
    minus one (chapters 01 and 07 compare the three TP4 prefill/decode splits with it)."""
    deployments = list(deployments)
    if len(deployments) < 2:
        raise ValueError("a spread needs at least two deployments")
    missing = sorted(set(deployments) - set(df["deployment"]))
    if missing:
        raise ValueError(f"no measurement of {missing}")
    wide = df[df["deployment"].isin(deployments)].pivot(
        index="concurrency", columns="deployment", values=column
    )
    wide = wide.dropna()
    if wide.empty:
        raise ValueError(f"{deployments} share no concurrency")
    return wide.max(axis=1) / wide.min(axis=1) - 1
