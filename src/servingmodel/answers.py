"""The numbers behind the answers to the reader's three questions (chapter 10).

Each function evaluates the calibrated model (or a variant of it with one term
removed) on the benchmark's own deployments and returns a small table with the
matching measurements next to it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import disagg, evaluate, fullmodel, host
from .fullmodel import decode_step_breakdown, predict_aggregated
from .layout import MODELSERVICE, STANDALONE, Layout, benchmark_setup, workload
from .setup import ModelParams, Setup
from .specs import constant, get_gpu, get_model, get_profile


def _setup(meas: pd.DataFrame, params: ModelParams, profile: str = STANDALONE) -> tuple[Setup, int, int]:
    """The benchmark's model and GPU on ``profile`` pods with ``params``, and its (isl, osl)."""
    r = meas.iloc[0]
    isl, osl = workload(r)
    return Setup(get_model(r["model"]), get_gpu(r["gpu"]), get_profile(profile), params), isl, osl


def benchmark_tps(meas: pd.DataFrame) -> list[int]:
    """The TP sizes of the measured aggregated deployments, in increasing order (the defaults of this
    module).
    """
    tps = sorted(int(t) for t in meas.loc[meas["kind"] == "aggregated", "tp"].unique())
    if not tps:
        raise ValueError("no aggregated deployment among the measurements")
    return tps


def ceilings(
    meas: pd.DataFrame, params: ModelParams, tps=None, concurrency_per_instance: int | None = None
) -> pd.DataFrame:
    """Per-GPU ceiling of one standalone instance per TP: measured, modelled, and modelled without the host
    penalty.

    The measured ceiling is the largest per-GPU throughput of the family; the
    modelled ones are one instance at ``concurrency_per_instance`` requests,
    where every instance is saturated. ``max_batch`` is the KV-cache limit.
    """
    if concurrency_per_instance is None:  # the benchmark's highest load
        concurrency_per_instance = int(meas["concurrency"].max())
    setup, isl, osl = _setup(meas, params)
    point = dict(isl=isl, osl=osl, concurrency=concurrency_per_instance)
    rows = []
    for tp in tps or benchmark_tps(meas):
        fam = meas[meas["family"] == f"TP{tp}"]
        lay = Layout("aggregated", tp=tp, replicas=1)
        full = predict_aggregated(setup, lay, **point)
        bare = predict_aggregated(setup.with_params(host_penalty_s=0.0), lay, **point)
        rows.append(
            {
                "tp": tp,
                "measured": float(fam["tok_s_per_gpu"].max()),
                "model": full.tok_s_per_gpu,
                "model_without_host_penalty": bare.tok_s_per_gpu,
                "max_batch": full.max_batch,
            }
        )
    return pd.DataFrame(rows)


def equal_load(meas: pd.DataFrame, pred: pd.DataFrame, requests_per_gpu: float = 8.0) -> pd.DataFrame:
    """Measured and predicted per-GPU throughput of every deployment run at ``requests_per_gpu`` requests per
    GPU.
    """
    m = (meas["concurrency"] / meas["num_gpus"] == requests_per_gpu) & (meas["kind"] == "aggregated")
    out = meas.loc[m, ["deployment", "family", "concurrency", "tok_s_per_gpu"]].copy()
    out["predicted"] = pred.loc[m, "pred_tok_s_per_gpu"]
    return out.reset_index(drop=True)


def concurrency_one(
    meas: pd.DataFrame, params: ModelParams, deployments=("TP2 x 1", "TP4 x 1", "TP8 x 1", "1P-TP8 + 1D-TP8")
) -> pd.DataFrame:
    """At concurrency 1: measured and predicted per-user throughput, TTFT and TPOT, and the decode-step parts.

    Step parts (ms) come from :func:`fullmodel.decode_step_breakdown` for the
    instance that serves the lone request; ``nominal_tok_s_per_user`` is the
    full model with every parameter at its sourced nominal value (nothing fitted).
    """
    pred = fullmodel.predict_measurements(meas, params)
    nominal = fullmodel.predict_measurements(meas, ModelParams.nominal())
    rows = []
    for dep in deployments:
        i = meas.index[(meas["deployment"] == dep) & (meas["concurrency"] == 1)][0]
        r = meas.loc[i]
        tp = int(r["tp"]) if r["kind"] == "aggregated" else int(r["d_tp"])
        isl, osl = workload(r)
        parts = decode_step_breakdown(benchmark_setup(r, params), tp=tp, batch=1, isl=isl, osl=osl)
        rows.append(
            {
                "deployment": dep,
                "tp": tp,
                "measured_tok_s_per_user": float(r["tok_s_per_user"]),
                "predicted_tok_s_per_user": float(pred.loc[i, "pred_tok_s_per_user"]),
                "nominal_tok_s_per_user": float(nominal.loc[i, "pred_tok_s_per_user"]),
                "measured_ttft_ms": float(r["mean_ttft_ms"]),
                "predicted_ttft_ms": float(pred.loc[i, "pred_ttft_ms"]),
                "measured_tpot_ms": float(r["mean_tpot_ms"]),
                "predicted_tpot_ms": float(pred.loc[i, "pred_tpot_ms"]),
                **{f"{k[:-2]}_ms": 1e3 * v for k, v in parts.items()},
            }
        )
    return pd.DataFrame(rows)


