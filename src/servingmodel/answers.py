"""The numbers behind the answers to the reader's three questions (chapter 10).

Each function evaluates the calibrated model (or a variant of it with one term
removed) on the benchmark's own deployments and returns a small table with the
matching measurements next to it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from . import checks, disagg, evaluate, fullmodel
from .fullmodel import Features, Layout, ModelParams, decode_step_breakdown, predict_aggregated
from .specs import get_gpu, get_model, get_profile

STANDALONE = "llm-d-standalone"
MODELSERVICE = "llm-d-modelservice"


def _workload(meas: pd.DataFrame):
    r = meas.iloc[0]
    return get_model(r["model"]), get_gpu(r["gpu"]), int(r["isl"]), int(r["osl"])


def _measured_point(meas: pd.DataFrame, deployment: str, concurrency: int):
    """The one measured row of ``deployment`` at ``concurrency``, with its model, GPU, ISL, OSL, layout and profile."""
    point = meas[(meas["deployment"] == deployment) & (meas["concurrency"] == concurrency)]
    if len(point) != 1:
        raise ValueError(
            f"expected one measured point of {deployment!r} at concurrency {concurrency}, found {len(point)}"
        )
    r = point.iloc[0]
    model, gpu, isl, osl = _workload(point)
    return r, model, gpu, isl, osl, fullmodel.layout_of(r), fullmodel.benchmark_profile(r)


def benchmark_tps(meas: pd.DataFrame) -> list[int]:
    """The TP sizes of the measured aggregated deployments, in increasing order (the defaults of this module)."""
    tps = sorted(int(t) for t in meas.loc[meas["kind"] == "aggregated", "tp"].unique())
    if not tps:
        raise ValueError("no aggregated deployment among the measurements")
    return tps


def ceilings(
    meas: pd.DataFrame, params: ModelParams, tps=None, concurrency_per_instance: int | None = None
) -> pd.DataFrame:
    """Per-GPU ceiling of one standalone instance per TP: measured, modelled, and modelled without the host penalty.

    The measured ceiling is the largest per-GPU throughput of the family; the
    modelled ones are one instance at ``concurrency_per_instance`` requests,
    where every instance is saturated. ``max_batch`` is the KV-cache limit.
    """
    if concurrency_per_instance is None:  # the benchmark's highest load
        concurrency_per_instance = int(meas["concurrency"].max())
    model, gpu, isl, osl = _workload(meas)
    prof = get_profile(STANDALONE)
    no_host = dataclasses.replace(params, host_penalty_s=0.0)
    rows = []
    for tp in tps or benchmark_tps(meas):
        fam = meas[meas["family"] == f"TP{tp}"]
        lay = Layout("aggregated", tp=tp, replicas=1)
        full = predict_aggregated(model, gpu, isl, osl, lay, concurrency_per_instance, prof, params)
        bare = predict_aggregated(model, gpu, isl, osl, lay, concurrency_per_instance, prof, no_host)
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
    """Measured and predicted per-GPU throughput of every deployment run at ``requests_per_gpu`` requests per GPU."""
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
    model, gpu, isl, osl = _workload(meas)
    pred = fullmodel.predict_measurements(meas, params)
    nominal = fullmodel.predict_measurements(meas, ModelParams.nominal())
    rows = []
    for dep in deployments:
        i = meas.index[(meas["deployment"] == dep) & (meas["concurrency"] == 1)][0]
        r = meas.loc[i]
        tp = int(r["tp"]) if r["kind"] == "aggregated" else int(r["d_tp"])
        prof = get_profile(STANDALONE if r["kind"] == "aggregated" else MODELSERVICE)
        parts = decode_step_breakdown(model, gpu, tp, 1, isl, osl, prof, params)
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
        pred = fullmodel.predict_measurements(dashed, params, Features(), predictor=predictor)
        med, p90 = evaluate.abs_error_stats(
            evaluate.relative_errors(pred["pred_tok_s_per_gpu"], dashed["tok_s_per_gpu"])
        )
        rows.append({"reading": name, "median": med, "p90": p90})
    return pd.DataFrame(rows)


def prefill_share_at_ceiling(meas: pd.DataFrame, params: ModelParams, tps=None) -> pd.DataFrame:
    """Fraction of a saturated standalone instance's time spent in prefill (hypothesis H2)."""
    model, gpu, isl, osl = _workload(meas)
    prof = get_profile(STANDALONE)
    rows = []
    for tp in tps or benchmark_tps(meas):
        inst = fullmodel.make_instance(model, gpu, tp, isl, osl, prof, params, Features())
        b = float(inst.max_batch)
        t_pf = float(inst.prefill_s)
        share = b * t_pf / (b * t_pf + (osl - 1) * float(inst.decode_step_s(b)))
        rows.append({"tp": tp, "max_batch": b, "prefill_s": t_pf, "prefill_share": share})
    return pd.DataFrame(rows)


def decode_allreduce_ms(meas: pd.DataFrame, params: ModelParams, tps=None) -> dict:
    """All-reduce time of one decode step at batch 1 per TP (hypothesis H3), in ms."""
    model, gpu, isl, osl = _workload(meas)
    prof = get_profile(MODELSERVICE)
    return {
        tp: decode_step_breakdown(model, gpu, tp, 1, isl, osl, prof, params)["allreduce_s"] * 1e3
        for tp in tps or benchmark_tps(meas)
    }


def host_penalty_ms(meas: pd.DataFrame, params: ModelParams, tps=None, profile: str = STANDALONE) -> dict:
    """CPU-starvation time per decode step (ms) per TP size on the given pods (hypothesis H5)."""
    from . import deployment
    from .specs import constant

    prof = get_profile(profile)
    return {
        tp: 1e3
        * float(
            deployment.host_penalty_s(tp, prof, params.host_penalty_s, constant("processes_besides_workers"))
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
    model, gpu, isl, osl = _workload(meas)
    prof = get_profile(STANDALONE)
    pts = meas[(meas["kind"] == "aggregated") & (meas["replicas"].astype(float) > 1)]
    common = dict(
        concurrency=pts["concurrency"].to_numpy(float),
        isl=isl,
        osl=osl,
        tp_a=pts["tp"].to_numpy(float),
        count_a=pts["replicas"].to_numpy(float),
        gpu_memory_utilization=prof.gpu_memory_utilization,
        cpu_cores=prof.cpu_cores,
        host_penalty=float(prof.host_penalty),
    )
    rand = fullmodel.predict_arrays(model, gpu, params, Features(), random_routing=1.0, **common)[
        "output_tok_s"
    ]
    bal = fullmodel.predict_arrays(model, gpu, params, Features(), random_routing=0.0, **common)[
        "output_tok_s"
    ]
    out = pts[["deployment", "family", "concurrency"]].copy()
    out["random_tok_s"] = rand
    out["balanced_tok_s"] = bal
    out["loss"] = 1.0 - rand / bal
    return out.reset_index(drop=True)


#: One 4-core standalone pod against llm-d pods (32 cores) of the same TP size, both measured.
CPU_PAIRS = {4: ("TP4 x 1", "1P-TP4 + 3D-TP4"), 8: ("TP8 x 1", "1P-TP8 + 1D-TP8")}


def cpu_pairs(meas: pd.DataFrame, pairs: dict = CPU_PAIRS) -> pd.DataFrame:
    """Measured extra time per output token of the 4-core pods, at equal requests per pod (hypothesis H5).

    One row per TP size and shared per-pod load, with ``tp``, ``deployment``
    and ``reference`` added to the columns of :func:`deployment.paired_excess`.
    Model-free: only measured throughputs enter.
    """
    from .deployment import paired_excess

    frames = [
        paired_excess(meas, dep, ref).assign(tp=tp, deployment=dep, reference=ref)
        for tp, (dep, ref) in pairs.items()
    ]
    return pd.concat(frames, ignore_index=True)


def lone_request_excess_ms(pairs: pd.DataFrame) -> dict:
    """TP size -> extra ms per output token of the 4-core pod when it serves a single request."""
    lone = pairs[pairs["per_instance_concurrency"] == 1]
    if lone["tp"].duplicated().any() or lone.empty:
        raise ValueError("expected one lone-request row per TP size")
    return {int(tp): 1e3 * float(e) for tp, e in zip(lone["tp"], lone["excess_s"])}


def whole_request_plateau(
    meas: pd.DataFrame,
    params: ModelParams,
    deployment: str = "TP2 x 1",
    concurrency: int = 32,
    reserves_gib=None,
) -> dict:
    """The measured plateau of one deployment read as a whole number of requests (chapters 08 and 10).

    Replays the measured point with the memory reserve at each of
    ``reserves_gib`` (:func:`servingmodel.stepsim.reserve_staircase`; by
    default 0.1 GiB steps from 0.7 GiB below to 0.1 GiB above the calibrated
    reserve, rounded to 0.1 GiB) and at the calibrated reserve. Returns
    ``table`` (the staircase), ``steps`` (for each number of requests
    running without preemption: the replayed
    tok/s/GPU and the largest reserve that allows it), ``measured`` (tok/s/GPU),
    ``matched`` (the step nearest the measurement) and ``calibrated`` (the
    replay's row at the calibrated reserve).
    """
    from . import stepsim

    r, model, gpu, isl, osl, lay, prof = _measured_point(meas, deployment, concurrency)
    if reserves_gib is None:
        reserves_gib = np.round(params.memory_reserve_gib + np.arange(-7, 2) / 10, 1)
    table = stepsim.reserve_staircase(model, gpu, isl, osl, lay, concurrency, prof, params, reserves_gib)
    calibrated = stepsim.reserve_staircase(
        model, gpu, isl, osl, lay, concurrency, prof, params, [params.memory_reserve_gib]
    ).iloc[0]
    clean = table[table["preemptions"] == 0]
    if clean.empty:
        raise ValueError(f"every replay of {deployment!r} preempts; no step of the staircase is clean")
    steps = (
        clean.groupby("peak_running")
        .agg(replay_tok_s_per_gpu=("replay_tok_s_per_gpu", "max"), max_reserve_gib=("reserve_gib", "max"))
        .reset_index()
    )
    measured = float(r["tok_s_per_gpu"])
    matched = steps.loc[(steps["replay_tok_s_per_gpu"] - measured).abs().idxmin()]
    return {
        "table": table,
        "steps": steps,
        "measured": measured,
        "matched": matched,
        "calibrated": calibrated,
    }


STALE_ROUTINGS = ("stale", "stale-herd")


def stale_router_ttft(
    meas: pd.DataFrame, params: ModelParams, seeds: int | None = None, refresh_s: float | None = None
) -> pd.DataFrame:
    """The llm-d pods' loaded points with a published TTFT, replayed behind each router (chapter 08).

    Columns: ``deployment``, ``concurrency``, ``measured_ttft_ms`` and
    ``measured_output_tok_s``, then ``<router>_ttft_ms`` and
    ``<router>_output_tok_s`` for ``balanced``, ``stale`` and ``stale_herd``;
    the stale routers scrape pod state every ``refresh_s`` (default
    ``router_refresh_s``; :class:`servingmodel.stepsim.StaleRouter`).
    """
    from . import stepsim

    pts = meas[meas["mean_ttft_ms"].notna() & (meas["concurrency"] > 1) & (meas["family"] == "disaggregated")]
    if pts.empty:
        raise ValueError("no loaded llm-d point with a published TTFT")
    out = pd.DataFrame(
        {
            "deployment": pts["deployment"],
            "concurrency": pts["concurrency"],
            "measured_ttft_ms": pts["mean_ttft_ms"],
            "measured_output_tok_s": pts["output_tok_s"],
        }
    )
    for routing in ("balanced",) + STALE_ROUTINGS:
        rep = stepsim.replay_measurements(
            pts, params, seeds, routing=routing, refresh_s=None if routing == "balanced" else refresh_s
        )
        key = routing.replace("-", "_")
        out[f"{key}_ttft_ms"] = rep["replay_ttft_ms"]
        out[f"{key}_output_tok_s"] = rep["replay_output_tok_s"]
    return out


def stale_router_sensitivity(
    meas: pd.DataFrame, params: ModelParams, refreshes_s, seeds: int | None = None
) -> pd.DataFrame:
    """The stale routers' replay of the llm-d pods for each scrape interval in ``refreshes_s`` (chapter 08).

    Covers every llm-d point at a concurrency where one of them published a
    loaded TTFT. One row per router and point: ``router`` (``balanced``,
    ``stale`` or ``stale-herd``), ``refresh_ms`` (NaN for balanced),
    ``deployment``, ``concurrency``, ``ttft_error`` (replay / measured - 1,
    NaN without a published TTFT) and ``tok_error`` (output throughput, likewise).
    """
    from . import stepsim

    llmd = meas[meas["family"] == "disaggregated"]
    loads = set(llmd.loc[llmd["mean_ttft_ms"].notna() & (llmd["concurrency"] > 1), "concurrency"])
    if not loads:
        raise ValueError("no loaded llm-d point with a published TTFT")
    pts = llmd[llmd["concurrency"].isin(loads)]
    runs = [("balanced", float("nan"), stepsim.replay_measurements(pts, params, seeds, routing="balanced"))]
    for routing in STALE_ROUTINGS:
        for r in refreshes_s:
            runs.append(
                (
                    routing,
                    1e3 * float(r),
                    stepsim.replay_measurements(pts, params, seeds, routing=routing, refresh_s=float(r)),
                )
            )
    frames = [
        pd.DataFrame(
            {
                "router": name,
                "refresh_ms": ms,
                "deployment": pts["deployment"],
                "concurrency": pts["concurrency"],
                "ttft_error": rep["replay_ttft_ms"] / pts["mean_ttft_ms"] - 1,
                "tok_error": rep["replay_output_tok_s"] / pts["output_tok_s"] - 1,
            }
        )
        for name, ms, rep in runs
    ]
    return pd.concat(frames, ignore_index=True)


def stale_router_summary(sens: pd.DataFrame) -> pd.DataFrame:
    """One row per router and interval of :func:`stale_router_sensitivity`: the TTFT error at each published
    point (``ttft <deployment> @<C>``) and the least and greatest throughput error over the deployments at
    each concurrency (``tok min @<C>``, ``tok max @<C>``), all fractions."""
    keys = ["router", "refresh_ms"]
    sens = sens.assign(refresh_ms=sens["refresh_ms"].fillna(-1.0))  # groupby drops NaN keys
    ttft = sens.dropna(subset=["ttft_error"]).assign(
        col=lambda d: "ttft " + d["deployment"] + " @" + d["concurrency"].astype(str)
    )
    wide = ttft.pivot_table(index=keys, columns="col", values="ttft_error", sort=False)
    tok = (
        sens.groupby(keys + ["concurrency"], sort=False)["tok_error"]
        .agg(["min", "max"])
        .unstack("concurrency")
    )
    tok.columns = [f"tok {stat} @{c}" for stat, c in tok.columns]
    out = wide.join(tok).reset_index()
    out["refresh_ms"] = out["refresh_ms"].where(out["refresh_ms"] >= 0)
    return out


def opening_burst_share(
    meas: pd.DataFrame,
    params: ModelParams,
    deployment: str,
    concurrency: int,
    routing: str = "stale-herd",
    reference: str = "balanced",
    seeds: int | None = None,
) -> float:
    """Share of the extra TTFT of ``routing`` over ``reference`` that falls on the runs' first C requests.

    Pooled over all runs of :func:`servingmodel.stepsim.replay_runs` for each
    router at one measured point; the first C requests of a run are the
    closed loop's opening burst, all sent at once.
    """
    from . import stepsim

    _, model, gpu, isl, osl, lay, prof = _measured_point(meas, deployment, concurrency)
    first, total = {}, {}
    for k in (routing, reference):
        runs = [
            run.ttft_by_arrival_s()
            for run in stepsim.replay_runs(
                model, gpu, isl, osl, lay, concurrency, prof, params, seeds, routing=k
            )
        ]
        first[k] = sum(t[:concurrency].sum() for t in runs) / len(runs)
        total[k] = sum(t.sum() for t in runs) / len(runs)
    extra = total[routing] - total[reference]
    if not extra > 0:
        raise ValueError(
            f"{routing} adds no wait over {reference} at {deployment!r}, concurrency {concurrency}"
        )
    return float((first[routing] - first[reference]) / extra)


def stale_router_gap_closed(summary: pd.DataFrame, router: str, refresh_ms: float, column: str) -> float:
    """Share of the balanced router's TTFT miss in ``column`` that ``router`` at ``refresh_ms`` removes:
    1 - |its error| / |balanced error|, from :func:`stale_router_summary` (chapter 08)."""
    base = _summary_row(summary, "balanced", None)[column]
    if not base != 0:
        raise ValueError(f"the balanced router has no miss to close in {column!r}")
    return float(1 - abs(_summary_row(summary, router, refresh_ms)[column]) / abs(base))


def shortest_interval_within(summary: pd.DataFrame, router: str, column: str, tolerance: float):
    """The shortest scrape interval (ms) at which ``router`` brings ``column`` of :func:`stale_router_summary`
    within +-``tolerance`` (a fraction), with that error; None if no interval does (chapter 08)."""
    checks.positive("tolerance", tolerance)
    rows = summary[(summary["router"] == router) & summary["refresh_ms"].notna()].sort_values("refresh_ms")
    if rows.empty:
        raise ValueError(f"no row for router {router!r} with an interval")
    ok = rows[rows[column].abs() <= tolerance]
    if ok.empty:
        return None
    return float(ok["refresh_ms"].iloc[0]), float(ok[column].iloc[0])


def _summary_row(summary: pd.DataFrame, router: str, refresh_ms):
    """The row of :func:`stale_router_summary` for ``router`` at ``refresh_ms`` (None: the balanced router)."""
    at = summary["refresh_ms"].isna() if refresh_ms is None else np.isclose(summary["refresh_ms"], refresh_ms)
    rows = summary[(summary["router"] == router) & at]
    if len(rows) != 1:
        raise ValueError(
            f"expected one row for router {router!r} at interval {refresh_ms} ms, found {len(rows)}"
        )
    return rows.iloc[0]


def stale_router_throughput_shift(sens: pd.DataFrame, concurrency: int) -> pd.DataFrame:
    """Per router and interval of :func:`stale_router_sensitivity`: the least and greatest change of the
    throughput error against the balanced router's, over the deployments at ``concurrency`` (fractions)."""
    at = sens[sens["concurrency"] == concurrency]
    if at.empty:
        raise ValueError(f"no point at concurrency {concurrency}")
    base = at[at["router"] == "balanced"].set_index("deployment")["tok_error"]
    stale = at[at["router"] != "balanced"]
    shift = stale["tok_error"].to_numpy() - base.loc[stale["deployment"]].to_numpy()
    return (
        stale.assign(shift=shift)
        .groupby(["router", "refresh_ms"], sort=False)["shift"]
        .agg(["min", "max"])
        .reset_index()
    )


def router_throughput_by_load(
    meas: pd.DataFrame, params: ModelParams, seeds: int | None = None
) -> pd.DataFrame:
    """Throughput error of the step replay on every llm-d point, behind each router, by concurrency (chapter 08).

    One row per router (``balanced``, ``stale``, ``stale-herd`` at the default
    interval) and concurrency: ``median``, ``min`` and ``max`` of replay /
    measured - 1 over the llm-d deployments, and ``n`` (deployments).
    """
    from . import stepsim

    pts = meas[meas["family"] == "disaggregated"]
    if pts.empty:
        raise ValueError("no llm-d point")
    frames = []
    for routing in ("balanced",) + STALE_ROUTINGS:
        rep = stepsim.replay_measurements(pts, params, seeds, routing=routing)
        frames.append(
            pd.DataFrame(
                {
                    "router": routing,
                    "concurrency": pts["concurrency"],
                    "error": rep["replay_output_tok_s"] / pts["output_tok_s"] - 1,
                }
            )
        )
    both = pd.concat(frames, ignore_index=True)
    return (
        both.groupby(["router", "concurrency"], sort=False)["error"]
        .agg(["median", "min", "max", "size"])
        .rename(columns={"size": "n"})
        .reset_index()
    )