def dashed_readings(meas: pd.DataFrame, params: ModelParams) -> pd.DataFrame:
    """Error of the two readings of the dashed curves at the calibrated parameters (hypothesis H4)."""
    dashed = meas[meas["kind"] == "disaggregated"]
    rows = []
    for name, predictor in (
        ("aggregated pods behind a router", None),
        ("true prefill/decode disaggregation", disagg.predict_disaggregated),
    ):
        pred = fullmodel.predict_measurements(dashed, params, predictor=predictor)
        med, p90 = evaluate.abs_error_stats(
            evaluate.relative_errors(pred["pred_tok_s_per_gpu"], dashed["tok_s_per_gpu"])
        )
        rows.append({"reading": name, "median": med, "p90": p90})
    return pd.DataFrame(rows)


def prefill_share_at_ceiling(meas: pd.DataFrame, params: ModelParams, tps=None) -> pd.DataFrame:
    """Fraction of a saturated standalone instance's time spent in prefill (hypothesis H2)."""
    setup, isl, osl = _setup(meas, params)
    rows = []
    for tp in tps or benchmark_tps(meas):
        inst = fullmodel.make_instance(setup, tp=tp, isl=isl, osl=osl)
        b = float(inst.max_batch)
        t_pf = float(inst.prefill_s)
        share = b * t_pf / (b * t_pf + (osl - 1) * float(inst.decode_step_s(b)))
        rows.append({"tp": tp, "max_batch": b, "prefill_s": t_pf, "prefill_share": share})
    return pd.DataFrame(rows)


def decode_allreduce_ms(meas: pd.DataFrame, params: ModelParams, tps=None) -> dict:
    """All-reduce time of one decode step at batch 1 per TP (hypothesis H3), in ms."""
    setup, isl, osl = _setup(meas, params, MODELSERVICE)
    return {
        tp: decode_step_breakdown(setup, tp=tp, batch=1, isl=isl, osl=osl)["allreduce_s"] * 1e3
        for tp in tps or benchmark_tps(meas)
    }


def host_step_ms(meas: pd.DataFrame, params: ModelParams, tps=None, profile: str = STANDALONE) -> dict:
    """Host time per engine step (ms) of a CPU-limited pod, per TP size on the given pods (hypothesis H5)."""
    prof = get_profile(profile)
    return {
        tp: 1e3
        * float(
            host.host_step_s(
                tp,
                cpu_cores=prof.cpu_cores,
                cpu_limited=prof.cpu_limited,
                host_penalty_s=params.host_penalty_s,
                processes_besides_workers=constant("processes_besides_workers"),
            )
        )
        for tp in tps or benchmark_tps(meas)
    }


def relative(a, b) -> float:
    """a / b - 1 as a float."""
    return float(np.asarray(a, float) / np.asarray(b, float) - 1.0)


def routing_cost(meas: pd.DataFrame, params: ModelParams) -> pd.DataFrame:
    """Throughput the standalone multi-replica points lose to random routing, by the model.

    Each aggregated point with more than one replica is predicted twice, with the
    Kubernetes Service's random routing and with a balanced router; the table
    gives both and the relative loss.
    """
    setup, isl, osl = _setup(meas, params)
    pts = meas[(meas["kind"] == "aggregated") & (meas["replicas"].astype(float) > 1)]
    common = dict(
        concurrency=pts["concurrency"].to_numpy(float),
        isl=isl,
        osl=osl,
        tp_a=pts["tp"].to_numpy(float),
        count_a=pts["replicas"].to_numpy(float),
    )
    rand = fullmodel.predict_arrays(setup, random_routing=1.0, **common)["output_tok_s"]
    bal = fullmodel.predict_arrays(setup, random_routing=0.0, **common)["output_tok_s"]
    out = pts[["deployment", "family", "concurrency"]].copy()
    out["random_tok_s"] = rand
    out["balanced_tok_s"] = bal
    out["loss"] = 1.0 - rand / bal
    return out.reset_index(drop=True)
